#include "lm/exact_kernels.h"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <utility>
#include <cmath>
#include <vector>

// GCC warns about the undefined upper lanes that its own masked-load intrinsics
// start from; they are never read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Everything below that uses AVX-512 is compiled for it function by function;
// the callers check cpu_supported() first.
#define EXACT_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))

namespace encodec::lm::exact {
namespace {

// Keeps the compiler from fusing a multiply with the following add (C++ allows
// contraction into an FMA where the target has one): the "naive" kernels round
// the product and the sum separately.
template <typename T>
EXACT_TARGET inline T opaque(T value) {
  asm volatile("" : "+v"(value));
  return value;
}

// Sleef, as LibTorch loaded it (LibTorch's AVX2 kernels call these dispatchers).
using SleefF8 = __m256 (*)(__m256);
struct Sleef {
  SleefF8 expf8 = nullptr, cosf8 = nullptr, sinf8 = nullptr;
  Sleef() {
    expf8 = reinterpret_cast<SleefF8>(dlsym(RTLD_DEFAULT, "Sleef_expf8_u10"));
    cosf8 = reinterpret_cast<SleefF8>(dlsym(RTLD_DEFAULT, "Sleef_cosf8_u10"));
    sinf8 = reinterpret_cast<SleefF8>(dlsym(RTLD_DEFAULT, "Sleef_sinf8_u10"));
  }
  bool complete() const { return expf8 && cosf8 && sinf8; }
};

const Sleef& sleef() {
  static const Sleef instance;
  return instance;
}

__mmask16 tail_mask(int count) { return static_cast<__mmask16>((1u << count) - 1); }

// sgemm_small_kernel_{tn,nn}_skylakex's REDUCE_M4: the 16 lanes of four
// accumulators to four sums, through OpenBLAS's unpack/shuffle tree.
EXACT_TARGET inline __m128 reduce_m4(__m512 rr0, __m512 rr1, __m512 rr2, __m512 rr3) {
  __m512 r0 = _mm512_unpacklo_ps(rr0, rr1), r1 = _mm512_unpackhi_ps(rr0, rr1);
  __m512 r2 = _mm512_unpacklo_ps(rr2, rr3), r3 = _mm512_unpackhi_ps(rr2, rr3);
  __m512 t0 = _mm512_shuffle_ps(r0, r2, _MM_SHUFFLE(1, 0, 1, 0));
  __m512 t1 = _mm512_shuffle_ps(r0, r2, _MM_SHUFFLE(3, 2, 3, 2));
  __m512 t2 = _mm512_shuffle_ps(r1, r3, _MM_SHUFFLE(1, 0, 1, 0));
  __m512 t3 = _mm512_shuffle_ps(r1, r3, _MM_SHUFFLE(3, 2, 3, 2));
  r0 = _mm512_add_ps(t0, t1);
  r1 = _mm512_add_ps(t2, t3);
  t0 = _mm512_add_ps(r0, r1);
  __m128 s0 = _mm512_extractf32x4_ps(t0, 0), s1 = _mm512_extractf32x4_ps(t0, 1);
  __m128 s2 = _mm512_extractf32x4_ps(t0, 2), s3 = _mm512_extractf32x4_ps(t0, 3);
  s0 = _mm_add_ps(s0, s1);
  s2 = _mm_add_ps(s2, s3);
  return _mm_add_ps(s0, s2);  // times alpha = 1: exact
}

// 16-lane FMA chain of a[i] * b[i] over i < k (lane l: i = l, l + 16, ...), the
// last partial block masked to zeros as OpenBLAS loads it.
EXACT_TARGET inline __m512 lane_chain(const float* a, const float* b, int k) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= k; i += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  }
  if (i < k) {
    const __mmask16 mask = tail_mask(k - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), acc);
  }
  return acc;
}

}  // namespace

bool cpu_supported() { return cpu_unsupported_reason().empty(); }

