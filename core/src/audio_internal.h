// What the whole-file audio functions (audio_io.cpp) and the block-wise ones
// (audio_stream.cpp) share, so that both give the same samples and bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include <sndfile.h>
#include <torch/torch.h>

#include "signal_cleanup.h"

namespace encodec::detail {

std::string system_error_text();

struct SndfileCloser {
  void operator()(SNDFILE* file) const { sf_close(file); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

// A file created beside `final_path` that becomes `final_path` on commit() and
// is removed otherwise, including when SIGINT/SIGTERM ends the process. Not
// mkstemp: that creates mode 0600, while an open() with 0666 gives the file the
// same permissions as a plainly written one (umask).
class TempFile {
 public:
  explicit TempFile(const std::string& final_path);
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& final_path() const { return final_path_; }

  // Closes the file (reporting delayed write errors) and renames it onto the
  // final path. On failure the destructor removes the temporary file.
  void commit();
  // Closes and removes the file now (scratch files that are never renamed).
  void discard();

  [[noreturn]] void fail(const std::string& what) const;

 private:
  std::string final_path_;
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
  RemoveOnSignal remove_on_signal_;
};

// Writes all of `data` to `fd`; throws via temp.fail on error.
void write_all(const TempFile& temp, const void* data, size_t bytes);

// torchaudio 0.13's save (sox_io backend) conversion of a float sample that is
// already limited to [-1, 1] to int16: x * 32768 rounded half up, clipped.
int16_t sox_float_to_int16(float x);

// The reference's save_audio limit: samples beyond it are clamped, or (-r) the
// whole signal is scaled so that its peak is this.
inline constexpr float kWavLimit = 0.99f;

// The gain -r applies for a signal whose largest |sample| (NaNs ignored) is
// `peak`: `limit / mx` in torch is mx.reciprocal() * limit; min(., 1) never amplifies.
inline float rescale_gain(float peak) { return std::min((1.0f / peak) * kWavLimit, 1.0f); }

// The channel conversion of the reference's convert_audio: mono target: mean of
// the channels; stereo target: mono duplicated, stereo kept; anything else is
// an AudioError. float32 [channels, frames] in, contiguous float32 out.
torch::Tensor convert_channels(const torch::Tensor& samples, int target_channels);

}  // namespace encodec::detail
