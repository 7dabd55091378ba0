// Residual vector quantization on the fast path: one fused matrix product per
// codebook (|e|^2 - 2 x.e, dropping the |x|^2 every candidate shares) and an
// argmin, on time-major rows. Same codes as the reference but for near-ties.
#pragma once

#include <torch/torch.h>

#include "quantization/vq.h"

namespace encodec::fast {

// x: [B, D, T] (any strides) -> codes [n_q_used, B, T] (int64).
torch::Tensor quantize_residual(const ResidualVectorQuantizer& quantizer, const torch::Tensor& x,
                                int64_t n_q_used);

}  // namespace encodec::fast
