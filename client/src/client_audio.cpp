#include "encodec/client_audio.h"

#include <dlfcn.h>
#include <portaudio.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>  // before alsa/error.h, which uses va_list without including it
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "encodec/audio_stream.h"

// ALSA and JACK print pages of probing diagnostics to stderr when PortAudio
// looks for devices (worst on machines without any). Their handlers are
// replaced by silent ones, looked up at run time among the libraries PortAudio
// loaded, so that no link flag is needed and a PortAudio built without either
// is fine; the headers only give the signatures, so without them we leave it.
#if __has_include(<alsa/error.h>)
#include <alsa/error.h>
#define ENCODEC_CLIENT_HAVE_ALSA_HEADERS 1
#endif
#if __has_include(<jack/jack.h>)
#include <jack/jack.h>
#define ENCODEC_CLIENT_HAVE_JACK_HEADERS 1
#endif

namespace encodec::client {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUseFilesHint[] = "use --input FILE (or tone) and --output FILE";

// The device rings hold this much audio (at least 8 blocks): enough for any
// scheduling hiccup of the caller, bounded so that a stalled caller costs
// dropped samples, not memory or ever-growing latency.
constexpr double kDeviceRingS = 2.0;
constexpr int kDeviceRingMinBlocks = 8;
// A microphone that delivers nothing for this long is gone (unplugged, or a
// host API that stopped calling back without an error).
constexpr auto kMicrophoneStallTimeout = std::chrono::seconds(3);
// finish() on a speaker waits at most the queued audio plus this.
constexpr auto kSpeakerDrainSlack = std::chrono::seconds(2);

void check_sample_rate(int sample_rate_hz) {
  if (sample_rate_hz <= 0) {
    throw std::invalid_argument("audio sample rate must be positive, got " +
                                std::to_string(sample_rate_hz) + " Hz");
  }
}

void check_duration(double duration_s) {
  if (!std::isfinite(duration_s) || duration_s < 0) {
    throw std::invalid_argument("audio duration must be >= 0 seconds, got " +
                                std::to_string(duration_s));
  }
}

void check_frames_per_block(int frames_per_block) {
  if (frames_per_block < 0) {
    throw std::invalid_argument("frames per audio block must be >= 0, got " +
                                std::to_string(frames_per_block));
  }
}

void check_read_count(int64_t count) {
  if (count < 0) throw std::invalid_argument("audio read of a negative sample count");
}

void check_write_count(int64_t count) {
  if (count < 0) throw std::invalid_argument("audio write of a negative sample count");
}

// A number as a person writes it: "0.5", "440", not "0.500000".
std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

size_t device_ring_capacity(int sample_rate_hz, int frames_per_block) {
  const auto by_time = static_cast<size_t>(std::ceil(kDeviceRingS * sample_rate_hz));
  return std::max(by_time, static_cast<size_t>(frames_per_block) * kDeviceRingMinBlocks);
}

// --- sources computed on demand ---------------------------------------------

class FileSource final : public CaptureSource {
 public:
  FileSource(const std::string& path, int sample_rate_hz)
      : path_(path), sample_rate_hz_(sample_rate_hz), reader_(path, sample_rate_hz, 1) {}

  int sample_rate_hz() const override { return sample_rate_hz_; }
  bool is_device() const override { return false; }

  std::string describe() const override {
    return "file '" + path_ + "' (" + std::to_string(reader_.input_sample_rate_hz()) + " Hz, " +
           std::to_string(reader_.input_channels()) + " channel(s), read as " +
           std::to_string(sample_rate_hz_) + " Hz mono)";
  }

  int64_t read(float* out, int64_t count) override {
    check_read_count(count);
    int64_t done = 0;
    while (done < count) {
      if (buffered_offset_ == buffered_.size() && !refill(count - done)) break;
      const auto n =
          std::min<size_t>(buffered_.size() - buffered_offset_, static_cast<size_t>(count - done));
      std::copy_n(buffered_.data() + buffered_offset_, n, out + done);
      buffered_offset_ += n;
      done += static_cast<int64_t>(n);
    }
    return done;
  }

