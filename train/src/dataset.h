// The training audio: every file of a folder that libsndfile reads, converted
// once to the model's rate and channels (core's read_audio / convert_audio:
// libsoxr) and kept in memory; batches of random fixed-length segments.
#pragma once

#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace encodec::train {

class AudioFolder {
 public:
  // Reads every regular file under `dir` (recursively, sorted by path) that
  // libsndfile can open; files it cannot read are skipped and counted. Throws
  // std::runtime_error when the folder is missing or holds no audio.
  AudioFolder(const std::string& dir, int sample_rate_hz, int channels);

  // [batch, channels, segment_length]: each item from a file picked with
  // probability proportional to its length, at a uniform random offset; files
  // shorter than a segment are zero-padded at the end. Draws from
  // `generator` only, so that a seed gives the same batches.
  torch::Tensor sample_batch(int64_t batch, int64_t segment_length, std::mt19937_64& generator) const;

  size_t num_files() const { return clips_.size(); }
  const torch::Tensor& clip(size_t i) const { return clips_.at(i); }  // [channels, frames]
  size_t num_skipped() const { return skipped_; }
  double total_seconds() const;

 private:
  std::vector<torch::Tensor> clips_;  // [channels, frames]
  std::vector<double> cumulative_frames_;
  int sample_rate_hz_;
  size_t skipped_ = 0;
};

// Scales each item of `batch` [B, channels, T] in place to an RMS (over its
// channels and samples) drawn uniformly in dB from [min_db, max_db], with the
// gain at most max_gain_db and at most what takes the peak to 0.99. Silent
// items stay silent. Draws one number per item from `generator`.
void scale_to_random_loudness(torch::Tensor& batch, double min_db, double max_db, double max_gain_db,
                              std::mt19937_64& generator);

}  // namespace encodec::train