std::string cpu_unsupported_reason() {
  const std::pair<const char*, bool> features[] = {
      {"avx512f", __builtin_cpu_supports("avx512f")},   {"avx512dq", __builtin_cpu_supports("avx512dq")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")}, {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx2", __builtin_cpu_supports("avx2")},         {"fma", __builtin_cpu_supports("fma")}};
  for (const auto& [feature, present] : features) {
    if (!present) {
      return std::string("the CPU lacks ") + feature + " (OpenBLAS then runs other kernels)";
    }
  }
  if (!sleef().complete()) return "LibTorch's Sleef functions were not found in the process";
  return "";
}

bool small_tn_permitted(int64_t m, int64_t n, int64_t k) {
  // sgemm_small_kernel_permit_skylakex.c, transa && !transb.
  const double mnk = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (mnk > 100.0 * 100.0 * 100.0) return false;
  return !(m * n > 1200 || k < 32);
}

bool small_nn_permitted(int64_t m, int64_t n, int64_t k) {
  const double mnk = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  return mnk <= 100.0 * 100.0 * 100.0;
}

// Chain kernel layout: panels of 64 outputs; panel p holds, for each kk, the 64
// weights W[64 p + j][kk] (zero past m).
constexpr int kChainPanel = 64;
// Small TN layout: blocks of 16 rows; block b holds, for each 16-wide slice of
// k, the 16 rows' 16 weights (zero past m and past k: OpenBLAS's masked loads
// read zeros there too, and an FMA of zeros leaves an accumulator unchanged).
constexpr int kTnRows = 16;

std::vector<float> pack_chain_weights(const float* w, int m, int k) {
  const int panels = (m + kChainPanel - 1) / kChainPanel;
  std::vector<float> packed(static_cast<size_t>(panels) * k * kChainPanel, 0.0f);
  for (int i = 0; i < m; ++i) {
    const int panel = i / kChainPanel, j = i % kChainPanel;
    for (int kk = 0; kk < k; ++kk) {
      packed[(static_cast<size_t>(panel) * k + kk) * kChainPanel + j] = w[static_cast<size_t>(i) * k + kk];
    }
  }
  return packed;
}

std::vector<float> pack_small_tn_weights(const float* w, int m, int k) {
  const int blocks = (m + kTnRows - 1) / kTnRows, slices = (k + 15) / 16;
  std::vector<float> packed(static_cast<size_t>(blocks) * slices * kTnRows * 16, 0.0f);
  for (int i = 0; i < m; ++i) {
    const int block = i / kTnRows, r = i % kTnRows;
    for (int kk = 0; kk < k; ++kk) {
      const size_t at = ((static_cast<size_t>(block) * slices + kk / 16) * kTnRows + r) * 16 + kk % 16;
      packed[at] = w[static_cast<size_t>(i) * k + kk];
    }
  }
  return packed;
}

EXACT_TARGET void linear_chain(const float* x, const float* packed, const float* c, float* y, int m,
                               int k) {
  // Each output is one FMA chain in kk order; 64 outputs share a broadcast.
  const int panels = (m + kChainPanel - 1) / kChainPanel;
  for (int panel = 0; panel < panels; ++panel) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    const float* w = packed + static_cast<size_t>(panel) * k * kChainPanel;
    for (int kk = 0; kk < k; ++kk, w += kChainPanel) {
      const __m512 xv = _mm512_set1_ps(x[kk]);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 32), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 48), xv, a3);
    }
    const __m512 acc[4] = {a0, a1, a2, a3};
    for (int v = 0; v < 4; ++v) {
      const int i = panel * kChainPanel + 16 * v;
      if (i >= m) break;
      const __mmask16 mask = tail_mask(std::min(16, m - i));
      _mm512_mask_storeu_ps(y + i, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c + i), acc[v]));
    }
  }
}