 private:
  // The reader's blocks are torch tensors; one block at a time is kept as
  // plain floats so that reads of any size copy from it.
  bool refill(int64_t wanted) {
    // Small reads would otherwise make a tensor per few samples.
    constexpr int64_t kMinBlock = 4096;
    const std::optional<torch::Tensor> block = reader_.read(std::max(wanted, kMinBlock));
    if (!block) return false;
    const torch::Tensor samples = block->contiguous();
    const float* data = samples.data_ptr<float>();
    buffered_.assign(data, data + samples.numel());
    buffered_offset_ = 0;
    return true;
  }

  std::string path_;
  int sample_rate_hz_;
  AudioFileReader reader_;
  std::vector<float> buffered_;
  size_t buffered_offset_ = 0;
};

class ToneSource final : public CaptureSource {
 public:
  ToneSource(int sample_rate_hz, double frequency_hz, double amplitude)
      : sample_rate_hz_(sample_rate_hz), frequency_hz_(frequency_hz), amplitude_(amplitude) {}

  int sample_rate_hz() const override { return sample_rate_hz_; }
  bool is_device() const override { return false; }
  std::string describe() const override {
    return "tone " + format_number(frequency_hz_) + " Hz, amplitude " + format_number(amplitude_);
  }

  int64_t read(float* out, int64_t count) override {
    check_read_count(count);
    for (int64_t i = 0; i < count; ++i, ++next_sample_) {
      // The phase from the sample index itself (whole cycles removed first, to
      // keep sin's argument small): no accumulated drift over a long call.
      const double cycles = std::fmod(frequency_hz_ * static_cast<double>(next_sample_),
                                      static_cast<double>(sample_rate_hz_)) /
                            sample_rate_hz_;
      out[i] = static_cast<float>(amplitude_ * std::sin(2.0 * M_PI * cycles));
    }
    return count;
  }

 private:
  int sample_rate_hz_;
  double frequency_hz_;
  double amplitude_;
  int64_t next_sample_ = 0;
};

class ClickSource final : public CaptureSource {
 public:
  ClickSource(int sample_rate_hz, double interval_s, int click_samples)
      : sample_rate_hz_(sample_rate_hz), interval_s_(interval_s), click_samples_(click_samples) {}

  int sample_rate_hz() const override { return sample_rate_hz_; }
  bool is_device() const override { return false; }
  std::string describe() const override {
    return "clicks every " + format_number(interval_s_) + " s (" + std::to_string(click_samples_) +
           " samples at " + format_number(kClickAmplitude) + ")";
  }

  int64_t read(float* out, int64_t count) override {
    check_read_count(count);
    for (int64_t i = 0; i < count; ++i, ++next_sample_) {
      // click_index_ is the first click that has not ended before this sample.
      while (next_sample_ >= click_start_ + click_samples_) {
        click_start_ = click_position(++click_index_, sample_rate_hz_, interval_s_);
      }
      out[i] = next_sample_ >= click_start_ ? kClickAmplitude : 0.0f;
    }
    return count;
  }

 private:
  int sample_rate_hz_;
  double interval_s_;
  int click_samples_;
  int64_t next_sample_ = 0;
  int64_t click_index_ = 0;
  int64_t click_start_ = 0;  // click_position(click_index_)
};

// Ends any source after a number of samples.
class LimitedSource final : public CaptureSource {
 public:
  LimitedSource(std::unique_ptr<CaptureSource> inner, double duration_s)
      : inner_(std::move(inner)),
        duration_s_(duration_s),
        remaining_(std::llround(duration_s * inner_->sample_rate_hz())) {}

  int sample_rate_hz() const override { return inner_->sample_rate_hz(); }
  bool is_device() const override { return inner_->is_device(); }
  std::string describe() const override {
    return inner_->describe() + ", first " + format_number(duration_s_) + " s";
  }
  int64_t dropped_samples() const override { return inner_->dropped_samples(); }

  int64_t read(float* out, int64_t count) override {
    check_read_count(count);
    const int64_t wanted = std::min(count, remaining_);
    if (wanted == 0) return 0;
    const int64_t got = inner_->read(out, wanted);
    remaining_ -= got;
    return got;
  }

