// Audio files of any length, block by block: a reader that converts an input
// file to a model's rate and channels as it goes (libsndfile blocks, libsoxr
// streaming resampler), and 16-bit WAV writers that take blocks. They give the
// same samples and bytes as the whole-file functions of audio_io.h.
//
// Usage:
//   encodec::AudioFileReader reader("talk.flac", 24000, 1);
//   const int64_t total = reader.length();            // known before reading
//   while (auto block = reader.read()) use(*block);   // [1, n] float32
//
//   encodec::WavFileWriter writer("out.wav", 24000, 1, {});
//   writer.write(block);                              // [1, n]
//   writer.commit();                                  // out.wav appears now, complete
//
// Thread safety: no shared state; each object belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "encodec/audio_io.h"

namespace encodec {

class AudioFileReader {
 public:
  // Opens `path` (anything libsndfile reads) for conversion to `target_channels`
  // at `target_rate_hz`, as convert_audio does. Throws AudioError naming the file.
  AudioFileReader(const std::string& path, int target_rate_hz, int target_channels);
  // The same over a file's bytes in memory (an upload); `name` stands for the
  // file in error messages. The same samples as from a file with these bytes.
  AudioFileReader(std::shared_ptr<const std::string> bytes, const std::string& name,
                  int target_rate_hz, int target_channels);
  ~AudioFileReader();
  AudioFileReader(AudioFileReader&&) noexcept;
  AudioFileReader& operator=(AudioFileReader&&) noexcept;

  int input_sample_rate_hz() const;
  int input_channels() const;
  int64_t input_frames() const;  // as the file declares it
  // Frames the conversion yields: resampled_length(input_frames(), ...), exactly
  // what the reference's resampler makes of the whole file.
  int64_t length() const;
  int64_t frames_read() const;  // converted frames returned so far

  // The next converted frames, float32 [target_channels, n] with 0 < n <=
  // max_frames, or nullopt after the last. Throws AudioError on read errors and
  // when the file holds a different number of frames than it declared.
  std::optional<torch::Tensor> read(int64_t max_frames = 65536);

 private:
  void start_conversion(int target_rate_hz, int target_channels);

  struct State;
  std::unique_ptr<State> state_;
};

// Somewhere to put decoded audio block by block ([channels, n] float32).
class AudioSink {
 public:
  virtual ~AudioSink() = default;
  virtual void write(const torch::Tensor& samples) = 0;
};

struct WavFileOptions {
  // As WavWriteOptions::rescale: scale the whole signal so its peak is 0.99
  // (never amplify). The writer then first stores float samples in a scratch
  // file beside `path` (4 bytes per sample) and converts them at commit().
  bool rescale = false;
};

// 16-bit PCM WAV written as blocks arrive; the file appears under `path` only at
// commit(), complete. Without commit() (an error, a signal) nothing is left.
// The bytes equal write_wav_atomic's for the concatenated blocks.
class WavFileWriter : public AudioSink {
 public:
  WavFileWriter(const std::string& path, int sample_rate_hz, int channels,
                const WavFileOptions& options);
  ~WavFileWriter() override;
  WavFileWriter(const WavFileWriter&) = delete;
  WavFileWriter& operator=(const WavFileWriter&) = delete;

  void write(const torch::Tensor& samples) override;
  void commit();

  int64_t frames_written() const;
  // Largest |sample| written so far (NaNs ignored): without rescale, above 0.99
  // means samples were clamped.
  float peak() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace encodec