EXACT_TARGET void linear_small_tn(const float* x, const float* packed, const float* c, float* y,
                                  int m, int k) {
  const int slices = (k + 15) / 16;
  // x with zeros past k (the kernel's masked load).
  thread_local std::vector<float> padded;
  padded.assign(static_cast<size_t>(slices) * 16, 0.0f);
  std::copy(x, x + k, padded.begin());
  const int m4 = m & ~3;
  const __m128 beta = _mm_set1_ps(1.0f);
  const int blocks = (m + kTnRows - 1) / kTnRows;
  for (int block = 0; block < blocks; ++block) {
    // Sixteen rows' lane chains at once (independent chains keep the FMA units
    // busy; each row still sums its own k = l, l + 16, ... in order).
    __m512 acc[kTnRows];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    const float* w = packed + static_cast<size_t>(block) * slices * kTnRows * 16;
    for (int s = 0; s < slices; ++s, w += kTnRows * 16) {
      const __m512 xv = _mm512_loadu_ps(padded.data() + 16 * s);
      for (int r = 0; r < kTnRows; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * r), xv, acc[r]);
    }
    const int first = block * kTnRows;
    for (int r = 0; r < kTnRows; r += 4) {
      const int i = first + r;
      if (i + 4 <= m4) {
        // vfmadd231ps (C), beta, s0: s0 + C * 1, one rounding.
        _mm_storeu_ps(y + i, _mm_fmadd_ps(_mm_loadu_ps(c + i), beta,
                                          reduce_m4(acc[r], acc[r + 1], acc[r + 2], acc[r + 3])));
        continue;
      }
      // Rows past the last multiple of 4: reduce_add, plus C.
      for (int q = 0; q < 4 && i + q < m; ++q) y[i + q] = _mm512_reduce_add_ps(acc[r + q]) + c[i + q];
    }
  }
}

EXACT_TARGET void attention_scores(const float* q, const float* keys_t, int64_t key_stride,
                                   const int* slot, int num_keys, int head_dim, float* scores) {
  const bool naive = static_cast<int64_t>(head_dim) * num_keys < 400;
  // Keys sit in runs of consecutive slots (a ring buffer wraps once at most):
  // vectorize over the keys of a run, four vectors of keys at a time (each
  // score keeps its own order over d).
  int j = 0;
  while (j < num_keys) {
    int run = 1;
    while (j + run < num_keys && slot[j + run] == slot[j] + run) ++run;
    const float* base = keys_t + slot[j];
    for (int r = 0; r < run; r += 64) {
      __mmask16 masks[4];
      __m512 acc[4];
      for (int v = 0; v < 4; ++v) {
        masks[v] = tail_mask(std::clamp(run - r - 16 * v, 0, 16));
        acc[v] = _mm512_setzero_ps();
      }
      for (int d = 0; d < head_dim; ++d) {
        const __m512 qd = _mm512_set1_ps(q[d]);
        const float* row = base + d * key_stride + r;
        for (int v = 0; v < 4; ++v) {
          const __m512 key = _mm512_maskz_loadu_ps(masks[v], row + 16 * v);
          acc[v] = naive ? _mm512_add_ps(acc[v], opaque(_mm512_mul_ps(qd, key)))
                         : _mm512_fmadd_ps(key, qd, acc[v]);
        }
      }
      // The zero mask plus the product (baddbmm: mask * 1 + 1 * acc).
      for (int v = 0; v < 4; ++v) {
        _mm512_mask_storeu_ps(scores + j + r + 16 * v, masks[v],
                              _mm512_add_ps(_mm512_setzero_ps(), acc[v]));
      }
    }
    j += run;
  }
}

