// Trainable residual vector quantizer (encodec/quantization/core_vq.py, vq.py):
// Euclidean codebooks updated by exponential moving averages (not by
// gradients), initialized by k-means on the first batch, with dead codes
// replaced by vectors of the current batch, a commitment loss, and a
// straight-through estimator. Buffers carry the official names (`inited`,
// `cluster_size`, `embed`, `embed_avg` under `vq.layers.<i>._codebook`).
//
// Three deliberate differences from the reference, all bugs there:
//  - dead codes: the reference writes the new vectors into `embed` and then, in
//    the same step, overwrites `embed` with embed_avg / cluster_size, so a
//    replacement never survives. Here a replaced code also gets
//    cluster_size = threshold and embed_avg = vector * threshold, so the EMA
//    normalization keeps it.
//  - residuals (facebookresearch/encodec issue 25): the reference subtracts the
//    straight-through output from the residual, which cuts the encoder off from
//    every codebook's commitment loss but the first. Here each residual uses the
//    detached codeword and the straight-through estimator is applied once to the
//    sum (as audiocraft does), so every commitment loss reaches the encoder.
//  - k-means init: the reference sets embed_avg to the means, but embed_avg is
//    a sum (embed = embed_avg / cluster_size), so its first updates shrink every
//    code by its count until the EMA forgets the init. Here embed_avg starts at
//    means * counts, so the codebook stays at the means.
#pragma once

#include <optional>

#include <torch/torch.h>

#include "encodec/train.h"

namespace encodec::train {

// The reference's kmeans(): `num_clusters` means drawn from `samples` [N, D]
// (randperm, or randint when N < num_clusters), then `iterations` Lloyd steps;
// a cluster that loses every sample keeps its mean. Returns the means and the
// last assignment's counts (float).
std::pair<torch::Tensor, torch::Tensor> kmeans(const torch::Tensor& samples, int64_t num_clusters,
                                               int iterations);

// How a codebook is used over some codes: the number of distinct entries and
// the perplexity exp(entropy) of their frequencies (1: one code for everything,
// `bins`: all equally often). A collapsed latent shows as values near 1.
struct CodebookUsage {
  int64_t distinct_codes = 0;
  double perplexity = 0;
};
// codes: any shape, values in [0, bins).
CodebookUsage codebook_usage(const torch::Tensor& codes, int64_t bins);

class EuclideanCodebookImpl : public torch::nn::Module {
 public:
  EuclideanCodebookImpl(int64_t dim, int64_t bins, const CodebookOptions& options);

  // x: [N, dim] -> nearest entry per row [N] (the reference's distance, ties to the lowest index).
  torch::Tensor quantize(const torch::Tensor& x) const;
  // Training step on x [N, dim] (in training mode: k-means on the first call,
  // dead-code replacement, EMA update). Returns the codewords of x's nearest
  // entries, chosen before the update, and their indices.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x);

  // k-means on x [N, dim] now, whether or not the codebook was initialized
  // (the trainer's init after its warm-up); sets `inited`. The cluster sizes
  // are the k-means counts times count_scale (see init_codebooks).
  void init_from(const torch::Tensor& x, double count_scale = 1.0);

  torch::Tensor inited, cluster_size, embed, embed_avg;  // the buffers

 private:
  void init_embed(const torch::Tensor& x);
  void expire_codes(const torch::Tensor& x);
  int64_t bins_;
  CodebookOptions options_;
};
TORCH_MODULE(EuclideanCodebook);

// One codebook with its commitment loss (child `_codebook`).
class VectorQuantizationImpl : public torch::nn::Module {
 public:
  VectorQuantizationImpl(int64_t dim, int64_t bins, const CodebookOptions& options);
  struct Output {
    torch::Tensor quantized;  // [B, D, T], the codewords (no gradient)
    torch::Tensor codes;      // [B, T]
    torch::Tensor commitment_loss;  // scalar: weight * mse(codewords, x), gradient to x
  };
  // x: [B, D, T]
  Output forward(const torch::Tensor& x);
  EuclideanCodebook codebook() const { return codebook_; }

 private:
  EuclideanCodebook codebook_{nullptr};
  double commitment_weight_;
};
TORCH_MODULE(VectorQuantization);

// ResidualVectorQuantizer (vq.py) with its ResidualVectorQuantization (child
// `vq`, codebooks `vq.layers.<i>`).
class ResidualVectorQuantizerImpl : public torch::nn::Module {
 public:
  ResidualVectorQuantizerImpl(int64_t dimension, int64_t n_q, int64_t bins, const CodebookOptions& options);

  struct Output {
    torch::Tensor quantized;  // [B, D, T]; in training x + (sum - x).detach()
    torch::Tensor codes;      // [n_q_used, B, T]
    torch::Tensor penalty;    // mean of the codebooks' commitment losses
  };
  // x: [B, D, T] through the first `n_q_used` codebooks. In training mode the
  // codebooks update; in eval mode this is the inference quantizer.
  Output forward(const torch::Tensor& x, int64_t n_q_used);

  // k-means init of every codebook from latents x [B, D, T]: the first on x,
  // each next one on the residuals the ones before leave (so that codebook i
  // learns what 0..i-1 miss). The trainer calls it once, after the warm-up
  // without quantizer, on the latents of the warmed-up encoder.
  // `vectors_per_step` (the latent vectors of one training batch; 0: as many
  // as x has) scales the k-means counts to what the EMA of the cluster sizes
  // holds during training, so that the dead-code threshold means the same from
  // the first step: counts from an init batch larger than the training batches
  // would keep unused codes alive for hundreds of steps, and the latent drifts
  // away from the codebook faster than that (then every vector takes one code).
  void init_codebooks(const torch::Tensor& x, int64_t vectors_per_step = 0);

  int64_t n_q() const { return static_cast<int64_t>(layers_->size()); }
  std::shared_ptr<VectorQuantizationImpl> layer(int64_t i) const { return layers_->ptr<VectorQuantizationImpl>(i); }

 private:
  torch::nn::ModuleList layers_{nullptr};
};
TORCH_MODULE(ResidualVectorQuantizer);

}  // namespace encodec::train
