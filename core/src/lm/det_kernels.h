// The deterministic LM kernels ("det1"): every operation that decides the LM's
// probabilities computed by this project's own code in a fixed order, so that
// they are the same bits on every x86-64 CPU (AVX-512, AVX2 or neither) and
// any thread count. The order is defined here, not by a BLAS, LibTorch or libm:
//  - products and sums: a multiply rounded, then an add (never fused), in the
//    order each function states; everything single precision;
//  - exp (softmaxes, GELU) and erfc (GELU): fixed polynomials (det_tier.h);
//  - sin/cos of the positions and the positions' divisors: fixed series in
//    double precision (exact range reduction with fused multiply-adds, which
//    IEEE 754 defines to one rounding), then rounded to float.
// The vector operations run on the tier's table (det_tier.h); the rest here is
// scalar code, compiled with -ffp-contract=off, that every tier shares.
// The x87 unit is never used; the steps run with the default SSE control word
// (round to nearest, no flush-to-zero: lm::DetFloatScope).
#pragma once

#include <cstdint>
#include <vector>

#include "fast/cpu_tier.h"
#include "lm/det_tier.h"

namespace encodec::lm::det {

// The table of `isa` (which the CPU must have).
const TierKernels& tier_kernels(fast::VectorIsa isa);

// A Linear weight [n, k] (row-major, PyTorch's [out, in]) in panels of 16
// columns: panel p holds, for each k, the weights of outputs 16 p .. 16 p + 15
// (zeros past n).
std::vector<float> pack_columns(const float* w, int n, int k);
// The same with the n rows anywhere (`rows[i]`: k floats): several Linear
// layers packed as one, with no copy of their weights first.
std::vector<float> pack_columns(const float* const* rows, int n, int k);

// y = (x - mean) * rstd * gamma + beta, mean = (x[0] + x[1] + ...) / n, var =
// ((x[0] - mean)^2 + ...) / n, rstd = 1 / sqrt(var + eps) (sqrt is exact-rounded).
void layer_norm(const float* x, const float* gamma, const float* beta, float eps, int n, float* y);

// The reference's max_period ** (i / (half_dim - 1)), i < half_dim, from this
// file's own double-precision log and exp, rounded to float.
std::vector<float> position_divisors(int half_dim, int max_period);
// out = cat(cos(phase), sin(phase)) with phase = float(position) / divisors[i]
// (float division, as the reference), cos and sin in double, rounded to float.
void sin_embedding(int64_t position, const float* divisors, int half_dim, float* out);

// The double-precision functions above (exposed for tests).
double exp_double(double x);
double log_double(double x);  // x > 0
void sin_cos_double(double x, double* sine, double* cosine);

// Sets the SSE control word to its default (round to nearest, no denormals
// flushed, exceptions masked) for the scope: a library that changed it on this
// thread cannot change the LM's results.
class DetFloatScope {
 public:
  DetFloatScope();
  ~DetFloatScope();
  DetFloatScope(const DetFloatScope&) = delete;
  DetFloatScope& operator=(const DetFloatScope&) = delete;

 private:
  unsigned saved_;
};

}  // namespace encodec::lm::det