EXACT_TARGET void attention_values(const float* weights, const float* values, int64_t value_stride,
                                   const int* slot, int num_keys, int head_dim, float* out) {
  const int64_t S = num_keys;
  if (static_cast<int64_t>(head_dim) * S < 400) {
    // LibTorch's bmm loop: acc += w[j] * v[j][d], product rounded, in j order.
    for (int d0 = 0; d0 < head_dim; d0 += 16) {
      const __mmask16 mask = tail_mask(std::min(16, head_dim - d0));
      __m512 acc = _mm512_setzero_ps();
      for (int j = 0; j < num_keys; ++j) {
        const __m512 v = _mm512_maskz_loadu_ps(mask, values + slot[j] * value_stride + d0);
        acc = _mm512_add_ps(acc, opaque(_mm512_mul_ps(_mm512_set1_ps(weights[j]), v)));
      }
      _mm512_mask_storeu_ps(out + d0, mask, acc);
    }
    return;
  }
  // sgemm_small_kernel_b0_nn_skylakex with M = head_dim, N = 1, K = S: rows in
  // blocks of 16 (and a remainder of more than 8, or any remainder when K < 32)
  // are FMA chains over j; a remainder of at most 8 rows with K >= 32 is
  // computed dot-style (16 lanes over j, then reduced).
  const int m16 = head_dim & ~15;
  const int remainder = head_dim - m16;
  const bool dot_style = remainder > 0 && remainder <= 8 && S >= 32;
  const int chain_rows = dot_style ? m16 : head_dim;
  for (int d0 = 0; d0 < chain_rows; d0 += 16) {
    const __mmask16 mask = tail_mask(std::min(16, chain_rows - d0));
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < num_keys; ++j) {
      const __m512 v = _mm512_maskz_loadu_ps(mask, values + slot[j] * value_stride + d0);
      acc = _mm512_fmadd_ps(v, _mm512_set1_ps(weights[j]), acc);
    }
    _mm512_mask_storeu_ps(out + d0, mask, acc);  // times alpha = 1, beta = 0
  }
  if (!dot_style) return;
  // The kernel copies those rows to a row-major buffer: row d holds v[j][d] over j.
  // Per thread, kept: the per-frame path allocates nothing once warmed up.
  thread_local std::vector<float> rows;
  rows.resize(static_cast<size_t>(remainder) * S);
  for (int r = 0; r < remainder; ++r) {
    for (int j = 0; j < num_keys; ++j) rows[r * S + j] = values[slot[j] * value_stride + m16 + r];
  }
  const int m4 = head_dim & ~3, m2 = head_dim & ~1;
  int i = m16;
  for (; i < m4; i += 4) {
    const float* row = rows.data() + static_cast<size_t>(i - m16) * S;
    const __m128 s = reduce_m4(lane_chain(row, weights, num_keys),
                               lane_chain(row + S, weights, num_keys),
                               lane_chain(row + 2 * S, weights, num_keys),
                               lane_chain(row + 3 * S, weights, num_keys));
    _mm_storeu_ps(out + i, s);
  }
  for (; i < m2; ++i) {
    out[i] = _mm512_reduce_add_ps(lane_chain(rows.data() + (i - m16) * S, weights, num_keys));
  }
  for (; i < head_dim; ++i) {
    out[i] = _mm512_reduce_add_ps(lane_chain(rows.data() + (i - m16) * S, weights, num_keys));
  }
}

bool attention_values_are_chains(int num_keys, int head_dim) {
  if (static_cast<int64_t>(head_dim) * num_keys < 400) return true;  // LibTorch's loop
  const int remainder = head_dim % 16;
  return remainder == 0 || remainder > 8 || num_keys < 32;
}

EXACT_TARGET void attention_values_all_heads(const float* weights_t, const float* values,
                                             int64_t value_stride, const int* slot, int num_keys,
                                             int heads, int head_dim, float* out) {
  const bool naive = static_cast<int64_t>(head_dim) * num_keys < 400;
  const int dim = heads * head_dim;
  // Every output element is its own chain over the keys; lanes of one vector may
  // belong to different heads, each taking its head's weight (a permute of the
  // heads' weights for key j).
  constexpr int kMaxVectors = 16;
  const int vectors = (dim + 15) / 16;
  __m512i head_of_lane[kMaxVectors];
  __mmask16 masks[kMaxVectors];
  __m512 acc[kMaxVectors];
  for (int v = 0; v < vectors; ++v) {
    alignas(64) int32_t heads_of[16];
    for (int l = 0; l < 16; ++l) heads_of[l] = std::min(dim - 1, 16 * v + l) / head_dim;
    head_of_lane[v] = _mm512_load_si512(heads_of);
    masks[v] = tail_mask(std::min(16, dim - 16 * v));
    acc[v] = _mm512_setzero_ps();
  }
  const __mmask16 head_mask = tail_mask(heads);
  for (int j = 0; j < num_keys; ++j) {
    const __m512 w = _mm512_maskz_loadu_ps(head_mask, weights_t + static_cast<size_t>(j) * heads);
    const float* row = values + slot[j] * value_stride;
    for (int v = 0; v < vectors; ++v) {
      const __m512 weight = _mm512_permutexvar_ps(head_of_lane[v], w);
      const __m512 value = _mm512_maskz_loadu_ps(masks[v], row + 16 * v);
      acc[v] = naive ? _mm512_add_ps(acc[v], opaque(_mm512_mul_ps(weight, value)))
                     : _mm512_fmadd_ps(value, weight, acc[v]);
    }
  }
  for (int v = 0; v < vectors; ++v) _mm512_mask_storeu_ps(out + 16 * v, masks[v], acc[v]);
}

