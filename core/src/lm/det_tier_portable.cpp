// The deterministic LM kernels in plain C++ (any x86-64 CPU): 16 lanes as an
// array. Compiled with -ffp-contract=off (core/CMakeLists.txt), so that no
// product is fused with the add after it.
#include <cstring>

#include "lm/det_lanes.h"

namespace encodec::lm::det {
namespace {

struct PortableLanes {
  static constexpr int kLinearPanels = 1;
  struct V {
    float v[16];
  };
  struct M {
    bool m[16];
  };
  template <class F>
  static V each(F f) {
    V r;
    for (int i = 0; i < 16; ++i) r.v[i] = f(i);
    return r;
  }
  static V zero() { return set1(0.0f); }
  static V set1(float x) { return each([x](int) { return x; }); }
  static V load(const float* p) { return each([p](int i) { return p[i]; }); }
  static V load_n(const float* p, int n) { return each([p, n](int i) { return i < n ? p[i] : 0.0f; }); }
  static void store(float* p, const V& a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static void store_n(float* p, const V& a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static V keep_n(const V& a, int n) { return each([&a, n](int i) { return i < n ? a.v[i] : 0.0f; }); }
  static V add(const V& a, const V& b) { return each([&](int i) { return a.v[i] + b.v[i]; }); }
  static V sub(const V& a, const V& b) { return each([&](int i) { return a.v[i] - b.v[i]; }); }
  static V mul(const V& a, const V& b) { return each([&](int i) { return a.v[i] * b.v[i]; }); }
  static V div(const V& a, const V& b) { return each([&](int i) { return a.v[i] / b.v[i]; }); }
  // As MINPS / MAXPS: the second operand unless the first is strictly smaller / larger.
  static V min(const V& a, const V& b) { return each([&](int i) { return a.v[i] < b.v[i] ? a.v[i] : b.v[i]; }); }
  static V max(const V& a, const V& b) { return each([&](int i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; }); }
  static M less(const V& a, const V& b) {
    M r;
    for (int i = 0; i < 16; ++i) r.m[i] = a.v[i] < b.v[i];
    return r;
  }
  static V select(const M& m, const V& a, const V& b) {
    return each([&](int i) { return m.m[i] ? a.v[i] : b.v[i]; });
  }
  static V pow2(const V& n) {
    return each([&](int i) {
      const int32_t bits = (static_cast<int32_t>(n.v[i]) + 127) * (1 << 23);
      float value;
      std::memcpy(&value, &bits, sizeof(value));
      return value;
    });
  }
  static void to_array(const V& a, float* lanes) { std::memcpy(lanes, a.v, sizeof(a.v)); }
};

}  // namespace

const TierKernels& portable_tier_kernels() { return kernels_of<PortableLanes>(); }

}  // namespace encodec::lm::det
