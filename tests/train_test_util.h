// What the training tests share: a tiny configuration that trains in seconds
// and deterministic test audio.
#pragma once

#include <cmath>

#include <torch/torch.h>

#include "encodec/train.h"

namespace encodec::train {

// The official 24 kHz layout (so the core's loader and `encodec --checkpoint`
// read its checkpoints), very narrow: 2 filters, dimension 8, one LSTM layer,
// 4 codebooks of 16 entries (0.6 / 1.2 kbps), a two-scale discriminator of 4
// filters, 0.2 s segments, one thread.
inline TrainConfig tiny_config() {
  TrainConfig config;
  config.model.n_filters = 2;
  config.model.dimension = 8;
  config.model.lstm_layers = 1;
  config.model.n_q = 4;
  config.model.bins = 16;
  config.model.target_bandwidths = {0.6, 1.2};
  config.codebooks.kmeans_iters = 5;
  config.discriminator.filters = 4;
  config.discriminator.n_ffts = config.discriminator.win_lengths = {256, 128};
  config.discriminator.hop_lengths = {64, 32};
  config.batch_size = 2;
  config.segment_s = 0.2;
  config.learning_rate = 3e-3;
  config.device = "cpu";
  config.threads = 1;
  config.progress = false;
  config.seed = 1234;
  return config;
}

// [batch, 1, segment]: per item two partials and a decaying click train, all
// from fixed frequencies (no random state involved).
inline torch::Tensor test_batch(const TrainConfig& config, int64_t batch) {
  const int64_t length = static_cast<int64_t>(std::lround(config.segment_s * config.model.sample_rate_hz));
  torch::Tensor t = torch::arange(length, torch::kFloat64) / config.model.sample_rate_hz;
  std::vector<torch::Tensor> items;
  for (int64_t b = 0; b < batch; ++b) {
    const double f0 = 150.0 + 70.0 * static_cast<double>(b);
    torch::Tensor x = 0.3 * torch::sin(2 * M_PI * f0 * t) + 0.15 * torch::sin(2 * M_PI * 3.1 * f0 * t + 0.5);
    torch::Tensor phase = torch::fmod(t * 12.0, 1.0);
    x = x + 0.2 * torch::exp(-phase * 60.0) * torch::sin(2 * M_PI * 2000.0 * t);
    items.push_back(x);
  }
  return torch::stack(items).unsqueeze(1).to(torch::kFloat32);
}

}  // namespace encodec::train
