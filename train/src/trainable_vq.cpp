#include "trainable_vq.h"

#include <cmath>

namespace encodec::train {
namespace {

// `num` rows of `samples`: distinct rows in random order when there are
// enough, else drawn with replacement (the reference's sample_vectors).
torch::Tensor sample_vectors(const torch::Tensor& samples, int64_t num) {
  const int64_t n = samples.size(0);
  const auto index_options = torch::TensorOptions().dtype(torch::kLong).device(samples.device());
  torch::Tensor indices = n >= num ? torch::randperm(n, index_options).slice(0, 0, num)
                                   : torch::randint(0, n, {num}, index_options);
  return samples.index_select(0, indices);
}

// -(|x|^2 - 2 x.e + |e|^2), the reference's expression.
torch::Tensor nearest(const torch::Tensor& x, const torch::Tensor& embed) {
  torch::Tensor embed_t = embed.t();
  torch::Tensor dist = -(x.pow(2).sum(1, /*keepdim=*/true) - torch::matmul(2 * x, embed_t) +
                         embed_t.pow(2).sum(0, /*keepdim=*/true));
  return std::get<1>(dist.max(-1));
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> kmeans(const torch::Tensor& samples, int64_t num_clusters,
                                               int iterations) {
  torch::NoGradGuard no_grad;
  const int64_t dim = samples.size(1);
  torch::Tensor means = sample_vectors(samples, num_clusters);
  torch::Tensor bins;
  for (int i = 0; i < iterations; ++i) {
    // The distance expanded as |x|^2 - 2 x.m + |m|^2 (as nearest() does) rather
    // than the reference's [N, C, D] differences: the warm-up init clusters
    // thousands of vectors into 1024 codes, where those would take gigabytes.
    torch::Tensor buckets = nearest(samples, means);
    bins = torch::bincount(buckets, /*weights=*/{}, num_clusters);
    torch::Tensor zero_mask = bins.eq(0);
    torch::Tensor new_means = torch::zeros({num_clusters, dim}, samples.options())
                                  .scatter_add_(0, buckets.unsqueeze(1).expand({-1, dim}), samples);
    new_means = new_means / bins.masked_fill(zero_mask, 1).unsqueeze(1).to(samples.dtype());
    means = torch::where(zero_mask.unsqueeze(1), means, new_means);
  }
  if (!bins.defined()) bins = torch::zeros({num_clusters}, torch::TensorOptions().dtype(torch::kLong));
  return {means, bins.to(samples.dtype())};
}

EuclideanCodebookImpl::EuclideanCodebookImpl(int64_t dim, int64_t bins, const CodebookOptions& options)
    : bins_(bins), options_(options) {
  torch::Tensor initial;
  if (options.kmeans_init) {
    initial = torch::zeros({bins, dim});
  } else {
    // nn.init.kaiming_uniform_ with its defaults: bound sqrt(6 / fan_in).
    const double bound = std::sqrt(6.0 / static_cast<double>(dim));
    initial = torch::empty({bins, dim}).uniform_(-bound, bound);
  }
  inited = register_buffer("inited", torch::full({1}, options.kmeans_init ? 0.0f : 1.0f));
  cluster_size = register_buffer("cluster_size", torch::zeros({bins}));
  embed = register_buffer("embed", initial);
  embed_avg = register_buffer("embed_avg", initial.clone());
}

CodebookUsage codebook_usage(const torch::Tensor& codes, int64_t bins) {
  torch::Tensor counts = torch::bincount(codes.flatten().to(torch::kCPU, torch::kLong), /*weights=*/{}, bins)
                             .to(torch::kFloat64);
  CodebookUsage usage;
  usage.distinct_codes = counts.gt(0).sum().item<int64_t>();
  const double total = counts.sum().item<double>();
  if (total <= 0) return usage;
  torch::Tensor p = counts.masked_select(counts.gt(0)) / total;
  usage.perplexity = std::exp(-(p * p.log()).sum().item<double>());
  return usage;
}

torch::Tensor EuclideanCodebookImpl::quantize(const torch::Tensor& x) const { return nearest(x, embed); }

void EuclideanCodebookImpl::init_embed(const torch::Tensor& x) {
  if (inited.item<float>() != 0.0f) return;
  init_from(x);
}

void EuclideanCodebookImpl::init_from(const torch::Tensor& input, double count_scale) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = input.detach();
  auto [means, counts] = kmeans(x, bins_, options_.kmeans_iters);
  counts = counts * count_scale;
  embed.copy_(means);
  embed_avg.copy_(means * counts.unsqueeze(1));  // sums, so that embed_avg / cluster_size = means (see the header)
  cluster_size.copy_(counts);
  inited.fill_(1.0f);
}

void EuclideanCodebookImpl::expire_codes(const torch::Tensor& x) {
  if (options_.threshold_ema_dead_code <= 0) return;
  torch::Tensor expired = cluster_size.lt(options_.threshold_ema_dead_code);
  if (!expired.any().item<bool>()) return;
  torch::Tensor replacement = sample_vectors(x, bins_);
  torch::Tensor mask = expired.unsqueeze(1);
  embed.copy_(torch::where(mask, replacement, embed));
  // So that the EMA normalization below keeps the new vectors (see the header).
  const double threshold = options_.threshold_ema_dead_code;
  embed_avg.copy_(torch::where(mask, replacement * threshold, embed_avg));
  cluster_size.masked_fill_(expired, threshold);
}

std::pair<torch::Tensor, torch::Tensor> EuclideanCodebookImpl::forward(const torch::Tensor& input) {
  torch::NoGradGuard no_grad;  // codebooks learn by moving averages only
  torch::Tensor x = input.detach();
  if (is_training()) init_embed(x);
  torch::Tensor indices = quantize(x);
  torch::Tensor codewords = torch::embedding(embed, indices);  // a copy: the updates below leave it
  if (is_training()) {
    torch::Tensor onehot = torch::one_hot(indices, bins_).to(x.dtype());
    expire_codes(x);
    const double decay = options_.decay;
    cluster_size.mul_(decay).add_(onehot.sum(0), 1 - decay);
    embed_avg.mul_(decay).add_(torch::matmul(x.t(), onehot).t(), 1 - decay);
    // Laplace smoothing keeps never-used codes from dividing by zero.
    const double total = cluster_size.sum().item<double>();
    torch::Tensor smoothed = (cluster_size + options_.epsilon) / (total + bins_ * options_.epsilon) * total;
    embed.copy_(embed_avg / smoothed.unsqueeze(1));
  }
  return {codewords, indices};
}

VectorQuantizationImpl::VectorQuantizationImpl(int64_t dim, int64_t bins, const CodebookOptions& options)
    : commitment_weight_(options.commitment_weight) {
  codebook_ = register_module("_codebook", EuclideanCodebook(dim, bins, options));
}

VectorQuantizationImpl::Output VectorQuantizationImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), dim = x.size(1), frames = x.size(2);
  torch::Tensor rows = x.transpose(1, 2).reshape({-1, dim});
  auto [codewords, indices] = codebook_->forward(rows);
  Output out;
  out.quantized = codewords.view({batch, frames, dim}).transpose(1, 2);
  out.codes = indices.view({batch, frames});
  out.commitment_loss = commitment_weight_ > 0 && x.requires_grad()
                            ? torch::mse_loss(x, out.quantized) * commitment_weight_
                            : torch::zeros({}, x.options());
  return out;
}