EXACT_TARGET void softmax_over_codebooks(float* rows, int num_codebooks, int card) {
  const SleefF8 expf8 = sleef().expf8;
  const int vectorized = num_codebooks & ~7;
  thread_local std::vector<float> sums;  // kept: no allocation once warmed up
  sums.assign(static_cast<size_t>(num_codebooks), 0.0f);
  for (int k = 0; k < num_codebooks; ++k) {
    float* row = rows + static_cast<size_t>(k) * card;
    // The maximum does not depend on the order it is taken in.
    float max_value = row[0];
    int c = 0;
    if (card >= 16) {
      __m512 max_vec = _mm512_loadu_ps(row);
      for (c = 16; c + 16 <= card; c += 16) max_vec = _mm512_max_ps(max_vec, _mm512_loadu_ps(row + c));
      max_value = _mm512_reduce_max_ps(max_vec);
    }
    for (; c < card; ++c) max_value = std::max(max_value, row[c]);
    c = 0;
    if (k < vectorized) {
      // The kernel's lanes are codebooks; each lane's exp is Sleef's, whatever
      // its neighbours, so eight logits of one codebook go through at once.
      const __m256 max_vec = _mm256_set1_ps(max_value);
      for (; c + 8 <= card; c += 8) {
        _mm256_storeu_ps(row + c, expf8(_mm256_sub_ps(_mm256_loadu_ps(row + c), max_vec)));
      }
      if (c < card) {
        alignas(32) float tail[8] = {0};
        for (int t = c; t < card; ++t) tail[t - c] = row[t] - max_value;
        alignas(32) float result[8];
        _mm256_store_ps(result, expf8(_mm256_load_ps(tail)));
        for (int t = c; t < card; ++t) row[t] = result[t - c];
      }
    } else {
      for (; c < card; ++c) row[c] = std::exp(row[c] - max_value);
    }
  }
  // Sums in order over the card entries, eight codebooks' chains interleaved.
  for (int c = 0; c < card; ++c) {
    for (int k = 0; k < num_codebooks; ++k) sums[k] += rows[static_cast<size_t>(k) * card + c];
  }
  for (int k = 0; k < num_codebooks; ++k) {
    float* row = rows + static_cast<size_t>(k) * card;
    const __m512 sum = _mm512_set1_ps(sums[k]);
    int c = 0;
    for (; c + 16 <= card; c += 16) _mm512_storeu_ps(row + c, _mm512_div_ps(_mm512_loadu_ps(row + c), sum));
    for (; c < card; ++c) row[c] = row[c] / sums[k];
  }
}

// ------------------------------------------------------------------ ATen AVX2

