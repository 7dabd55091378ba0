// Residual vector quantization on the fast path: per codebook one ordered
// product (|e|^2 - 2 x.e, dropping the |x|^2 every candidate shares) and an
// argmin, on time-major rows. Same codes as the reference but for near-ties;
// and because the product is the ordered kernel, a row gets the same codes
// alone, in a whole file or stacked with other streams.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "fast/ordered_matrix.h"
#include "quantization/vq.h"

namespace encodec::fast {

class Quantizer {
 public:
  // `precision`: of the distance products (the search); the residuals and the
  // decoded embeddings stay fp32.
  explicit Quantizer(const ResidualVectorQuantizer& reference,
                     Precision precision = Precision::kFp32);

  int64_t dimension() const { return dimension_; }
  int64_t bins() const { return bins_; }
  int64_t max_codebooks() const { return static_cast<int64_t>(codebooks_.size()); }

  // rows [count, D] time-major -> codes[level * code_stride + row] for level <
  // n_q_used. `residual` holds count * D floats and `scores` count * bins.
  // Allocates nothing.
  void encode(const float* rows, int64_t count, int64_t n_q_used, int64_t* codes,
              int64_t code_stride, float* residual, float* scores) const;
  // x: [B, D, T] (any strides) -> codes [n_q_used, B, T] (int64).
  torch::Tensor encode(const torch::Tensor& x, int64_t n_q_used) const;

  // codes[level * code_stride] for level < n_q_used -> one embedding [D] (the
  // levels' entries summed in level order, as the reference).
  void decode(const int64_t* codes, int64_t code_stride, int64_t n_q_used, float* embedding) const;

 private:
  const ResidualVectorQuantizer& reference_;
  int64_t dimension_, bins_;
  std::vector<OrderedMatrix> codebooks_;  // -2 * embed, as [D, bins]
};

}  // namespace encodec::fast