 private:
  std::unique_ptr<CaptureSource> inner_;
  double duration_s_;
  int64_t remaining_;
};

std::unique_ptr<CaptureSource> limit_duration(std::unique_ptr<CaptureSource> source,
                                              double duration_s) {
  check_duration(duration_s);
  if (duration_s == 0) return source;
  return std::make_unique<LimitedSource>(std::move(source), duration_s);
}

// --- PortAudio ----------------------------------------------------------------

#ifdef ENCODEC_CLIENT_HAVE_ALSA_HEADERS
void ignore_alsa_error(const char* /*file*/, int /*line*/, const char* /*function*/, int /*err*/,
                       const char* /*format*/, ...) {}
#endif
#ifdef ENCODEC_CLIENT_HAVE_JACK_HEADERS
void ignore_jack_message(const char* /*message*/) {}
#endif

// Process-wide and permanent: the handlers stay silent after Pa_Terminate
// because opening streams prints the same noise, and nothing else here uses
// ALSA or JACK. PortAudio reports the failures that matter through its own
// error codes, which our messages carry.
void silence_audio_backend_diagnostics() {
#ifdef ENCODEC_CLIENT_HAVE_ALSA_HEADERS
  if (auto set_handler = reinterpret_cast<decltype(&snd_lib_error_set_handler)>(
          dlsym(RTLD_DEFAULT, "snd_lib_error_set_handler"))) {
    set_handler(ignore_alsa_error);
  }
#endif
#ifdef ENCODEC_CLIENT_HAVE_JACK_HEADERS
  if (auto set_error = reinterpret_cast<decltype(&jack_set_error_function)>(
          dlsym(RTLD_DEFAULT, "jack_set_error_function"))) {
    set_error(ignore_jack_message);
  }
  if (auto set_info = reinterpret_cast<decltype(&jack_set_info_function)>(
          dlsym(RTLD_DEFAULT, "jack_set_info_function"))) {
    set_info(ignore_jack_message);
  }
#endif
}

std::string portaudio_error_text(PaError error) {
  std::string text = Pa_GetErrorText(error);
  if (error == paUnanticipatedHostError) {
    const PaHostErrorInfo* host = Pa_GetLastHostErrorInfo();
    if (host != nullptr && host->errorText != nullptr && host->errorText[0] != '\0') {
      text += std::string(": ") + host->errorText;
    }
  }
  std::replace(text.begin(), text.end(), '\n', ' ');  // the messages are one line
  return text;
}

// Pa_Initialize for as long as any device stream lives (PortAudio wants one
// initialization around all its use; this counts the users).
class PortAudioSession {
 public:
  PortAudioSession() {
    const std::lock_guard<std::mutex> lock(mutex());
    if (users() == 0) {
      silence_audio_backend_diagnostics();
      const PaError error = Pa_Initialize();
      if (error != paNoError) {
        throw AudioDeviceError("cannot initialize PortAudio (" + portaudio_error_text(error) +
                               "): " + kUseFilesHint);
      }
    }
    ++users();
  }
  ~PortAudioSession() {
    const std::lock_guard<std::mutex> lock(mutex());
    if (--users() == 0) Pa_Terminate();
  }
  PortAudioSession(const PortAudioSession&) = delete;
  PortAudioSession& operator=(const PortAudioSession&) = delete;

