// The losses, the discriminator and the balancer against independent
// computations: a mel filterbank built from its triangle definition, a mel
// loss through a direct DFT in double precision, hinge and feature-matching
// losses worked by hand, and the balancer's cases from balancer.py plus an
// EMA case worked by hand.
#include <cmath>

#include <gtest/gtest.h>

#include "balancer.h"
#include "losses.h"
#include "msstftd.h"

namespace encodec::train {
namespace {

double mel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
double hz(double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); }

// Band m is a triangle rising from f[m] to 1 at f[m + 1] and falling to 0 at
// f[m + 2], the points equally spaced in mel from 0 to the Nyquist frequency.
std::vector<std::vector<double>> triangle_filterbank(int n_freqs, int n_mels, double sample_rate_hz) {
  std::vector<double> points;
  const double top = mel(sample_rate_hz / 2);
  for (int i = 0; i < n_mels + 2; ++i) points.push_back(hz(top * i / (n_mels + 1)));
  std::vector<std::vector<double>> bank(n_freqs, std::vector<double>(n_mels, 0.0));
  for (int k = 0; k < n_freqs; ++k) {
    const double f = sample_rate_hz / 2 * k / (n_freqs - 1);
    for (int m = 0; m < n_mels; ++m) {
      if (f >= points[m] && f <= points[m + 1]) bank[k][m] = (f - points[m]) / (points[m + 1] - points[m]);
      if (f > points[m + 1] && f <= points[m + 2]) bank[k][m] = (points[m + 2] - f) / (points[m + 2] - points[m + 1]);
    }
  }
  return bank;
}

TEST(MelFilterbank, EqualsTheTriangleDefinition) {
  for (int n_fft : {32, 256, 2048}) {
    const int n_freqs = n_fft / 2 + 1;
    const torch::Tensor bank = mel_filterbank(n_freqs, 64, 0.0, 12000.0, 24000);
    ASSERT_EQ(bank.sizes(), (std::vector<int64_t>{n_freqs, 64}));
    const auto expected = triangle_filterbank(n_freqs, 64, 24000.0);
    double worst = 0;
    for (int k = 0; k < n_freqs; ++k) {
      for (int m = 0; m < 64; ++m) worst = std::max(worst, std::abs(bank[k][m].item<double>() - expected[k][m]));
    }
    EXPECT_LT(worst, 1e-5) << "n_fft " << n_fft;
  }
}

// |DFT| of each centred, reflect-padded, Hann-windowed frame, divided by the
// window's L2 norm, through the triangle filterbank; all in double.
std::vector<std::vector<double>> direct_mel(const std::vector<double>& x, int n_fft, double sample_rate_hz) {
  const int n = static_cast<int>(x.size()), pad = n_fft / 2, hop = n_fft / 4;
  std::vector<double> padded;
  for (int i = -pad; i < n + pad; ++i) {
    int j = i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
    padded.push_back(x[j]);
  }
  std::vector<double> window(n_fft);
  double window_norm = 0;
  for (int i = 0; i < n_fft; ++i) {
    window[i] = 0.5 - 0.5 * std::cos(2 * M_PI * i / n_fft);  // periodic Hann
    window_norm += window[i] * window[i];
  }
  window_norm = std::sqrt(window_norm);
  const int n_freqs = n_fft / 2 + 1, frames = 1 + (static_cast<int>(padded.size()) - n_fft) / hop;
  const auto bank = triangle_filterbank(n_freqs, 64, sample_rate_hz);
  std::vector<std::vector<double>> out(frames, std::vector<double>(64, 0.0));
  for (int t = 0; t < frames; ++t) {
    for (int k = 0; k < n_freqs; ++k) {
      double re = 0, im = 0;
      for (int i = 0; i < n_fft; ++i) {
        const double v = padded[t * hop + i] * window[i];
        re += v * std::cos(2 * M_PI * k * i / n_fft);
        im -= v * std::sin(2 * M_PI * k * i / n_fft);
      }
      const double magnitude = std::sqrt(re * re + im * im) / window_norm;
      for (int m = 0; m < 64; ++m) out[t][m] += bank[k][m] * magnitude;
    }
  }
  return out;
}

TEST(MultiScaleMelLoss, EqualsADirectComputation) {
  const int length = 2400;  // 0.1 s at 24 kHz
  std::vector<double> x(length), y(length);
  for (int i = 0; i < length; ++i) {
    x[i] = 0.5 * std::sin(2 * M_PI * 440.0 * i / 24000) + 0.1 * std::sin(2 * M_PI * 3000.0 * i / 24000);
    y[i] = 0.4 * std::sin(2 * M_PI * 440.0 * i / 24000 + 0.3) + 0.05 * std::cos(2 * M_PI * 7000.0 * i / 24000);
  }
  double expected = 0;
  for (int log2 = 5; log2 <= 11; ++log2) {
    const auto sx = direct_mel(x, 1 << log2, 24000), sy = direct_mel(y, 1 << log2, 24000);
    double l1 = 0, l2 = 0;
    size_t count = 0;
    for (size_t t = 0; t < sx.size(); ++t) {
      for (int m = 0; m < 64; ++m) {
        const double d = sx[t][m] - sy[t][m];
        l1 += std::abs(d);
        l2 += d * d;
        ++count;
      }
    }
    expected += (l1 + l2) / static_cast<double>(count);
  }
  expected /= 7;
  MultiScaleMelLoss loss(24000);
  const torch::Tensor tx = torch::tensor(x, torch::kFloat32).view({1, 1, -1});
  const torch::Tensor ty = torch::tensor(y, torch::kFloat32).view({1, 1, -1});
  const double actual = loss(tx, ty).item<double>();
  EXPECT_NEAR(actual, expected, 1e-4 * expected) << "expected " << expected;
  EXPECT_EQ(loss(tx, tx).item<double>(), 0.0);
}

TEST(Losses, TimeL1IsTheMeanAbsoluteDifference) {
  const torch::Tensor x = torch::tensor({1.0f, -2.0f, 0.5f, 0.0f}).view({1, 1, 4});
  const torch::Tensor y = torch::tensor({0.0f, -1.0f, 0.5f, 2.0f}).view({1, 1, 4});
  EXPECT_FLOAT_EQ(time_l1_loss(x, y).item<float>(), (1.0f + 1.0f + 0.0f + 2.0f) / 4);
}

// Two discriminators; logits (2, 0.5) and (-3) on fakes, (0.2, 1.5) and (-0.5) on reals.
TEST(Losses, HingeLossesWorkedByHand) {
  const std::vector<torch::Tensor> fake = {torch::tensor({2.0f, 0.5f}), torch::tensor({-3.0f})};
  const std::vector<torch::Tensor> real = {torch::tensor({0.2f, 1.5f}), torch::tensor({-0.5f})};
  // Generator: mean(relu(1 - D)) per discriminator: (0 + 0.5) / 2 = 0.25, 4; mean 2.125.
  EXPECT_FLOAT_EQ(generator_adversarial_loss(fake).item<float>(), 2.125f);
  // Discriminator: mean(relu(1 - real)) + mean(relu(1 + fake)):
  // k=0: (0.8 + 0) / 2 + (3 + 1.5) / 2 = 2.65; k=1: 1.5 + 0 = 1.5; mean 2.075.
  EXPECT_FLOAT_EQ(discriminator_loss(real, fake).item<float>(), 2.075f);
}

TEST(Losses, FeatureMatchingWorkedByHand) {
  // One discriminator, two layers: |(1, -1) - (0, 0)| / |(1, -1)| = 1;
  // |(2, 2) - (3, 1)| / |(2, 2)| = 0.5; mean 0.75.
  const std::vector<std::vector<torch::Tensor>> real = {{torch::tensor({1.0f, -1.0f}), torch::tensor({2.0f, 2.0f})}};
  const std::vector<std::vector<torch::Tensor>> fake = {{torch::tensor({0.0f, 0.0f}), torch::tensor({3.0f, 1.0f})}};
  EXPECT_FLOAT_EQ(feature_matching_loss(real, fake).item<float>(), 0.75f);
}

// msstftd.py's own test: 5 feature maps per scale, each [B, filters, ...], 4-D logits.
TEST(MultiScaleSTFTDiscriminator, ShapesAsTheReference) {
  torch::manual_seed(0);
  DiscriminatorOptions options;
  options.filters = 8;
  MultiScaleSTFTDiscriminator discriminator(options, 1);
  const torch::Tensor x = torch::randn({2, 1, 4800});
  DiscriminatorOutput out = discriminator->forward(x);
  ASSERT_EQ(out.logits.size(), 5u);
  for (size_t k = 0; k < 5; ++k) {
    ASSERT_EQ(out.features[k].size(), 5u);
    for (const torch::Tensor& map : out.features[k]) {
      EXPECT_EQ(map.size(0), 2);
      EXPECT_EQ(map.size(1), 8);
    }
    EXPECT_EQ(out.logits[k].dim(), 4);
    EXPECT_EQ(out.logits[k].size(1), 1);
    // Frames of the STFT without centring: 1 + (T - n_fft) / hop; frequencies halved thrice.
    const int64_t n_fft = options.n_ffts[k], hop = options.hop_lengths[k];
    EXPECT_EQ(out.logits[k].size(2), 1 + (4800 - n_fft) / hop);
    int64_t freqs = n_fft / 2 + 1;
    for (int i = 0; i < 3; ++i) freqs = (freqs - 1) / 2 + 1;
    EXPECT_EQ(out.logits[k].size(3), freqs);
  }
  // Weight norm everywhere but the first conv, as in the reference.
  const auto names = discriminator->named_parameters().keys();
  EXPECT_NE(std::find(names.begin(), names.end(), "discriminators.0.convs.0.conv.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "discriminators.0.convs.1.conv.weight_g"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "discriminators.4.conv_post.conv.weight_v"), names.end());
}

// balancer.py's test(): loss_1 = |x - 1| (gradient -1), loss_2 = 100 |x + 1| (gradient 100).
TEST(Balancer, ReferenceCases) {
  for (bool rescale : {false, true}) {
    torch::Tensor x = torch::zeros({1}, torch::requires_grad());
    BalancerOptions options;
    options.rescale_grads = rescale;
    Balancer balancer({{"1", 1.0}, {"2", 1.0}}, options);
    balancer.backward({{"1", torch::l1_loss(x, torch::ones_like(x))}, {"2", 100 * torch::l1_loss(x, -torch::ones_like(x))}}, x);
    // Without rescaling: -1 + 100 = 99. With: each gradient scaled to norm 1/2: -0.5 + 0.5.
    EXPECT_NEAR(x.grad().item<double>(), rescale ? 0.0 : 99.0, 1e-6) << "rescale " << rescale;
  }
}

// Weights 1 and 3 (ratios 1/4, 3/4), EMA decay 0.5, per batch item, over two
// calls on a batch of two items. loss_a = sum(x * c_a), loss_b = sum(x * c_b):
// gradients are c_a, c_b whatever x. Norms per item of c_a = [(3, 4), (0, 1)]:
// 5 and 1, mean 3; of c_b = [(0, 2), (0, 2)]: 2. First call: EMA = 3 and 2;
// second call with c_b doubled (norm 4): EMA_b = (2 * 0.5 + 4) / 1.5 = 10/3.
// The combined gradient: c_a * (1/4) / 3 + c_b' * (3/4) / (10/3).
TEST(Balancer, EmaOfGradientNormsWorkedByHand) {
  BalancerOptions options;
  options.ema_decay = 0.5;
  Balancer balancer({{"a", 1.0}, {"b", 3.0}}, options);
  const torch::Tensor c_a = torch::tensor({3.0, 4.0, 0.0, 1.0}, torch::kFloat64).view({2, 2});
  const torch::Tensor c_b = torch::tensor({0.0, 2.0, 0.0, 2.0}, torch::kFloat64).view({2, 2});
  torch::Tensor x = torch::ones({2, 2}, torch::TensorOptions().dtype(torch::kFloat64).requires_grad(true));
  balancer.backward({{"a", (x * c_a).sum()}, {"b", (x * c_b).sum()}}, x);
  EXPECT_NEAR(balancer.average_norms().at("a"), 3.0, 1e-12);
  EXPECT_NEAR(balancer.average_norms().at("b"), 2.0, 1e-12);
  torch::Tensor expected = c_a * (0.25 / 3.0) + c_b * (0.75 / 2.0);
  EXPECT_TRUE(torch::allclose(x.grad(), expected, 0, 1e-12)) << x.grad();

  x.mutable_grad().zero_();
  balancer.backward({{"a", (x * c_a).sum()}, {"b", (x * 2 * c_b).sum()}}, x);
  EXPECT_NEAR(balancer.average_norms().at("b"), 10.0 / 3.0, 1e-12);
  expected = c_a * (0.25 / 3.0) + 2 * c_b * (0.75 / (10.0 / 3.0));
  EXPECT_TRUE(torch::allclose(x.grad(), expected, 0, 1e-12)) << x.grad();
}

TEST(Balancer, RefusesALossWithoutWeight) {
  torch::Tensor x = torch::zeros({1}, torch::requires_grad());
  Balancer balancer({{"a", 1.0}});
  EXPECT_THROW(balancer.backward({{"b", x.sum()}}, x), std::invalid_argument);
}

}  // namespace
}  // namespace encodec::train