namespace {

// Vectorized<float>::loadu(ptr, count) / store(ptr, count) on AVX2: the
// missing lanes read as zeros and are not written.
EXACT_TARGET inline __m256 load_partial(const float* p, int count) {
  return _mm512_castps512_ps256(_mm512_maskz_loadu_ps(tail_mask(count), p));
}
EXACT_TARGET inline void store_partial(float* p, __m256 v, int count) {
  _mm512_mask_storeu_ps(p, tail_mask(count), _mm512_castps256_ps512(v));
}

int ceil_log2(int64_t x) {
  if (x <= 2) return 1;  // ATen's CeilLog2
  return 64 - __builtin_clzll(static_cast<uint64_t>(x) - 1);
}

// moments_utils.h AddMomentsVec / AddMoments, unfused.
EXACT_TARGET inline void add_moments_vec(int64_t m0_add, __m256 m1_add, __m256 m2_add, int64_t& m0,
                                         __m256& m1, __m256& m2) {
  const int64_t n = m0 + m0_add;
  const float c = n == 0 ? 0.0f : static_cast<float>(m0_add) / static_cast<float>(n);
  const __m256 c_vec = _mm256_set1_ps(c);
  const __m256 delta = _mm256_sub_ps(m1_add, m1);
  m1 = _mm256_add_ps(m1, opaque(_mm256_mul_ps(c_vec, delta)));
  const __m256 term = opaque(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(delta, delta), c_vec),
                                           _mm256_set1_ps(static_cast<float>(m0))));
  m2 = _mm256_add_ps(m2, _mm256_add_ps(m2_add, term));
  m0 = n;
}

EXACT_TARGET inline void add_moments(int64_t m0_add, float m1_add, float m2_add, int64_t& m0,
                                     float& m1, float& m2) {
  const int64_t n = m0 + m0_add;
  const float c = n == 0 ? 0.0f : static_cast<float>(m0_add) / static_cast<float>(n);
  const float delta = m1_add - m1;
  m1 = m1 + opaque(c * delta);
  m2 = m2 + (m2_add + opaque(delta * delta * c * static_cast<float>(m0)));
  m0 = n;
}

// RowwiseMoments (ddof 0): Welford per lane over chunks of 16 vectors,
// chunks merged in a binary cascade, the tail and the lanes merged last.
EXACT_TARGET std::pair<float, float> rowwise_moments(const float* X, int64_t N) {
  constexpr int64_t kChunk = 16;
  const int64_t n = N / 8;
  const int64_t m = (n + kChunk - 1) / kChunk;
  const int depth = ceil_log2(m);
  int64_t m0_stk[64] = {0};
  __m256 m1_stk[64], m2_stk[64];
  for (int i = 0; i < depth; ++i) m1_stk[i] = m2_stk[i] = _mm256_setzero_ps();
  for (int64_t i = 0; i < m; ++i) {
    const float* X_ptr = X + i * kChunk * 8;
    const int64_t m0 = std::min(kChunk, n - i * kChunk);
    __m256 m1 = _mm256_setzero_ps(), m2 = _mm256_setzero_ps();
    for (int64_t j = 0; j < m0; ++j) {
      const __m256 x = _mm256_loadu_ps(X_ptr + j * 8);
      const __m256 delta = _mm256_sub_ps(x, m1);
      m1 = _mm256_add_ps(m1, opaque(_mm256_mul_ps(delta, _mm256_set1_ps(1.0f / static_cast<float>(j + 1)))));
      m2 = _mm256_add_ps(m2, opaque(_mm256_mul_ps(delta, _mm256_sub_ps(x, m1))));
    }
    add_moments_vec(m0, m1, m2, m0_stk[0], m1_stk[0], m2_stk[0]);
    int64_t mask = i + 1;
    for (int j = 1; j < depth && (mask & 1) == 0; ++j) {
      add_moments_vec(m0_stk[j - 1], m1_stk[j - 1], m2_stk[j - 1], m0_stk[j], m1_stk[j], m2_stk[j]);
      m0_stk[j - 1] = 0;
      m1_stk[j - 1] = m2_stk[j - 1] = _mm256_setzero_ps();
      mask >>= 1;
    }
  }
  for (int i = 1; i < depth; ++i) add_moments_vec(m0_stk[i], m1_stk[i], m2_stk[i], m0_stk[0], m1_stk[0], m2_stk[0]);
  alignas(32) float m1_arr[8], m2_arr[8];
  _mm256_store_ps(m1_arr, m1_stk[0]);
  _mm256_store_ps(m2_arr, m2_stk[0]);
  int64_t m0 = 0;
  float m1 = 0, m2 = 0;
  for (int64_t i = n * 8; i < N; ++i) {
    const float delta = X[i] - m1;
    ++m0;
    m1 += delta / static_cast<float>(m0);
    m2 = m2 + opaque(delta * (X[i] - m1));
  }
  for (int i = 0; i < 8; ++i) add_moments(n, m1_arr[i], m2_arr[i], m0, m1, m2);
  return {m1, m2 / static_cast<float>(N)};
}

}  // namespace

