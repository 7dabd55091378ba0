// The deterministic LM kernels on AVX2: 16 lanes as two 8-float vectors.
// Compiled with -mavx2 -ffp-contract=off (core/CMakeLists.txt); run only when
// the CPU has AVX2.
#include <immintrin.h>

#include "lm/det_lanes.h"

namespace encodec::lm::det {
namespace {

struct Avx2Lanes {
  static constexpr int kLinearPanels = 4;
  struct V {
    __m256 lo, hi;
  };
  using M = V;  // all-ones lanes where true
  static __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static V load_n(const float* p, int n) {
    if (n >= 16) return load(p);
    return {_mm256_maskload_ps(p, lane_mask(n)), _mm256_maskload_ps(p + 8, lane_mask(n - 8))};
  }
  static void store(float* p, V a) {
    _mm256_storeu_ps(p, a.lo);
    _mm256_storeu_ps(p + 8, a.hi);
  }
  static void store_n(float* p, V a, int n) {
    if (n >= 16) return store(p, a);
    _mm256_maskstore_ps(p, lane_mask(n), a.lo);
    _mm256_maskstore_ps(p + 8, lane_mask(n - 8), a.hi);
  }
  static V keep_n(V a, int n) {
    return {_mm256_and_ps(a.lo, _mm256_castsi256_ps(lane_mask(n))),
            _mm256_and_ps(a.hi, _mm256_castsi256_ps(lane_mask(n - 8)))};
  }
  static V add(V a, V b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static V sub(V a, V b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static V mul(V a, V b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static V div(V a, V b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
  static V min(V a, V b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
  static V max(V a, V b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
  static M less(V a, V b) {
    return {_mm256_cmp_ps(a.lo, b.lo, _CMP_LT_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_LT_OQ)};
  }
  static V select(M m, V a, V b) {
    return {_mm256_blendv_ps(b.lo, a.lo, m.lo), _mm256_blendv_ps(b.hi, a.hi, m.hi)};
  }
  static __m256 pow2_half(__m256 n) {
    const __m256i biased = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
  }
  static V pow2(V n) { return {pow2_half(n.lo), pow2_half(n.hi)}; }
  static void to_array(V a, float* lanes) { store(lanes, a); }
};

}  // namespace

const TierKernels& avx2_tier_kernels() { return kernels_of<Avx2Lanes>(); }

}  // namespace encodec::lm::det
