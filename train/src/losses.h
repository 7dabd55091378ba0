// The generator's and discriminator's losses as published (Défossez et al.,
// 2022, section 3.4): time-domain L1, multi-scale mel-spectrogram L1 + L2,
// hinge adversarial losses and the relative feature-matching loss.
#pragma once

#include <vector>

#include <torch/torch.h>

namespace encodec::train {

// The HTK mel filterbank torchaudio.functional.melscale_fbanks builds (no
// area normalization): [n_freqs, n_mels], triangles between mel-spaced points
// from f_min to f_max, evaluated at the n_freqs linearly spaced STFT bins.
torch::Tensor mel_filterbank(int64_t n_freqs, int64_t n_mels, double f_min_hz, double f_max_hz,
                             int64_t sample_rate_hz);

// Magnitude mel spectrogram of x [B, T] (filterbank [n_fft / 2 + 1, n_mels]): periodic Hann window of n_fft
// samples, hop n_fft / 4, centred frames (reflect padding n_fft / 2 each side),
// the STFT divided by the window's L2 norm (torchaudio's normalized=True),
// then the filterbank. Returns [B, n_mels, frames].
torch::Tensor mel_spectrogram(const torch::Tensor& x, int64_t n_fft, const torch::Tensor& filterbank);

// l_f: for each window 2^i (i = min_log2 .. max_log2, 5..11 as published),
// mean |S(x) - S(y)| + mean (S(x) - S(y))^2 of the 64-band mel spectrograms,
// averaged over the scales. Filterbanks and windows are built once per device.
class MultiScaleMelLoss {
 public:
  explicit MultiScaleMelLoss(int64_t sample_rate_hz, int64_t n_mels = 64, int min_log2 = 5, int max_log2 = 11);
  // x, y: [B, 1, T] (reference and reconstruction).
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& y);

 private:
  int64_t sample_rate_hz_, n_mels_;
  int min_log2_, max_log2_;
  std::vector<torch::Tensor> filterbanks_;  // per scale, on the last device used
};

// l_t: mean |x - y|.
torch::Tensor time_l1_loss(const torch::Tensor& x, const torch::Tensor& y);

// Generator's hinge loss: mean over discriminators of mean(relu(1 - D_k(y))).
torch::Tensor generator_adversarial_loss(const std::vector<torch::Tensor>& fake_logits);

// Discriminator's hinge loss: mean over discriminators of
// mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(y))).
torch::Tensor discriminator_loss(const std::vector<torch::Tensor>& real_logits,
                                 const std::vector<torch::Tensor>& fake_logits);

// l_feat: mean over discriminators k and layers l of
// mean|D_k^l(x) - D_k^l(y)| / mean|D_k^l(x)| (the real features detached).
torch::Tensor feature_matching_loss(const std::vector<std::vector<torch::Tensor>>& real_features,
                                    const std::vector<std::vector<torch::Tensor>>& fake_features);

}  // namespace encodec::train
