// The client's audio ends: where a call's audio comes from (a file, a tone, a
// click train for latency measurement, the microphone) and where it goes (a
// 16-bit WAV file, nowhere, the speaker). All audio is mono float in [-1, 1] at
// the sample rate the source or sink was opened with (24000 Hz for the model).
//
// Usage:
//   auto source = encodec::client::open_capture("talk.flac", 24000, /*duration_s=*/0);
//   auto sink = encodec::client::open_playback("speaker", 24000);
//   std::vector<float> block(480);
//   while (const int64_t n = source->read(block.data(), 480)) sink->write(block.data(), n);
//   sink->finish();
//
// Files, tones and clicks are produced on demand (the caller paces them by a
// clock); the microphone and speaker run on PortAudio's callback thread and
// meet the caller through lock-free ring buffers, so a slow caller loses the
// oldest samples (counted) rather than stalling the device. Machines without an
// audio device get an AudioDeviceError telling the user to use files instead.
//
// Thread safety: each source and sink belongs to one thread (the device
// callbacks are internal). SampleRing is single-producer/single-consumer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace encodec::client {

// No usable audio device (none found, or opening it failed). The message is
// one line and suggests files in its place.
class AudioDeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class CaptureSource {
 public:
  virtual ~CaptureSource();
  virtual int sample_rate_hz() const = 0;
  // Reads up to `count` samples into `out`. Files, tone and clicks never block
  // (the caller paces them by a clock); the microphone blocks until `count`
  // samples were captured (it is its own clock). Returns the number read; 0 is
  // the end (files, and sources limited to a duration) when count > 0.
  // Throws std::invalid_argument for count < 0, AudioDeviceError when the
  // microphone stops delivering.
  virtual int64_t read(float* out, int64_t count) = 0;
  virtual bool is_device() const = 0;
  // For logs: what this is, e.g. "tone 440 Hz, amplitude 0.3".
  virtual std::string describe() const = 0;
  // Samples lost because the caller read too slowly (the microphone's ring
  // buffer overflowed and dropped its oldest samples). 0 for everything else.
  virtual int64_t dropped_samples() const { return 0; }
};

// A sound file converted to `sample_rate_hz` mono (resampled, channels mixed)
// through encodec::AudioFileReader. Throws encodec::AudioError naming the file.
std::unique_ptr<CaptureSource> open_file_source(const std::string& path, int sample_rate_hz);

// amplitude * sin(2 pi frequency_hz n / sample_rate_hz), n counted from 0;
// duration_s = 0 is endless.
std::unique_ptr<CaptureSource> open_tone_source(int sample_rate_hz, double frequency_hz = 440,
                                                double amplitude = 0.3, double duration_s = 0);

// A click's onset counts only after this much quiet: a click that rings or is
// smeared by the codec is one click, not many.
inline constexpr double kClickQuietS = 0.1;

// Clicks: kClickAmplitude for `click_samples` samples starting at
// click_position(k, ...) for k = 0, 1, ...; silence between. duration_s = 0 is
// endless. A receiver finds them again with find_clicks / ClickDetector, so
// the interval must leave more than kClickQuietS of silence between clicks
// (std::invalid_argument otherwise).
inline constexpr float kClickAmplitude = 0.8f;
std::unique_ptr<CaptureSource> open_click_source(int sample_rate_hz, double interval_s = 0.5,
                                                 double duration_s = 0, int click_samples = 24);

// The first sample of click `index` (rounded to the nearest sample, so a
// fractional interval does not drift).
int64_t click_position(int64_t index, int sample_rate_hz, double interval_s);

// Finds click onsets in a stream fed block by block: the index (counted from
// the first sample fed) of each sample whose |value| exceeds `threshold` after
// at least kClickQuietS of samples that do not (the time before the first
// sample counts as quiet).
class ClickDetector {
 public:
  ClickDetector(float threshold, int sample_rate_hz);
  // The onsets within this block, as absolute sample indexes.
  std::vector<int64_t> feed(const float* audio, int64_t count);

 private:
  float threshold_;
  int64_t quiet_samples_;
  int64_t position_ = 0;               // absolute index of the next sample fed
  int64_t last_loud_ = INT64_MIN / 2;  // index of the latest loud sample
};

