#include "losses.h"

#include <cmath>

#include "modules/conv.h"  // core/src: pad1d_reflect

namespace encodec::train {
namespace {

double hz_to_mel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }

}  // namespace

torch::Tensor mel_filterbank(int64_t n_freqs, int64_t n_mels, double f_min_hz, double f_max_hz,
                             int64_t sample_rate_hz) {
  // torchaudio's formulation: slopes between consecutive mel points, the
  // lower of the rising and falling edge, clamped at zero.
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor all_freqs = torch::linspace(0, sample_rate_hz / 2.0, n_freqs, options);
  torch::Tensor m_pts = torch::linspace(hz_to_mel(f_min_hz), hz_to_mel(f_max_hz), n_mels + 2, options);
  torch::Tensor f_pts = 700.0 * (torch::pow(10.0, m_pts / 2595.0) - 1.0);
  torch::Tensor f_diff = f_pts.slice(0, 1) - f_pts.slice(0, 0, -1);
  torch::Tensor slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1);  // [n_freqs, n_mels + 2]
  torch::Tensor down = -slopes.slice(1, 0, -2) / f_diff.slice(0, 0, -1);
  torch::Tensor up = slopes.slice(1, 2) / f_diff.slice(0, 1);
  return torch::clamp_min(torch::minimum(down, up), 0.0).to(torch::kFloat32);
}

torch::Tensor mel_spectrogram(const torch::Tensor& x, int64_t n_fft, const torch::Tensor& filterbank) {
  torch::Tensor window = torch::hann_window(n_fft, x.options());
  torch::Tensor padded = pad1d_reflect(x, n_fft / 2, n_fft / 2);
  torch::Tensor spec = torch::stft(padded, n_fft, n_fft / 4, n_fft, window, /*normalized=*/false,
                                   /*onesided=*/true, /*return_complex=*/true);
  torch::Tensor magnitude = spec.abs() / window.pow(2).sum().sqrt();  // [B, n_freqs, frames]
  return torch::matmul(filterbank.t(), magnitude);
}

MultiScaleMelLoss::MultiScaleMelLoss(int64_t sample_rate_hz, int64_t n_mels, int min_log2, int max_log2)
    : sample_rate_hz_(sample_rate_hz), n_mels_(n_mels), min_log2_(min_log2), max_log2_(max_log2) {
  TORCH_CHECK(min_log2 >= 2 && min_log2 <= max_log2, "mel scales 2^", min_log2, "..2^", max_log2, " are empty");
  for (int i = min_log2; i <= max_log2; ++i) {
    filterbanks_.push_back(mel_filterbank((int64_t{1} << i) / 2 + 1, n_mels, 0.0, sample_rate_hz / 2.0, sample_rate_hz));
  }
}

torch::Tensor MultiScaleMelLoss::operator()(const torch::Tensor& x, const torch::Tensor& y) {
  TORCH_CHECK(x.sizes() == y.sizes() && x.dim() == 3 && x.size(1) == 1, "mel loss: expected two [B, 1, T] tensors, got ",
              x.sizes(), " and ", y.sizes());
  torch::Tensor total = torch::zeros({}, x.options());
  for (size_t s = 0; s < filterbanks_.size(); ++s) {
    if (filterbanks_[s].device() != x.device()) filterbanks_[s] = filterbanks_[s].to(x.device());
    const int64_t n_fft = int64_t{1} << (min_log2_ + static_cast<int>(s));
    torch::Tensor diff = mel_spectrogram(x.squeeze(1), n_fft, filterbanks_[s]) -
                         mel_spectrogram(y.squeeze(1), n_fft, filterbanks_[s]);
    total = total + diff.abs().mean() + diff.pow(2).mean();
  }
  return total / static_cast<double>(filterbanks_.size());
}

torch::Tensor time_l1_loss(const torch::Tensor& x, const torch::Tensor& y) { return (x - y).abs().mean(); }

torch::Tensor generator_adversarial_loss(const std::vector<torch::Tensor>& fake_logits) {
  TORCH_CHECK(!fake_logits.empty(), "no discriminator outputs");
  torch::Tensor total = torch::zeros({}, fake_logits[0].options());
  for (const torch::Tensor& logits : fake_logits) total = total + torch::relu(1 - logits).mean();
  return total / static_cast<double>(fake_logits.size());
}

torch::Tensor discriminator_loss(const std::vector<torch::Tensor>& real_logits,
                                 const std::vector<torch::Tensor>& fake_logits) {
  TORCH_CHECK(!real_logits.empty() && real_logits.size() == fake_logits.size(), "discriminator outputs do not pair up");
  torch::Tensor total = torch::zeros({}, real_logits[0].options());
  for (size_t k = 0; k < real_logits.size(); ++k) {
    total = total + torch::relu(1 - real_logits[k]).mean() + torch::relu(1 + fake_logits[k]).mean();
  }
  return total / static_cast<double>(real_logits.size());
}

torch::Tensor feature_matching_loss(const std::vector<std::vector<torch::Tensor>>& real_features,
                                    const std::vector<std::vector<torch::Tensor>>& fake_features) {
  TORCH_CHECK(!real_features.empty() && real_features.size() == fake_features.size(), "feature maps do not pair up");
  torch::Tensor total = torch::zeros({}, real_features[0][0].options());
  int64_t count = 0;
  for (size_t k = 0; k < real_features.size(); ++k) {
    TORCH_CHECK(real_features[k].size() == fake_features[k].size(), "feature maps do not pair up");
    for (size_t l = 0; l < real_features[k].size(); ++l) {
      torch::Tensor real = real_features[k][l].detach();
      total = total + (real - fake_features[k][l]).abs().mean() / (real.abs().mean() + 1e-12);
      ++count;
    }
  }
  return total / static_cast<double>(count);
}

}  // namespace encodec::train
