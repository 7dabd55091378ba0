// Audio files in and out: anything libsndfile reads, resampled with libsoxr
// (high quality) and converted to the model's channel count; 16-bit PCM WAV out,
// written atomically.
//
// Thread safety: no shared state.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace encodec {

// Unreadable or unsupported audio, impossible conversions, failed writes. The
// message names the file and the reason.
class AudioError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Audio {
  torch::Tensor samples;   // float32 [channels, frames], PCM scaled to [-1, 1)
  int sample_rate_hz = 0;
};

// Reads a whole file (wav, flac, ogg/vorbis, opus where libsndfile supports
// it). Integer PCM becomes int / 2^(bits-1), as torchaudio and the reference do.
Audio read_audio(const std::string& path);

// Number of samples the reference's resampler (torchaudio.transforms.Resample)
// produces: ceil(length * to / from) with the rates reduced by their gcd.
int64_t resampled_length(int64_t length, int from_rate_hz, int to_rate_hz);

// Converts channels as the reference's `convert_audio` does (mono target: mean
// of the channels; stereo target: mono duplicated, stereo kept; anything else is
// an error), then resamples to `target_rate_hz` with libsoxr (very high quality)
// so that the result has exactly `resampled_length` samples.
torch::Tensor convert_audio(const torch::Tensor& samples, int sample_rate_hz,
                            int target_rate_hz, int target_channels);

struct WavWriteOptions {
  // Scale the whole signal so that its peak is 0.99 (never amplify); otherwise
  // clamp to [-0.99, 0.99], as the reference's save_audio does.
  bool rescale = false;
};

// Writes [channels, frames] float samples as 16-bit PCM WAV. The file appears
// under `path` only when complete (written to a temporary file beside it, then
// renamed); on failure nothing is left behind.
void write_wav_atomic(const std::string& path, const torch::Tensor& samples,
                      int sample_rate_hz, const WavWriteOptions& options = {});

// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
void write_file_atomic(const std::string& path, const std::string& bytes);
// Same, for output produced as a stream: `write` writes everything to the
// stream it is given; the file appears only if it returns and all writes succeeded.
void write_stream_atomic(const std::string& path, const std::function<void(std::ostream&)>& write);

}  // namespace encodec