 private:
  static std::mutex& mutex() {
    static std::mutex instance;
    return instance;
  }
  static int& users() {
    static int count = 0;
    return count;
  }
};

enum class Direction { kInput, kOutput };

struct OpenedStream {
  PaStream* stream = nullptr;
  std::string device_name;
};

// Opens and starts a mono float32 stream on the default device of `direction`.
OpenedStream open_default_stream(Direction direction, int sample_rate_hz, int frames_per_block,
                                 PaStreamCallback* callback, void* user_data) {
  const bool input = direction == Direction::kInput;
  const char* what = input ? "input" : "output";
  const PaDeviceIndex device = input ? Pa_GetDefaultInputDevice() : Pa_GetDefaultOutputDevice();
  if (device == paNoDevice) {
    throw AudioDeviceError(std::string("no audio ") + what +
                           " device (PortAudio found none): " + kUseFilesHint);
  }
  const PaDeviceInfo* info = Pa_GetDeviceInfo(device);
  OpenedStream opened;
  opened.device_name = info != nullptr && info->name != nullptr ? info->name : "?";
  PaStreamParameters parameters{};
  parameters.device = device;
  parameters.channelCount = 1;
  parameters.sampleFormat = paFloat32;
  // Low latency matters more than robustness here: the rings absorb jitter.
  parameters.suggestedLatency =
      info == nullptr ? 0.0
                      : (input ? info->defaultLowInputLatency : info->defaultLowOutputLatency);
  const auto fail = [&](const char* action, PaError error) {
    return AudioDeviceError("cannot " + std::string(action) + " the audio " + what + " device '" +
                            opened.device_name + "' at " + std::to_string(sample_rate_hz) +
                            " Hz mono (PortAudio: " + portaudio_error_text(error) +
                            "): " + kUseFilesHint);
  };
  const auto frames = frames_per_block == 0 ? paFramesPerBufferUnspecified
                                            : static_cast<unsigned long>(frames_per_block);
  PaError error =
      Pa_OpenStream(&opened.stream, input ? &parameters : nullptr, input ? nullptr : &parameters,
                    sample_rate_hz, frames, paNoFlag, callback, user_data);
  if (error != paNoError) throw fail("open", error);
  error = Pa_StartStream(opened.stream);
  if (error != paNoError) {
    Pa_CloseStream(opened.stream);
    throw fail("start", error);
  }
  return opened;
}

class MicrophoneSource final : public CaptureSource {
 public:
  MicrophoneSource(int sample_rate_hz, int frames_per_block)
      : sample_rate_hz_(sample_rate_hz),
        ring_(device_ring_capacity(sample_rate_hz, frames_per_block)) {
    OpenedStream opened = open_default_stream(Direction::kInput, sample_rate_hz, frames_per_block,
                                              &MicrophoneSource::on_audio, this);
    stream_ = opened.stream;
    device_name_ = std::move(opened.device_name);
  }
  ~MicrophoneSource() override {
    Pa_AbortStream(stream_);  // nothing captured is wanted any more
    Pa_CloseStream(stream_);
  }
  MicrophoneSource(const MicrophoneSource&) = delete;
  MicrophoneSource& operator=(const MicrophoneSource&) = delete;

  int sample_rate_hz() const override { return sample_rate_hz_; }
  bool is_device() const override { return true; }
  std::string describe() const override {
    return "microphone '" + device_name_ + "' at " + std::to_string(sample_rate_hz_) + " Hz";
  }
  int64_t dropped_samples() const override { return static_cast<int64_t>(ring_.dropped()); }

  int64_t read(float* out, int64_t count) override {
    check_read_count(count);
    int64_t done = 0;
    Clock::time_point last_progress = Clock::now();
    while (done < count) {
      const size_t got = ring_.pop(out + done, static_cast<size_t>(count - done));
      done += static_cast<int64_t>(got);
      if (done == count) break;
      const Clock::time_point now = Clock::now();
      if (got > 0) {
        last_progress = now;
      } else if (now - last_progress > kMicrophoneStallTimeout) {
        throw AudioDeviceError("the audio input device '" + device_name_ +
                               "' stopped delivering samples: " + kUseFilesHint);
      }
      if (Pa_IsStreamActive(stream_) != 1) {
        throw AudioDeviceError("the audio input device '" + device_name_ +
                               "' stopped: " + kUseFilesHint);
      }
      // Short sleeps rather than a condition variable: notifying one would
      // take a lock in the real-time callback. Half the missing audio's time,
      // so the wake-up lands soon after the samples do.
      const double missing_s = static_cast<double>(count - done) / sample_rate_hz_;
      std::this_thread::sleep_for(
          std::chrono::duration<double>(std::clamp(missing_s / 2, 0.0002, 0.005)));
    }
    return done;
  }

 private:
  static int on_audio(const void* input, void* /*output*/, unsigned long frames,
                      const PaStreamCallbackTimeInfo* /*time*/, PaStreamCallbackFlags /*flags*/,
                      void* user_data) {
    auto* self = static_cast<MicrophoneSource*>(user_data);
    if (input != nullptr) self->ring_.push(static_cast<const float*>(input), frames);
    return paContinue;
  }

