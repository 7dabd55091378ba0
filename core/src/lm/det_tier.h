// The operations of the deterministic LM kernels ("det1", det_kernels.h) that
// run on vector instructions, as one table per CPU tier. Each tier's table is
// the same templates (det_lanes.h) instantiated over its 16-lane vector type, in
// a file compiled for its instructions with -ffp-contract=off: every output is
// the same sequence of IEEE single-precision operations (a multiply rounded, then
// an add, never fused), in the same order, on every tier.
//
// Kept free of the standard library's templates: each tier's file is compiled
// for other instructions, and an inline function shared with the rest of the
// program could be linked from the wrong one.
#pragma once

#include <cstdint>

namespace encodec::lm::det {

// Columns of a packed weight matrix per panel (pack_columns in det_kernels.h).
inline constexpr int kPanel = 16;

struct TierKernels {
  // y[c] = bias[c] + x[0] w[0][c] + x[1] w[1][c] + ... (k ascending), for c <
  // columns; `packed` in pack_columns' layout (panels of 16 columns, k-major).
  void (*linear)(const float* x, const float* packed, const float* bias, int columns, int depth,
                 float* y);
  // scores[j] = 0 + q[0] key_j[0] + q[1] key_j[1] + ... (d ascending) for j <
  // count, key j's element d at keys_t[d * key_stride + j].
  void (*attention_scores)(const float* q, const float* keys_t, int64_t key_stride, int count,
                           int head_dim, float* scores);
  // For each head h and d < head_dim: out[h * head_dim + d] (0 unless
  // `accumulate`) + w_h[0] value_0[..] + w_h[1] value_1[..] + ... (j ascending),
  // w_h[j] = weights[h * weight_stride + j], value j at values + j * heads * head_dim.
  void (*attention_values)(const float* weights, int64_t weight_stride, const float* values,
                           int count, int heads, int head_dim, bool accumulate, float* out);
  // In place: x[i] = e_i / sum with e_i = exp(x[i] - max x); the sum is 16 lane
  // sums (lane l: e_l + e_(l+16) + ... in order) folded by a fixed tree.
  void (*softmax)(float* x, int n);
  // y[i] = x[i] Phi(x[i]) with the normal CDF from erfc by Abramowitz & Stegun
  // 7.1.26 (absolute error below 1.5e-7) and exp (below).
  void (*gelu)(const float* x, float* y, int n);
  // y[i] = exp(x[i]): Cephes' polynomial on x - n ln 2, scaled by 2^n; 0 below -86.
  void (*exp)(const float* x, float* y, int n);
};

const TierKernels& portable_tier_kernels();
const TierKernels& avx2_tier_kernels();    // needs AVX2
const TierKernels& avx512_tier_kernels();  // needs AVX-512F

}  // namespace encodec::lm::det