EXACT_TARGET void layer_norm(const float* x, const float* gamma, const float* beta, float eps, int n,
                             float* y) {
  const auto [mean, variance] = rowwise_moments(x, n);
  const float rstd = 1.0f / std::sqrt(variance + eps);
  const __m256 scale = _mm256_set1_ps(rstd), bias = _mm256_set1_ps(-rstd * mean);
  // vec::map3((x * scale + bias) * gamma + beta), which LibTorch's build fuses.
  for (int d = 0; d < n; d += 8) {
    const int count = std::min(8, n - d);
    const __m256 v = _mm256_fmadd_ps(load_partial(x + d, count), scale, bias);
    store_partial(y + d, _mm256_fmadd_ps(v, load_partial(gamma + d, count), load_partial(beta + d, count)),
                  count);
  }
}

EXACT_TARGET void softmax_last_dim(float* x, int n) {
  const SleefF8 expf8 = sleef().expf8;
  float max_value = x[0];
  for (int i = 1; i < n; ++i) max_value = std::max(max_value, x[i]);  // order-free
  const __m256 max_vec = _mm256_set1_ps(max_value);
  for (int d = 0; d < n; d += 8) {
    const int count = std::min(8, n - d);
    store_partial(x + d, expf8(_mm256_sub_ps(load_partial(x + d, count), max_vec)), count);
  }
  // vec::reduce_all(+): lane-wise sums, the tail into its first lanes only,
  // then lanes i + 4, i + 2, i + 1 folded in (VecReduceAllSIMD for AVX2).
  float sum;
  if (n < 8) {
    sum = x[0];
    for (int i = 1; i < n; ++i) sum = sum + x[i];
  } else {
    __m256 acc = _mm256_loadu_ps(x);
    int d = 8;
    for (; d < n - (n % 8); d += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + d));
    if (n - d > 0) {
      const __m256 added = _mm256_add_ps(acc, load_partial(x + d, n - d));
      acc = _mm256_mask_mov_ps(acc, static_cast<__mmask8>((1u << (n - d)) - 1), added);  // Vec::set
    }
    __m256 v = _mm256_add_ps(acc, _mm256_permute2f128_ps(acc, acc, 0x1));
    v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
    v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0xB1));
    sum = _mm256_cvtss_f32(v);
  }
  const __m256 inverse = _mm256_set1_ps(1 / sum);
  for (int d = 0; d < n; d += 8) {
    const int count = std::min(8, n - d);
    store_partial(x + d, _mm256_mul_ps(load_partial(x + d, count), inverse), count);
  }
}

EXACT_TARGET void sin_embedding(int64_t position, const float* divisors, int half_dim, float* out) {
  const Sleef& functions = sleef();
  const float p = static_cast<float>(position);
  for (int i = 0; i < half_dim; i += 8) {
    alignas(32) float phase[8] = {0};
    const int count = std::min(8, half_dim - i);
    for (int t = 0; t < count; ++t) phase[t] = p / divisors[i + t];
    alignas(32) float cos_values[8], sin_values[8];
    _mm256_store_ps(cos_values, functions.cosf8(_mm256_load_ps(phase)));
    _mm256_store_ps(sin_values, functions.sinf8(_mm256_load_ps(phase)));
    for (int t = 0; t < count; ++t) {
      out[i + t] = cos_values[t];
      out[half_dim + i + t] = sin_values[t];
    }
  }
}

}  // namespace encodec::lm::exact