  // Declared first: PortAudio is initialized before the stream opens and
  // terminated after the destructor closed it.
  PortAudioSession session_;
  int sample_rate_hz_;
  detail::SampleRing ring_;
  PaStream* stream_ = nullptr;
  std::string device_name_;
};

class SpeakerSink final : public PlaybackSink {
 public:
  SpeakerSink(int sample_rate_hz, int frames_per_block)
      : sample_rate_hz_(sample_rate_hz),
        ring_(device_ring_capacity(sample_rate_hz, frames_per_block)) {
    OpenedStream opened = open_default_stream(Direction::kOutput, sample_rate_hz, frames_per_block,
                                              &SpeakerSink::on_audio, this);
    stream_ = opened.stream;
    device_name_ = std::move(opened.device_name);
  }
  ~SpeakerSink() override {
    if (!finished_) Pa_AbortStream(stream_);  // not finished: an error; stop at once
    Pa_CloseStream(stream_);
  }
  SpeakerSink(const SpeakerSink&) = delete;
  SpeakerSink& operator=(const SpeakerSink&) = delete;

  bool is_device() const override { return true; }
  std::string describe() const override {
    return "speaker '" + device_name_ + "' at " + std::to_string(sample_rate_hz_) + " Hz";
  }
  int64_t queued_samples() const override { return static_cast<int64_t>(ring_.size()); }
  int64_t underrun_samples() const override { return underrun_samples_.load(); }
  int64_t dropped_samples() const override { return static_cast<int64_t>(ring_.dropped()); }

  void write(const float* samples, int64_t count) override {
    check_write_count(count);
    if (finished_) throw std::logic_error("speaker write after finish()");
    if (Pa_IsStreamActive(stream_) != 1) {
      throw AudioDeviceError("the audio output device '" + device_name_ +
                             "' stopped: " + kUseFilesHint);
    }
    ring_.push(samples, static_cast<size_t>(count));
    playing_.store(true, std::memory_order_relaxed);
  }

  void finish() override {
    if (finished_) return;
    draining_.store(true, std::memory_order_relaxed);
    const auto queued =
        std::chrono::duration<double>(static_cast<double>(ring_.size()) / sample_rate_hz_);
    const Clock::time_point deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(queued) + kSpeakerDrainSlack;
    while (ring_.size() > 0 && Pa_IsStreamActive(stream_) == 1 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // Pa_StopStream, unlike Pa_AbortStream, plays the buffers the device holds.
    Pa_StopStream(stream_);
    finished_ = true;
  }

 private:
  static int on_audio(const void* /*input*/, void* output, unsigned long frames,
                      const PaStreamCallbackTimeInfo* /*time*/, PaStreamCallbackFlags /*flags*/,
                      void* user_data) {
    auto* self = static_cast<SpeakerSink*>(user_data);
    auto* out = static_cast<float*>(output);
    const size_t got = self->ring_.pop(out, frames);
    std::fill(out + got, out + frames, 0.0f);
    // Silence before the first write or while draining is expected, not an underrun.
    if (got < frames && self->playing_.load(std::memory_order_relaxed) &&
        !self->draining_.load(std::memory_order_relaxed)) {
      self->underrun_samples_.fetch_add(static_cast<int64_t>(frames - got),
                                        std::memory_order_relaxed);
    }
    return paContinue;
  }

  PortAudioSession session_;  // first: outlives the stream
  int sample_rate_hz_;
  detail::SampleRing ring_;
  PaStream* stream_ = nullptr;
  std::string device_name_;
  std::atomic<bool> playing_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> underrun_samples_{0};
  bool finished_ = false;
};

// --- sinks without a device -------------------------------------------------

class FileSink final : public PlaybackSink {
 public:
  FileSink(const std::string& path, int sample_rate_hz)
      : path_(path), sample_rate_hz_(sample_rate_hz), writer_(path, sample_rate_hz, 1, {}) {}

  bool is_device() const override { return false; }
  std::string describe() const override {
    return "WAV file '" + path_ + "' (" + std::to_string(sample_rate_hz_) + " Hz, 16-bit)";
  }

  void write(const float* samples, int64_t count) override {
    check_write_count(count);
    if (finished_) throw std::logic_error("write to '" + path_ + "' after finish()");
    if (count == 0) return;
    // A view of the caller's samples: the writer only reads them.
    writer_.write(torch::from_blob(const_cast<float*>(samples), {1, count}, torch::kFloat32));
  }

  void finish() override {
    if (finished_) return;
    writer_.commit();
    finished_ = true;
  }

