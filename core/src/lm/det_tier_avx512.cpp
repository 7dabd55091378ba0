// The deterministic LM kernels on AVX-512F: 16 lanes in one vector. Compiled
// with -mavx512f -ffp-contract=off (core/CMakeLists.txt); run only when the
// CPU has AVX-512F.
#include <immintrin.h>

#include "lm/det_lanes.h"

// GCC warns about the undefined upper lanes that its own masked-load intrinsics
// start from; they are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace encodec::lm::det {
namespace {

struct Avx512Lanes {
  static constexpr int kLinearPanels = 8;
  using V = __m512;
  using M = __mmask16;
  static M first(int n) { return n >= 16 ? static_cast<M>(0xFFFF) : static_cast<M>((1u << (n < 0 ? 0 : n)) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store(float* p, V a) { _mm512_storeu_ps(p, a); }
  static void store_n(float* p, V a, int n) { _mm512_mask_storeu_ps(p, first(n), a); }
  static V keep_n(V a, int n) { return _mm512_maskz_mov_ps(first(n), a); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static M less(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  static V pow2(V n) {
    const __m512i biased = _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(biased, 23));
  }
  static void to_array(V a, float* lanes) { _mm512_storeu_ps(lanes, a); }
};

}  // namespace

const TierKernels& avx512_tier_kernels() { return kernels_of<Avx512Lanes>(); }

}  // namespace encodec::lm::det
