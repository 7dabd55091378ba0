// Kernels that round exactly as the operations the reference LM runs on: LibTorch
// 1.13's addmm/baddbmm/bmm on OpenBLAS 0.3.21 with its SkylakeX kernels, and
// ATen's AVX2 softmax, layer norm and sin/cos (GELU stays LibTorch's own call: it
// runs oneDNN's JIT code). A float sum's result depends on its order and on where
// products are fused (FMA), so each function here reproduces one kernel's order:
//
//  - "chain": OpenBLAS's regular sgemm kernels accumulate each output as one FMA
//    chain over k from 0, then add it to C (LibTorch's addmm puts the bias in C).
//  - "small TN": for small products (sgemm_small_kernel_permit_skylakex), the
//    transposed-A kernel splits k over 16 lanes (lane l takes k = l, l + 16, ...),
//    each an FMA chain, then reduces the lanes with a fixed shuffle tree.
//  - "naive": LibTorch's own bmm loop for tiny batched products (fewer than 400
//    multiply-adds per matrix): an unfused multiply, then an add, per term.
//
// Everything here needs AVX-512 (the SkylakeX kernels use it); the model checks
// cpu_supported() and runs a self-check against LibTorch before using them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace encodec::lm::exact {

// AVX-512F/DQ/VL and AVX2/FMA, and the Sleef functions LibTorch's AVX2 kernels call.
bool cpu_supported();
std::string cpu_unsupported_reason();

// Whether OpenBLAS 0.3.21 hands C = A^T B (m x n, inner size k; LibTorch's addmm
// of row-major inputs by a transposed weight) to its small-matrix TN kernel.
bool small_tn_permitted(int64_t m, int64_t n, int64_t k);
// Same for C = A B (the bmm of attention weights by values).
bool small_nn_permitted(int64_t m, int64_t n, int64_t k);

// y = c + W x for one input row, W [m, k] (PyTorch's Linear weight layout), with
// W packed once by the matching pack_* function (panels read front to back):
//   linear_chain: the regular kernel's rounding.
//   linear_small_tn: the small TN kernel's rounding.
std::vector<float> pack_chain_weights(const float* w, int m, int k);
std::vector<float> pack_small_tn_weights(const float* w, int m, int k);
void linear_chain(const float* x, const float* packed, const float* c, float* y, int m, int k);
void linear_small_tn(const float* x, const float* packed, const float* c, float* y, int m, int k);

// Attention scores of one head: scores[j] = q . key_j for the S keys, key j's
// element d at keys_t[d * key_stride + slot[j]] (keys stored transposed), as
// baddbmm computes them with a zero mask: naive when head_dim * S < 400, else
// the regular kernel's chain (head_dim < 32: OpenBLAS's small TN kernel never
// takes it).
void attention_scores(const float* q, const float* keys_t, int64_t key_stride, const int* slot,
                      int num_keys, int head_dim, float* scores);

// One head's output: out[d] = sum_j weights[j] * value_j[d], value j's element d
// at values[slot[j] * value_stride + d], as bmm computes it: naive when
// head_dim * S < 400, else OpenBLAS's small NN kernel (beta = 0).
void attention_values(const float* weights, const float* values, int64_t value_stride,
                      const int* slot, int num_keys, int head_dim, float* out);

// Whether every output element of the value product is a plain chain over the
// keys (LibTorch's loop, or OpenBLAS's rows other than the dot-style ones): then
// attention_values_all_heads computes all heads at once, with weights_t [S,
// heads] (key-major) and values as above. Requires at most 16 heads and dim <= 256.
bool attention_values_are_chains(int num_keys, int head_dim);
void attention_values_all_heads(const float* weights_t, const float* values, int64_t value_stride,
                                const int* slot, int num_keys, int heads, int head_dim, float* out);

// torch.softmax(logits, dim=1) of the reference's [1, card, K, 1] logits on one
// thread: rows[k] holds codebook k's card logits and receives its probabilities.
// ATen's AVX2 kernel vectorizes 8 codebooks at a time (Sleef's expf) and runs
// the remaining K % 8 with std::exp.
void softmax_over_codebooks(float* rows, int num_codebooks, int card);

// ATen's AVX2 kernels on one row (8-lane vectors, as LibTorch 1.13 dispatches on
// AVX2 CPUs), each in its own rounding order:
//  - layer_norm: RowwiseMoments (Welford over 8 lanes in chunks of 16 vectors,
//    then the lanes combined; no fused multiply-adds), rstd = 1 / sqrt(var +
//    eps), then y = fma(fma(x, rstd, -rstd * mean), gamma, beta).
//  - softmax_last_dim (in place): exp(x - max) by Sleef, summed lane-wise then
//    across lanes by a shuffle tree, times 1 / sum.
void layer_norm(const float* x, const float* gamma, const float* beta, float eps, int n, float* y);
void softmax_last_dim(float* x, int n);

// The reference's sinusoidal embedding at `position`: cat(cos(phase), sin(phase))
// with phase = position / divisors[i] (float32), cos and sin as ATen's vectorized
// kernels compute them (Sleef, 8 lanes, the tail in a partial vector).
void sin_embedding(int64_t position, const float* divisors, int half_dim, float* out);

}  // namespace encodec::lm::exact
