#include "dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "encodec/audio_io.h"

namespace encodec::train {

AudioFolder::AudioFolder(const std::string& dir, int sample_rate_hz, int channels) : sample_rate_hz_(sample_rate_hz) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(dir, error)) throw std::runtime_error("data folder " + dir + " does not exist or is not a folder");
  std::vector<fs::path> paths;
  for (const auto& entry : fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink)) {
    if (entry.is_regular_file()) paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  double frames = 0;
  for (const fs::path& path : paths) {
    try {
      Audio audio = read_audio(path.string());
      torch::Tensor samples = convert_audio(audio.samples, audio.sample_rate_hz, sample_rate_hz, channels);
      if (samples.size(1) == 0) {
        ++skipped_;
        continue;
      }
      frames += static_cast<double>(samples.size(1));
      clips_.push_back(samples.contiguous());
      cumulative_frames_.push_back(frames);
    } catch (const AudioError&) {
      ++skipped_;  // not audio (a README, a listing): skipped, counted
    }
  }
  if (clips_.empty()) {
    throw std::runtime_error("data folder " + dir + " holds no audio file libsndfile can read (" +
                             std::to_string(skipped_) + " files skipped)");
  }
}

double AudioFolder::total_seconds() const { return cumulative_frames_.back() / sample_rate_hz_; }

torch::Tensor AudioFolder::sample_batch(int64_t batch, int64_t segment_length, std::mt19937_64& generator) const {
  const int64_t channels = clips_.front().size(0);
  torch::Tensor out = torch::zeros({batch, channels, segment_length});
  std::uniform_real_distribution<double> position(0.0, cumulative_frames_.back());
  for (int64_t b = 0; b < batch; ++b) {
    const double at = position(generator);
    const size_t file = std::min<size_t>(
        std::upper_bound(cumulative_frames_.begin(), cumulative_frames_.end(), at) - cumulative_frames_.begin(),
        clips_.size() - 1);
    const torch::Tensor& clip = clips_[file];
    const int64_t length = clip.size(1);
    const int64_t span = std::max<int64_t>(0, length - segment_length);
    const int64_t offset = std::uniform_int_distribution<int64_t>(0, span)(generator);
    const int64_t take = std::min(segment_length, length - offset);
    out[b].narrow(1, 0, take).copy_(clip.narrow(1, offset, take));
  }
  return out;
}

void scale_to_random_loudness(torch::Tensor& batch, double min_db, double max_db, double max_gain_db,
                              std::mt19937_64& generator) {
  std::uniform_real_distribution<double> target_db(min_db, max_db);
  for (int64_t b = 0; b < batch.size(0); ++b) {
    torch::Tensor item = batch[b];
    const double target = target_db(generator);  // drawn for every item: the stream does not depend on the audio
    const double rms = item.to(torch::kFloat64).pow(2).mean().sqrt().item<double>();
    const double peak = item.abs().max().item<double>();
    if (rms <= 0 || peak <= 0) continue;
    const double gain = std::min({std::pow(10.0, (target - 20 * std::log10(rms)) / 20), std::pow(10.0, max_gain_db / 20),
                                  0.99 / peak});
    item.mul_(gain);
  }
}

}  // namespace encodec::train
