// Compiled with -ffp-contract=off (core/CMakeLists.txt).
#include "lm/det_kernels.h"

#include <xmmintrin.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace encodec::lm::det {
namespace {

constexpr double kLn2 = 0.69314718055994530942;     // ln 2 rounded to double
constexpr double kLn2Low = 2.31904681384629956e-17;  // ln 2 - kLn2
constexpr double kHalfPi = 1.57079632679489661923;              // pi / 2 rounded to double
constexpr double kHalfPiLow = 6.12323399573676603587e-17;       // pi / 2 - kHalfPi
constexpr double kTwoOverPi = 0.63661977236758134308;
// Adding and subtracting 1.5 * 2^52 rounds a double below 2^51 to the nearest integer (even on ties).
constexpr double kRoundMagic = 6755399441055744.0;

double round_to_integer(double x) { return (x + kRoundMagic) - kRoundMagic; }

}  // namespace

const TierKernels& tier_kernels(fast::VectorIsa isa) {
  switch (isa) {
    case fast::VectorIsa::kAvx512: return avx512_tier_kernels();
    case fast::VectorIsa::kAvx2: return avx2_tier_kernels();
    case fast::VectorIsa::kPortable: break;
  }
  return portable_tier_kernels();
}

std::vector<float> pack_columns(const float* w, int n, int k) {
  std::vector<const float*> rows(static_cast<size_t>(n));
  for (int column = 0; column < n; ++column) rows[column] = w + static_cast<size_t>(column) * k;
  return pack_columns(rows.data(), n, k);
}

std::vector<float> pack_columns(const float* const* rows, int n, int k) {
  const int panels = (n + kPanel - 1) / kPanel;
  std::vector<float> packed(static_cast<size_t>(panels) * k * kPanel, 0.0f);
  // Panel by panel, writing in order: the panel's 16 rows (a few kB) stay in
  // cache while they are read across (column by column, every write went to
  // another cache line: the official LM's heads, 26 MB, dominated loading).
  for (int panel = 0; panel < panels; ++panel) {
    float* out = packed.data() + static_cast<size_t>(panel) * k * kPanel;
    const int columns = std::min(kPanel, n - panel * kPanel);
    for (int depth = 0; depth < k; ++depth) {
      for (int j = 0; j < columns; ++j) out[static_cast<size_t>(depth) * kPanel + j] = rows[panel * kPanel + j][depth];
    }
  }
  return packed;
}

void layer_norm(const float* x, const float* gamma, const float* beta, float eps, int n, float* y) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum = sum + x[i];
  const float mean = sum / static_cast<float>(n);
  float squares = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    squares = squares + d * d;
  }
  const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(n) + eps);
  for (int i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
}

double exp_double(double x) {
  // x = n ln 2 + r, |r| <= ln 2 / 2; exp(r) by its Taylor series to r^20 / 20!.
  const double n = round_to_integer(x / kLn2);
  const double r = std::fma(-n, kLn2Low, std::fma(-n, kLn2, x));  // n ln 2 exact inside
  double sum = 1.0;
  for (int i = 20; i >= 1; --i) sum = 1.0 + sum * r / i;
  return std::ldexp(sum, static_cast<int>(n));  // exact: a power-of-two scaling
}

double log_double(double x) {
  if (!(x > 0)) throw std::invalid_argument("log_double: the argument must be positive");
  // x = m 2^e, m in [0.5, 1): log m = 2 atanh(z), z = (m - 1) / (m + 1), |z| <= 1/3.
  int e = 0;
  const double m = std::frexp(x, &e);  // exact
  const double z = (m - 1) / (m + 1), z2 = z * z;
  double sum = 0.0;
  for (int i = 40; i >= 0; --i) sum = 1.0 / (2 * i + 1) + sum * z2;
  return e * kLn2 + 2 * z * sum;
}

void sin_cos_double(double x, double* sine, double* cosine) {
  // x = k pi/2 + r with |r| <= pi/4: the products k pi/2 are exact inside the
  // fused multiply-adds (x is a float, so |k| < 2^26 keeps r accurate).
  const double k = round_to_integer(x * kTwoOverPi);
  double r = std::fma(-k, kHalfPi, x);
  r = std::fma(-k, kHalfPiLow, r);
  const double r2 = r * r;
  // Taylor series to r^17 / 17! and r^18 / 18!.
  double s = 0.0, c = 0.0;
  for (int i = 8; i >= 0; --i) {
    s = 1.0 - s * r2 / ((2 * i + 2) * (2 * i + 3));
    c = 1.0 - c * r2 / ((2 * i + 1) * (2 * i + 2));
  }
  s = s * r;
  const int quadrant = static_cast<int>(static_cast<int64_t>(k) & 3);
  const double sines[4] = {s, c, -s, -c}, cosines[4] = {c, -s, -c, s};
  *sine = sines[quadrant];
  *cosine = cosines[quadrant];
}

std::vector<float> position_divisors(int half_dim, int max_period) {
  std::vector<float> divisors(half_dim);
  const double log_period = log_double(max_period);
  for (int i = 0; i < half_dim; ++i) {
    divisors[i] = static_cast<float>(exp_double(log_period * i / (half_dim - 1)));
  }
  return divisors;
}

void sin_embedding(int64_t position, const float* divisors, int half_dim, float* out) {
  const float p = static_cast<float>(position);
  for (int i = 0; i < half_dim; ++i) {
    double sine = 0, cosine = 0;
    sin_cos_double(p / divisors[i], &sine, &cosine);
    out[i] = static_cast<float>(cosine);
    out[half_dim + i] = static_cast<float>(sine);
  }
}

DetFloatScope::DetFloatScope() : saved_(_mm_getcsr()) {
  // Default MXCSR: all exceptions masked, round to nearest, FTZ and DAZ off.
  // Exception flags are sticky status bits: keep the caller's.
  _mm_setcsr(0x1F80u | (saved_ & 0x3Fu));
}

DetFloatScope::~DetFloatScope() { _mm_setcsr(saved_); }

}  // namespace encodec::lm::det