ResidualVectorQuantizerImpl::ResidualVectorQuantizerImpl(int64_t dimension, int64_t n_q, int64_t bins,
                                                         const CodebookOptions& options) {
  torch::nn::ModuleList layers;
  for (int64_t i = 0; i < n_q; ++i) layers->push_back(VectorQuantization(dimension, bins, options));
  layers_ = layers;
  // The reference nests the list in a ResidualVectorQuantization (`vq.layers`).
  auto vq = std::make_shared<torch::nn::Module>("ResidualVectorQuantization");
  vq->register_module("layers", layers_);
  register_module("vq", vq);
}

void ResidualVectorQuantizerImpl::init_codebooks(const torch::Tensor& x, int64_t vectors_per_step) {
  torch::NoGradGuard no_grad;
  const int64_t dim = x.size(1);
  torch::Tensor residual = x.detach().transpose(1, 2).reshape({-1, dim});
  const double count_scale =
      vectors_per_step > 0 ? static_cast<double>(vectors_per_step) / static_cast<double>(residual.size(0)) : 1.0;
  for (int64_t i = 0; i < n_q(); ++i) {
    EuclideanCodebook codebook = layer(i)->codebook();
    codebook->init_from(residual, count_scale);
    residual = residual - torch::embedding(codebook->embed, codebook->quantize(residual));
  }
}

ResidualVectorQuantizerImpl::Output ResidualVectorQuantizerImpl::forward(const torch::Tensor& x,
                                                                         int64_t n_q_used) {
  TORCH_CHECK(n_q_used >= 1 && n_q_used <= n_q(), "n_q_used ", n_q_used, " out of range 1..", n_q());
  torch::Tensor residual = x;
  torch::Tensor sum = torch::zeros_like(x);
  std::vector<torch::Tensor> codes, losses;
  for (int64_t i = 0; i < n_q_used; ++i) {
    VectorQuantizationImpl::Output layer_out = layer(i)->forward(residual);
    residual = residual - layer_out.quantized;
    sum = sum + layer_out.quantized;
    codes.push_back(layer_out.codes);
    losses.push_back(layer_out.commitment_loss);
  }
  Output out;
  out.quantized = is_training() ? x + (sum - x).detach() : sum;
  out.codes = torch::stack(codes);
  out.penalty = torch::stack(losses).mean();
  return out;
}

}  // namespace encodec::train
