// The trainable quantizer against hand-computed values on tiny inputs: k-means,
// the EMA update with Laplace smoothing, dead-code replacement, the commitment
// loss and the straight-through estimator.
#include <gtest/gtest.h>

#include "trainable_vq.h"

namespace encodec::train {
namespace {

torch::Tensor rows(std::vector<std::vector<float>> values) {
  std::vector<torch::Tensor> out;
  for (auto& row : values) out.push_back(torch::tensor(row));
  return torch::stack(out);
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, double tolerance, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(torch::allclose(actual.to(torch::kFloat64), expected.to(torch::kFloat64), 0, tolerance))
      << what << "\nactual\n" << actual << "\nexpected\n" << expected;
}

// Two well separated 1-D clusters {0, 0.1, 0.2} and {10, 10.1, 10.2}: from
// any two starting points Lloyd's steps end at the cluster means.
TEST(KMeans, FindsTwoSeparatedClusters) {
  torch::manual_seed(3);
  const torch::Tensor samples = rows({{0.f}, {10.f}, {0.1f}, {10.1f}, {0.2f}, {10.2f}});
  for (int trial = 0; trial < 5; ++trial) {
    auto [means, counts] = kmeans(samples, 2, 10);
    auto order = std::get<1>(means.view(-1).sort());
    expect_close(means.view(-1).index_select(0, order), torch::tensor({0.1, 10.1}), 1e-5, "means");
    expect_close(counts.index_select(0, order), torch::tensor({3.0, 3.0}), 0, "counts");
  }
}

TEST(KMeans, KeepsTheMeanOfAnEmptyCluster) {
  // Three identical samples, two clusters: both start on the sample (drawn with
  // replacement, fewer samples than clusters is not the case here: 3 >= 2), one
  // takes everything, the other keeps its mean, and its count is 0.
  const torch::Tensor samples = rows({{1.f, 2.f}, {1.f, 2.f}, {1.f, 2.f}});
  auto [means, counts] = kmeans(samples, 2, 3);
  expect_close(means, rows({{1.f, 2.f}, {1.f, 2.f}}), 0, "means");
  EXPECT_EQ(counts.sum().item<double>(), 3.0);
  EXPECT_EQ(counts.min().item<double>(), 0.0);
}

// One training step of a codebook with decay 0.5, worked by hand:
// codes e0 = (0, 0), e1 = (10, 10), cluster sizes (1, 1); the batch
// (1, 1), (9, 9), (11, 11) goes to codes 0, 1, 1.
//   cluster_size = 0.5 * (1, 1) + 0.5 * (1, 2) = (1, 1.5)
//   embed_avg    = 0.5 * [(0, 0), (10, 10)] + 0.5 * [(1, 1), (20, 20)] = [(0.5, 0.5), (15, 15)]
//   smoothed n_k = (n_k + eps) / (2.5 + 2 eps) * 2.5
//   embed        = embed_avg / smoothed n_k
TEST(EuclideanCodebook, EmaUpdateWithLaplaceSmoothing) {
  CodebookOptions options;
  options.decay = 0.5;
  options.epsilon = 1e-5;
  options.kmeans_init = false;
  options.threshold_ema_dead_code = 0;
  EuclideanCodebook codebook(2, 2, options);
  codebook->embed.copy_(rows({{0.f, 0.f}, {10.f, 10.f}}));
  codebook->embed_avg.copy_(codebook->embed);
  codebook->cluster_size.fill_(1.0f);
  codebook->train();

  auto [codewords, indices] = codebook->forward(rows({{1.f, 1.f}, {9.f, 9.f}, {11.f, 11.f}}));
  EXPECT_TRUE(torch::equal(indices, torch::tensor({0, 1, 1}, torch::kLong)));
  expect_close(codewords, rows({{0.f, 0.f}, {10.f, 10.f}, {10.f, 10.f}}), 0, "codewords (before the update)");
  expect_close(codebook->cluster_size, torch::tensor({1.0, 1.5}), 1e-7, "cluster_size");
  expect_close(codebook->embed_avg, rows({{0.5f, 0.5f}, {15.f, 15.f}}), 1e-6, "embed_avg");
  const double eps = 1e-5, total = 2.5;
  const double n0 = (1.0 + eps) / (total + 2 * eps) * total, n1 = (1.5 + eps) / (total + 2 * eps) * total;
  expect_close(codebook->embed, torch::tensor({{0.5 / n0, 0.5 / n0}, {15 / n1, 15 / n1}}, torch::kFloat64), 1e-6,
               "embed");
  EXPECT_EQ(codebook->inited.item<float>(), 1.0f);
}

TEST(EuclideanCodebook, EvalModeLeavesTheBuffersAlone) {
  CodebookOptions options;
  options.kmeans_init = false;
  EuclideanCodebook codebook(2, 4, options);
  codebook->eval();
  const torch::Tensor embed = codebook->embed.clone(), sizes = codebook->cluster_size.clone();
  codebook->forward(torch::randn({5, 2}));
  EXPECT_TRUE(torch::equal(codebook->embed, embed));
  EXPECT_TRUE(torch::equal(codebook->cluster_size, sizes));
}

// k-means on the first training batch: every buffer set from it, inited = 1.
TEST(EuclideanCodebook, KMeansInitOnTheFirstBatch) {
  CodebookOptions options;
  options.kmeans_iters = 10;
  options.threshold_ema_dead_code = 0;
  options.decay = 0.99;
  EuclideanCodebook codebook(1, 2, options);
  EXPECT_EQ(codebook->inited.item<float>(), 0.0f);
  codebook->train();
  auto [codewords, indices] = codebook->forward(rows({{0.f}, {10.f}, {0.1f}, {10.1f}, {0.2f}, {10.2f}}));
  EXPECT_EQ(codebook->inited.item<float>(), 1.0f);
  // After init: means (0.1, 10.1), sizes (3, 3); then the EMA step with the same
  // batch keeps the means and the sizes: 0.99 * 3 + 0.01 * 3.
  auto order = std::get<1>(codebook->embed.view(-1).sort());
  expect_close(codebook->embed.view(-1).index_select(0, order), torch::tensor({0.1, 10.1}), 1e-4, "embed");
  expect_close(codebook->cluster_size, torch::tensor({3.0, 3.0}), 1e-5, "cluster_size");
  // Each sample's codeword is its cluster's mean.
  expect_close(codewords.view(-1), torch::tensor({0.1, 10.1, 0.1, 10.1, 0.1, 10.1}), 1e-5, "codewords");
}

// A code whose EMA count is under the threshold is replaced by a batch vector,
// and keeps it through the EMA normalization of the same step (see trainable_vq.h).
TEST(EuclideanCodebook, DeadCodeIsReplacedByABatchVector) {
  CodebookOptions options;
  options.decay = 0.9;
  options.kmeans_init = false;
  options.threshold_ema_dead_code = 2.0;
  EuclideanCodebook codebook(2, 3, options);
  codebook->embed.copy_(rows({{0.f, 0.f}, {-50.f, -50.f}, {10.f, 10.f}}));
  codebook->cluster_size.copy_(torch::tensor({5.0f, 0.5f, 5.0f}));
  codebook->embed_avg.copy_(codebook->embed * codebook->cluster_size.unsqueeze(1));
  codebook->train();
  const torch::Tensor batch = rows({{1.f, 2.f}, {9.f, 8.f}, {11.f, 12.f}});
  codebook->forward(batch);

  // The dead code: cluster_size = threshold, then one EMA step with no sample: 0.9 * 2.
  EXPECT_NEAR(codebook->cluster_size[1].item<double>(), 1.8, 1e-6);
  const torch::Tensor replaced = codebook->embed[1];
  const torch::Tensor distances = (batch - replaced).norm(2, 1);
  EXPECT_LT(distances.min().item<double>(), 1e-3) << "code 1 = " << replaced << " is no batch vector";
  // Live codes follow the EMA: code 0 got (1, 2), code 2 got (9, 8) and (11, 12).
  EXPECT_NEAR(codebook->cluster_size[0].item<double>(), 0.9 * 5 + 0.1 * 1, 1e-6);
  EXPECT_NEAR(codebook->cluster_size[2].item<double>(), 0.9 * 5 + 0.1 * 2, 1e-6);
  expect_close(codebook->embed_avg[0], torch::tensor({0.1 * 1, 0.1 * 2}), 1e-6, "embed_avg[0]");
  expect_close(codebook->embed_avg[2], torch::tensor({0.9 * 50 + 0.1 * 20, 0.9 * 50 + 0.1 * 20}), 1e-4, "embed_avg[2]");
}

// Two codebooks on one frame, worked by hand: x = (1, 2); layer 0's codes
// {(0, 0), (1, 1)} give (1, 1), residual (0, 1); layer 1's codes {(0, 0.5), (5, 5)}
// give (0, 0.5), residual (0, 0.5). Commitment losses: mse = mean of squares
// of the residuals: 0.5 and 0.125; the penalty is their mean 0.3125.
TEST(ResidualVectorQuantizer, CommitmentLossAndStraightThrough) {
  CodebookOptions options;
  options.kmeans_init = false;
  options.threshold_ema_dead_code = 0;
  options.decay = 0.99;
  ResidualVectorQuantizer rvq(2, 2, 2, options);
  rvq->layer(0)->codebook()->embed.copy_(rows({{0.f, 0.f}, {1.f, 1.f}}));
  rvq->layer(1)->codebook()->embed.copy_(rows({{0.f, 0.5f}, {5.f, 5.f}}));
  for (int i = 0; i < 2; ++i) {
    auto codebook = rvq->layer(i)->codebook();
    codebook->embed_avg.copy_(codebook->embed);
    codebook->cluster_size.fill_(1.0f);
  }
  rvq->train();
  torch::Tensor x = torch::tensor({1.0f, 2.0f}).view({1, 2, 1}).requires_grad_(true);
  ResidualVectorQuantizerImpl::Output out = rvq->forward(x, 2);
  EXPECT_TRUE(torch::equal(out.codes.view(-1), torch::tensor({1, 0}, torch::kLong)));
  expect_close(out.quantized.detach().view(-1), torch::tensor({1.0, 1.5}), 1e-6, "quantized");
  EXPECT_NEAR(out.penalty.item<double>(), 0.3125, 1e-6);

  // Straight through: d(sum(w * quantized)) / dx = w.
  const torch::Tensor w = torch::tensor({3.0f, -2.0f}).view({1, 2, 1});
  torch::Tensor grad = torch::autograd::grad({(out.quantized * w).sum()}, {x}, {}, true)[0];
  expect_close(grad, w, 0, "straight-through gradient");
  // Both commitment losses reach x (encodec issue 25): d penalty / dx =
  // 0.5 * (2 (x - q0) / 2 + 2 (r1 - q1) / 2) = 0.5 * ((0, 1) + (0, 0.5)).
  grad = torch::autograd::grad({out.penalty}, {x})[0];
  expect_close(grad.view(-1), torch::tensor({0.0, 0.75}), 1e-6, "commitment gradient");
}

// Usage of a codebook worked by hand: codes 0, 0, 1, 1 use two entries
// equally (perplexity 2); 0, 0, 0, 1 has frequencies 3/4, 1/4, perplexity
// exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 1.7548; one code everywhere is 1.
TEST(CodebookUsage, DistinctCodesAndPerplexityByHand) {
  CodebookUsage even = codebook_usage(torch::tensor({0, 0, 1, 1}), 8);
  EXPECT_EQ(even.distinct_codes, 2);
  EXPECT_NEAR(even.perplexity, 2.0, 1e-12);
  CodebookUsage skewed = codebook_usage(torch::tensor({{0, 0}, {0, 1}}), 8);
  EXPECT_EQ(skewed.distinct_codes, 2);
  EXPECT_NEAR(skewed.perplexity, std::exp(-(0.75 * std::log(0.75) + 0.25 * std::log(0.25))), 1e-12);
  CodebookUsage collapsed = codebook_usage(torch::full({5}, 7, torch::kLong), 8);
  EXPECT_EQ(collapsed.distinct_codes, 1);
  EXPECT_NEAR(collapsed.perplexity, 1.0, 1e-12);
}

// The init after the warm-up: latents 1-D, a + b with a in {0, 100} and b in
// {-1, +1}, each combination 3 times. Two codebooks of 2 entries: the first
// must find a's values (the means of {-1, 1} and {99, 101}: 0 and 100, from any
// start, the gaps being so unequal), the second the residuals b = -1, +1, so
// that every latent is then quantized exactly. Each entry takes 6 of the 12
// vectors; with training batches of 6 vectors its EMA count starts at 3.
TEST(ResidualVectorQuantizer, InitCodebooksFitsEachOnTheResidualsBefore) {
  torch::manual_seed(5);
  CodebookOptions options;
  options.kmeans_iters = 10;
  ResidualVectorQuantizer rvq(1, 2, 2, options);
  std::vector<float> values;
  for (int repeat = 0; repeat < 3; ++repeat) {
    for (float v : {-1.f, 1.f, 99.f, 101.f}) values.push_back(v);
  }
  const torch::Tensor x = torch::tensor(values).view({1, 1, -1});  // [B, D, T]
  rvq->init_codebooks(x, /*vectors_per_step=*/6);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(rvq->layer(i)->codebook()->inited.item<float>(), 1.0f) << i;
  auto sorted = [](const torch::Tensor& embed) { return std::get<0>(embed.view(-1).sort()); };
  expect_close(sorted(rvq->layer(0)->codebook()->embed), torch::tensor({0.0, 100.0}), 1e-5, "first codebook");
  expect_close(sorted(rvq->layer(1)->codebook()->embed), torch::tensor({-1.0, 1.0}), 1e-5, "second codebook");
  expect_close(rvq->layer(1)->codebook()->cluster_size, torch::tensor({3.0, 3.0}), 0, "second codebook's counts");
  // embed_avg holds sums: the means times the counts.
  expect_close(rvq->layer(0)->codebook()->embed_avg / rvq->layer(0)->codebook()->cluster_size.unsqueeze(1),
               rvq->layer(0)->codebook()->embed, 1e-5, "embed_avg / cluster_size");
  rvq->eval();
  torch::NoGradGuard no_grad;
  expect_close(rvq->forward(x, 2).quantized, x, 1e-5, "quantized with both codebooks");
}

TEST(ResidualVectorQuantizer, EvalModeSumsTheCodewords) {
  CodebookOptions options;
  options.kmeans_init = false;
  ResidualVectorQuantizer rvq(3, 4, 8, options);
  rvq->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 5});
  ResidualVectorQuantizerImpl::Output out = rvq->forward(x, 3);
  torch::Tensor expected = torch::zeros_like(x);
  for (int i = 0; i < 3; ++i) {
    expected += torch::embedding(rvq->layer(i)->codebook()->embed, out.codes[i]).transpose(1, 2);
  }
  expect_close(out.quantized, expected, 1e-6, "quantized");
  EXPECT_EQ(out.codes.sizes(), (std::vector<int64_t>{3, 2, 5}));
}

}  // namespace
}  // namespace encodec::train