 private:
  std::string path_;
  int sample_rate_hz_;
  WavFileWriter writer_;
  bool finished_ = false;
};

class NullSink final : public PlaybackSink {
 public:
  bool is_device() const override { return false; }
  std::string describe() const override { return "nowhere (discarded)"; }
  void write(const float* /*samples*/, int64_t count) override {
    check_write_count(count);
    if (finished_) throw std::logic_error("audio write after finish()");
  }
  void finish() override { finished_ = true; }

 private:
  bool finished_ = false;
};

}  // namespace

CaptureSource::~CaptureSource() = default;
PlaybackSink::~PlaybackSink() = default;

// --- SampleRing ---------------------------------------------------------------

namespace detail {

static_assert(std::atomic<float>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free,
              "the device callbacks must not take locks");

namespace {
size_t round_up_to_power_of_two(size_t value) {
  size_t power = 1;
  while (power < value) power <<= 1;
  return power;
}
}  // namespace

SampleRing::SampleRing(size_t min_capacity)
    : slots_(round_up_to_power_of_two(std::max<size_t>(min_capacity, 1))),
      mask_(slots_.size() - 1) {}

void SampleRing::push(const float* samples, size_t count) {
  const size_t capacity = slots_.size();
  if (count > capacity) {  // only the newest capacity() can be kept anyway
    dropped_.fetch_add(count - capacity, std::memory_order_relaxed);
    samples += count - capacity;
    count = capacity;
  }
  const uint64_t head = head_.load(std::memory_order_relaxed);  // only we move it
  // Make room first: claiming the oldest slots by moving tail_ past them tells
  // a consumer copying them at this moment that its copy is void.
  uint64_t tail = tail_.load(std::memory_order_acquire);
  while (head + count - tail > capacity) {
    const uint64_t new_tail = head + count - capacity;
    if (tail_.compare_exchange_weak(tail, new_tail, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      dropped_.fetch_add(new_tail - tail, std::memory_order_relaxed);
      break;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    slots_[(head + i) & mask_].store(samples[i], std::memory_order_relaxed);
  }
  head_.store(head + count, std::memory_order_release);
}

size_t SampleRing::pop(float* out, size_t count) {
  uint64_t tail = tail_.load(std::memory_order_acquire);
  for (;;) {
    // Loaded after tail_, so head >= tail (the producer never moves tail_
    // beyond the head it is about to publish).
    const uint64_t head = head_.load(std::memory_order_acquire);
    const size_t available = static_cast<size_t>(std::min<uint64_t>(head - tail, slots_.size()));
    const size_t n = std::min(count, available);
    if (n == 0) return 0;
    for (size_t i = 0; i < n; ++i) {
      out[i] = slots_[(tail + i) & mask_].load(std::memory_order_relaxed);
    }
    // Fails only when the producer dropped samples meanwhile: what we copied
    // may have been overwritten, so copy again from the new tail.
    if (tail_.compare_exchange_strong(tail, tail + n, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      return n;
    }
  }
}

size_t SampleRing::size() const {
  const uint64_t tail = tail_.load(std::memory_order_acquire);
  const uint64_t head = head_.load(std::memory_order_acquire);
  return static_cast<size_t>(std::min<uint64_t>(head - tail, slots_.size()));
}

}  // namespace detail

// --- clicks -------------------------------------------------------------------

int64_t click_position(int64_t index, int sample_rate_hz, double interval_s) {
  return std::llround(static_cast<double>(index) * interval_s * sample_rate_hz);
}

ClickDetector::ClickDetector(float threshold, int sample_rate_hz)
    : threshold_(threshold), quiet_samples_(std::llround(kClickQuietS * sample_rate_hz)) {
  check_sample_rate(sample_rate_hz);
  if (!(threshold >= 0)) throw std::invalid_argument("click threshold must be >= 0");
}

std::vector<int64_t> ClickDetector::feed(const float* audio, int64_t count) {
  check_read_count(count);
  std::vector<int64_t> onsets;
  for (int64_t i = 0; i < count; ++i, ++position_) {
    if (!(std::abs(audio[i]) > threshold_)) continue;  // NaN counts as quiet
    if (position_ - last_loud_ - 1 >= quiet_samples_) onsets.push_back(position_);
    last_loud_ = position_;
  }
  return onsets;
}

std::vector<int64_t> find_clicks(const float* audio, int64_t count, float threshold,
                                 int sample_rate_hz) {
  return ClickDetector(threshold, sample_rate_hz).feed(audio, count);
}

// --- factories ----------------------------------------------------------------

std::unique_ptr<CaptureSource> open_file_source(const std::string& path, int sample_rate_hz) {
  check_sample_rate(sample_rate_hz);
  return std::make_unique<FileSource>(path, sample_rate_hz);
}

std::unique_ptr<CaptureSource> open_tone_source(int sample_rate_hz, double frequency_hz,
                                                double amplitude, double duration_s) {
  check_sample_rate(sample_rate_hz);
  if (!std::isfinite(frequency_hz) || frequency_hz < 0) {
    throw std::invalid_argument("tone frequency must be >= 0 Hz, got " +
                                format_number(frequency_hz));
  }
  if (!(amplitude >= 0 && amplitude <= 1)) {
    throw std::invalid_argument("tone amplitude must be in [0, 1], got " +
                                format_number(amplitude));
  }
  return limit_duration(std::make_unique<ToneSource>(sample_rate_hz, frequency_hz, amplitude),
                        duration_s);
}

std::unique_ptr<CaptureSource> open_click_source(int sample_rate_hz, double interval_s,
                                                 double duration_s, int click_samples) {
  check_sample_rate(sample_rate_hz);
  if (click_samples < 1) {
    throw std::invalid_argument("a click must last at least one sample, got " +
                                std::to_string(click_samples));
  }
  // Closer clicks would not overlap, but a receiver could not tell them apart.
  const double min_interval_samples =
      click_samples + std::llround(kClickQuietS * sample_rate_hz) + 1.0;
  if (!std::isfinite(interval_s) || interval_s * sample_rate_hz < min_interval_samples) {
    throw std::invalid_argument("clicks of " + std::to_string(click_samples) +
                                " samples need an interval of at least " +
                                format_number(min_interval_samples / sample_rate_hz) + " s, got " +
                                format_number(interval_s));
  }
  return limit_duration(std::make_unique<ClickSource>(sample_rate_hz, interval_s, click_samples),
                        duration_s);
}

std::unique_ptr<CaptureSource> open_microphone_source(int sample_rate_hz, int frames_per_block) {
  check_sample_rate(sample_rate_hz);
  check_frames_per_block(frames_per_block);
  return std::make_unique<MicrophoneSource>(sample_rate_hz, frames_per_block);
}

std::unique_ptr<CaptureSource> open_capture(const std::string& spec, int sample_rate_hz,
                                            double duration_s, int frames_per_block) {
  check_duration(duration_s);
  if (spec.empty()) throw std::invalid_argument("no audio input given");
  if (spec == "tone") return open_tone_source(sample_rate_hz, 440, 0.3, duration_s);
  if (spec == "clicks") return open_click_source(sample_rate_hz, 0.5, duration_s, 24);
  if (spec == "mic") {
    return limit_duration(open_microphone_source(sample_rate_hz, frames_per_block), duration_s);
  }
  return limit_duration(open_file_source(spec, sample_rate_hz), duration_s);
}

std::unique_ptr<PlaybackSink> open_file_sink(const std::string& path, int sample_rate_hz) {
  check_sample_rate(sample_rate_hz);
  return std::make_unique<FileSink>(path, sample_rate_hz);
}

std::unique_ptr<PlaybackSink> open_speaker_sink(int sample_rate_hz, int frames_per_block) {
  check_sample_rate(sample_rate_hz);
  check_frames_per_block(frames_per_block);
  return std::make_unique<SpeakerSink>(sample_rate_hz, frames_per_block);
}

std::unique_ptr<PlaybackSink> open_playback(const std::string& spec, int sample_rate_hz,
                                            int frames_per_block) {
  if (spec.empty()) throw std::invalid_argument("no audio output given");
  if (spec == "speaker") return open_speaker_sink(sample_rate_hz, frames_per_block);
  if (spec == "null" || spec == "-") {
    check_sample_rate(sample_rate_hz);
    return std::make_unique<NullSink>();
  }
  return open_file_sink(spec, sample_rate_hz);
}

}  // namespace encodec::client
