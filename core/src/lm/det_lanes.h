// The deterministic LM kernels' vector operations, written once over a 16-lane
// vector type L (det_tier.h): L::V (16 floats), L::M (16 lane flags) and
//   zero, set1, load, load_n (zeros past n), store, store_n, keep_n (zeros past
//   n), add, sub, mul, div, min, max, less, select, pow2 (2^n of integral
//   values), to_array.
// Each tier's file defines L for its instructions and includes this header; the
// templates live in an anonymous namespace, so every tier has its own copy
// compiled for its own instructions.
#pragma once

#include <cstdint>

#include "lm/det_tier.h"

namespace encodec::lm::det {
namespace {

inline int smaller(int a, int b) { return a < b ? a : b; }

// 16 lane values to one: lanes i and i + 8 added, then i and i + 4, i + 2, i + 1.
inline float fold16(float* lanes) {
  for (int step = 8; step >= 1; step /= 2) {
    for (int i = 0; i < step; ++i) lanes[i] = lanes[i] + lanes[i + step];
  }
  return lanes[0];
}

template <class L>
typename L::V exp_lanes(typename L::V x) {
  using V = typename L::V;
  // Below -86, exp(x) < 2^-124: 0 (no subnormal result or intermediate survives).
  const typename L::M tiny = L::less(x, L::set1(-86.0f));
  x = L::min(L::max(x, L::set1(-87.0f)), L::set1(88.0f));
  // n = round-to-nearest-even(x log2 e) by the 1.5 * 2^23 trick.
  const V magic = L::set1(12582912.0f);
  const V n = L::sub(L::add(L::mul(x, L::set1(1.44269504088896341f)), magic), magic);
  // r = x - n ln 2, ln 2 in two parts (the first exact in 9 bits).
  V r = L::sub(x, L::mul(n, L::set1(0.693359375f)));
  r = L::sub(r, L::mul(n, L::set1(-2.12194440e-4f)));
  V p = L::set1(1.9875691500e-4f);
  p = L::add(L::mul(p, r), L::set1(1.3981999507e-3f));
  p = L::add(L::mul(p, r), L::set1(8.3334519073e-3f));
  p = L::add(L::mul(p, r), L::set1(4.1665795894e-2f));
  p = L::add(L::mul(p, r), L::set1(1.6666665459e-1f));
  p = L::add(L::mul(p, r), L::set1(5.0000001201e-1f));
  const V e = L::add(L::add(L::mul(p, L::mul(r, r)), r), L::set1(1.0f));
  return L::select(tiny, L::zero(), L::mul(e, L::pow2(n)));
}

template <class L>
typename L::V gelu_lanes(typename L::V x) {
  using V = typename L::V;
  const V z = L::mul(x, L::set1(0.707106781186547524f));
  const V a = L::max(z, L::sub(L::zero(), z));  // |z|
  // erfc(a) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-a^2), t = 1 / (1 + p a).
  const V t = L::div(L::set1(1.0f), L::add(L::set1(1.0f), L::mul(L::set1(0.3275911f), a)));
  V poly = L::set1(1.061405429f);
  poly = L::add(L::mul(poly, t), L::set1(-1.453152027f));
  poly = L::add(L::mul(poly, t), L::set1(1.421413741f));
  poly = L::add(L::mul(poly, t), L::set1(-0.284496736f));
  poly = L::add(L::mul(poly, t), L::set1(0.254829592f));
  poly = L::mul(poly, t);
  const V erfc = L::mul(poly, exp_lanes<L>(L::sub(L::zero(), L::mul(a, a))));
  // Phi(x) = erfc(|z|) / 2 below 0, 1 - erfc(|z|) / 2 above.
  const V half = L::mul(erfc, L::set1(0.5f));
  const V cdf = L::select(L::less(z, L::zero()), half, L::sub(L::set1(1.0f), half));
  return L::mul(x, cdf);
}

template <class L, int kPanels>
void linear_panels(const float* x, const float* packed, const float* bias, int columns, int depth,
                   int first_panel, float* y) {
  typename L::V acc[kPanels];
  for (int p = 0; p < kPanels; ++p) {
    const int column = (first_panel + p) * kPanel;
    acc[p] = L::load_n(bias + column, smaller(kPanel, columns - column));
  }
  const float* w = packed + static_cast<int64_t>(first_panel) * depth * kPanel;
  for (int k = 0; k < depth; ++k) {
    const typename L::V xk = L::set1(x[k]);
    for (int p = 0; p < kPanels; ++p) {
      acc[p] = L::add(acc[p], L::mul(xk, L::load(w + (static_cast<int64_t>(p) * depth + k) * kPanel)));
    }
  }
  for (int p = 0; p < kPanels; ++p) {
    const int column = (first_panel + p) * kPanel;
    L::store_n(y + column, acc[p], smaller(kPanel, columns - column));
  }
}

template <class L>
void linear(const float* x, const float* packed, const float* bias, int columns, int depth,
            float* y) {
  // Panels side by side: independent chains hide the add latency.
  constexpr int kGroup = L::kLinearPanels;
  const int panels = (columns + kPanel - 1) / kPanel;
  int p = 0;
  for (; p + kGroup <= panels; p += kGroup) linear_panels<L, kGroup>(x, packed, bias, columns, depth, p, y);
  for (; p < panels; ++p) linear_panels<L, 1>(x, packed, bias, columns, depth, p, y);
}

template <class L>
void attention_scores(const float* q, const float* keys_t, int64_t key_stride, int count,
                      int head_dim, float* scores) {
  constexpr int kBlocks = 4;  // 64 keys at once
  for (int j0 = 0; j0 < count; j0 += kBlocks * 16) {
    typename L::V acc[kBlocks];
    int valid[kBlocks];
    for (int b = 0; b < kBlocks; ++b) {
      acc[b] = L::zero();
      const int left = count - j0 - 16 * b;
      valid[b] = left < 0 ? 0 : smaller(16, left);
    }
    for (int d = 0; d < head_dim; ++d) {
      const typename L::V qd = L::set1(q[d]);
      const float* row = keys_t + d * key_stride + j0;
      for (int b = 0; b < kBlocks; ++b) {
        if (valid[b] > 0) acc[b] = L::add(acc[b], L::mul(qd, L::load_n(row + 16 * b, valid[b])));
      }
    }
    for (int b = 0; b < kBlocks; ++b) {
      if (valid[b] > 0) L::store_n(scores + j0 + 16 * b, acc[b], valid[b]);
    }
  }
}

template <class L>
void attention_values(const float* weights, int64_t weight_stride, const float* values, int count,
                      int heads, int head_dim, bool accumulate, float* out) {
  const int dim = heads * head_dim;
  const int blocks_per_head = (head_dim + 15) / 16;
  // Up to kMax (head, block) accumulators advance together over the keys.
  constexpr int kMax = 8;
  const int total = heads * blocks_per_head;
  for (int first = 0; first < total; first += kMax) {
    const int n = smaller(kMax, total - first);
    typename L::V acc[kMax];
    int offset[kMax], valid[kMax];
    const float* head_weights[kMax];
    for (int i = 0; i < n; ++i) {
      const int h = (first + i) / blocks_per_head, b = (first + i) % blocks_per_head;
      offset[i] = h * head_dim + 16 * b;
      valid[i] = smaller(16, head_dim - 16 * b);
      head_weights[i] = weights + h * weight_stride;
      acc[i] = accumulate ? L::load_n(out + offset[i], valid[i]) : L::zero();
    }
    for (int j = 0; j < count; ++j) {
      const float* row = values + static_cast<int64_t>(j) * dim;
      for (int i = 0; i < n; ++i) {
        acc[i] = L::add(acc[i], L::mul(L::set1(head_weights[i][j]), L::load_n(row + offset[i], valid[i])));
      }
    }
    for (int i = 0; i < n; ++i) L::store_n(out + offset[i], acc[i], valid[i]);
  }
}

template <class L>
void softmax(float* x, int n) {
  using V = typename L::V;
  // The maximum does not depend on the order it is taken in.
  float max_value = x[0];
  int i = 0;
  if (n >= 16) {
    V m = L::load(x);
    for (i = 16; i + 16 <= n; i += 16) m = L::max(m, L::load(x + i));
    float lanes[16];
    L::to_array(m, lanes);
    for (const float lane : lanes) max_value = lane > max_value ? lane : max_value;
  }
  for (; i < n; ++i) max_value = x[i] > max_value ? x[i] : max_value;
  const V max_vec = L::set1(max_value);
  V sums = L::zero();
  for (i = 0; i < n; i += 16) {
    const int valid = smaller(16, n - i);
    const V e = L::keep_n(exp_lanes<L>(L::sub(L::load_n(x + i, valid), max_vec)), valid);
    L::store_n(x + i, e, valid);
    sums = L::add(sums, e);
  }
  float lanes[16];
  L::to_array(sums, lanes);
  const V sum = L::set1(fold16(lanes));
  for (i = 0; i < n; i += 16) {
    const int valid = smaller(16, n - i);
    L::store_n(x + i, L::div(L::load_n(x + i, valid), sum), valid);
  }
}

template <class L, typename L::V (*kFunction)(typename L::V)>
void map(const float* x, float* y, int n) {
  for (int i = 0; i < n; i += 16) {
    const int valid = smaller(16, n - i);
    L::store_n(y + i, kFunction(L::load_n(x + i, valid)), valid);
  }
}

template <class L>
const TierKernels& kernels_of() {
  static const TierKernels kernels = {&linear<L>,  &attention_scores<L>,
                                      &attention_values<L>, &softmax<L>,
                                      &map<L, &gelu_lanes<L>>, &map<L, &exp_lanes<L>>};
  return kernels;
}

}  // namespace
}  // namespace encodec::lm::det
