// Residual vector quantizer (encodec/quantization/vq.py, core_vq.py): n_q
// Euclidean codebooks applied in turn to the residual; inference only.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "modules/weights.h"

namespace encodec {

class EuclideanCodebook {
 public:
  // Reads `<prefix>._codebook.embed` [bins, dim]; the training buffers are skipped.
  EuclideanCodebook(WeightLoader& weights, const std::string& prefix, int64_t bins, int64_t dim);

  // x: [N, dim] -> nearest entry per row [N] (int64), ties to the lowest index.
  torch::Tensor quantize(const torch::Tensor& x) const;
  // indices (any shape) -> embeddings (shape + [dim])
  torch::Tensor dequantize(const torch::Tensor& indices) const;

  const torch::Tensor& embed() const { return embed_; }
  const torch::Tensor& embed_squared_norms() const { return embed_squared_norms_; }

 private:
  torch::Tensor embed_;                // [bins, dim]
  torch::Tensor embed_squared_norms_;  // [1, bins], precomputed once
};

class ResidualVectorQuantizer {
 public:
  // Reads `<prefix>.vq.layers.<i>._codebook.*` for i < n_q.
  ResidualVectorQuantizer(WeightLoader& weights, const std::string& prefix, int64_t n_q,
                          int64_t bins, int64_t dimension);

  // x: [B, D, T] -> codes [n_q_used, B, T] (int64)
  torch::Tensor encode(const torch::Tensor& x, int64_t n_q_used) const;
  // codes: [K, B, T] -> [B, D, T]
  torch::Tensor decode(const torch::Tensor& codes) const;

  int64_t n_q() const { return static_cast<int64_t>(codebooks_.size()); }
  int64_t bins() const { return bins_; }
  int64_t dimension() const { return dimension_; }
  const std::vector<EuclideanCodebook>& codebooks() const { return codebooks_; }

 private:
  int64_t bins_, dimension_;
  std::vector<EuclideanCodebook> codebooks_;
};

}  // namespace encodec