// ClickDetector over one buffer. The default rate is the model's.
std::vector<int64_t> find_clicks(const float* audio, int64_t count, float threshold,
                                 int sample_rate_hz = 24000);

// The default input device, mono float32 at `sample_rate_hz`, in blocks of
// `frames_per_block` (0: PortAudio chooses). Throws AudioDeviceError when there
// is none or it does not open (e.g. it cannot record at that rate).
std::unique_ptr<CaptureSource> open_microphone_source(int sample_rate_hz, int frames_per_block);

// "mic", "tone" (440 Hz), "clicks" (every 0.5 s) or a file path (a file named
// like a keyword: give it as ./mic). duration_s > 0 limits any source to that
// many seconds; 0 keeps its own length (tone, clicks and mic: endless).
std::unique_ptr<CaptureSource> open_capture(const std::string& spec, int sample_rate_hz,
                                            double duration_s, int frames_per_block = 0);

class PlaybackSink {
 public:
  virtual ~PlaybackSink();
  // Never blocks for long: a speaker queues into a ring buffer played by the
  // PortAudio callback (an underrun plays silence and counts; a queue the
  // device cannot keep up with drops its oldest samples and counts).
  // Throws AudioDeviceError when the speaker stopped, std::logic_error after
  // finish().
  virtual void write(const float* samples, int64_t count) = 0;
  // Files: commit (the file appears now, complete). Speaker: play what is
  // queued, then stop. Idempotent.
  virtual void finish() = 0;
  virtual bool is_device() const = 0;
  // For logs: what this is, e.g. "WAV file 'out.wav' (24000 Hz, 16-bit)".
  virtual std::string describe() const { return "audio output"; }
  // Speaker only: samples queued and not played yet (latency the sink adds);
  // silence played because nothing was queued (counted from the first write);
  // queued samples dropped because the queue was full.
  virtual int64_t queued_samples() const { return 0; }
  virtual int64_t underrun_samples() const { return 0; }
  virtual int64_t dropped_samples() const { return 0; }
};

// 16-bit PCM WAV through encodec::WavFileWriter (samples beyond 0.99 are
// clamped). The file appears only at finish(); destroyed without finish() (an
// error, an interrupted call) nothing is left behind.
std::unique_ptr<PlaybackSink> open_file_sink(const std::string& path, int sample_rate_hz);

// The default output device, mono float32, blocks of `frames_per_block` (0:
// PortAudio chooses). Throws AudioDeviceError when there is none or it does not
// open.
std::unique_ptr<PlaybackSink> open_speaker_sink(int sample_rate_hz, int frames_per_block);

// "speaker", "null" or "-" (discard everything: for benchmarks), or a file path.
std::unique_ptr<PlaybackSink> open_playback(const std::string& spec, int sample_rate_hz,
                                            int frames_per_block = 0);

namespace detail {

// The lock-free single-producer/single-consumer sample queue between a caller
// and a device callback, allocated once (no allocation, lock or system call in
// push or pop, so a real-time callback may use either end). When a push does
// not fit, the oldest queued samples are dropped (counted): for live audio the
// newest matter. Exposed for tests.
class SampleRing {
 public:
  // Holds at least `min_capacity` samples (rounded up to a power of two).
  explicit SampleRing(size_t min_capacity);
  SampleRing(const SampleRing&) = delete;
  SampleRing& operator=(const SampleRing&) = delete;

  // Producer side. Appends all `count` samples (of more than capacity(), the
  // last capacity() are kept), dropping the oldest queued ones to make room.
  void push(const float* samples, size_t count);
  // Consumer side. Moves up to `count` of the oldest samples to `out`; returns
  // how many.
  size_t pop(float* out, size_t count);

  size_t capacity() const { return slots_.size(); }
  size_t size() const;  // queued now (either side; a snapshot)
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  // Atomic slots: on overflow the producer may overwrite a slot the consumer
  // is copying; the consumer notices (its claim on `tail_` fails) and copies
  // again, and relaxed atomics keep that race defined.
  std::vector<std::atomic<float>> slots_;
  size_t mask_;
  std::atomic<uint64_t> head_{0};  // next position written; only the producer moves it
  std::atomic<uint64_t> tail_{0};  // oldest unread; the consumer moves it, the producer on overflow
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace detail

}  // namespace encodec::client
