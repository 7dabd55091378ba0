// ordered_gemm_bf16's contract: every output element is the pair chain the
// header defines (checked against ordered_chain_bf16, one element at a time),
// and a row gives the same bits alone or among others.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "fast/ordered_gemm_bf16.h"
#include "gemm_shape.h"
#include "golden.h"

namespace encodec::fast {
namespace {

TEST(Bf16ConversionTest, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: to the even one, 1.
  EXPECT_EQ(to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even, 1 + 2^-6.
  EXPECT_EQ(from_bf16(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(NAN))));
  EXPECT_EQ(from_bf16(to_bf16(-2.5f)), -2.5f);
  // Denormals are zero of their sign, as the hardware conversion treats them,
  // even the largest, which rounding would otherwise carry to the smallest normal.
  EXPECT_EQ(to_bf16(std::ldexp(1.0f, -140)), 0x0000);
  EXPECT_EQ(to_bf16(-std::ldexp(1.0f, -140)), 0x8000);
  EXPECT_EQ(to_bf16(std::nextafter(FLT_MIN, 0.0f)), 0x0000);
  EXPECT_EQ(to_bf16(FLT_MIN), 0x0080);
  EXPECT_EQ(from_bf16(to_bf16(INFINITY)), INFINITY);
}

using Shape = encodec::testing::GemmShape;

class OrderedGemmBf16Test : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
};

TEST_P(OrderedGemmBf16Test, EveryElementIsThePairChainAndRowsAreIndependent) {
  const Shape shape = GetParam();
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 1);
  const std::vector<float> bias = encodec::testing::random_normal_values(shape.columns, 2);
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 3);
  const PackedMatrixBf16 packed(weight.data(), shape.columns, shape.depth);
  // Rows in bf16 with one readable value past an odd depth (it meets a zero weight).
  const int64_t stride = shape.depth + 1;
  std::vector<uint16_t> a_bf16(shape.rows * stride, to_bf16(123.0f));
  for (int64_t m = 0; m < shape.rows; ++m) {
    for (int64_t k = 0; k < shape.depth; ++k) a_bf16[m * stride + k] = to_bf16(a[m * shape.depth + k]);
  }
  std::vector<const uint16_t*> rows(shape.rows);
  std::vector<float> out(shape.rows * shape.columns, NAN);
  std::vector<float*> out_rows(shape.rows);
  for (int64_t m = 0; m < shape.rows; ++m) {
    rows[m] = &a_bf16[m * stride];
    out_rows[m] = &out[m * shape.columns];
  }
  ordered_gemm_bf16(rows.data(), shape.rows, packed, out_rows.data(), {bias.data()});
  for (int64_t m = 0; m < shape.rows; ++m) {
    std::vector<float> alone(shape.columns);
    float* alone_row = alone.data();
    ordered_gemm_bf16(&rows[m], 1, packed, &alone_row, {bias.data()});
    for (int64_t n = 0; n < shape.columns; ++n) {
      ASSERT_EQ(out[m * shape.columns + n], ordered_chain_bf16(rows[m], packed, n, bias[n]))
          << "row " << m << " column " << n;
      ASSERT_EQ(alone[n], out[m * shape.columns + n]) << "row " << m << " column " << n;
    }
  }
}

// bf16 keeps 8 bits of mantissa: a product of N(0,1) rows is within a few
// 2^-8 relative steps of the fp32 one (an independent double computation).
TEST_P(OrderedGemmBf16Test, CloseToTheExactProduct) {
  const Shape shape = GetParam();
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 4);
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 5);
  const PackedMatrixBf16 packed(weight.data(), shape.columns, shape.depth);
  std::vector<uint16_t> a_bf16(shape.rows * shape.depth + 1, 0);
  for (size_t i = 0; i < a.size(); ++i) a_bf16[i] = to_bf16(a[i]);
  std::vector<const uint16_t*> rows(shape.rows);
  std::vector<float> out(shape.rows * shape.columns);
  std::vector<float*> out_rows(shape.rows);
  for (int64_t m = 0; m < shape.rows; ++m) {
    rows[m] = &a_bf16[m * shape.depth];
    out_rows[m] = &out[m * shape.columns];
  }
  ordered_gemm_bf16(rows.data(), shape.rows, packed, out_rows.data());
  for (int64_t m = 0; m < shape.rows; ++m) {
    for (int64_t n = 0; n < shape.columns; ++n) {
      double exact = 0;
      for (int64_t k = 0; k < shape.depth; ++k) {
        exact += static_cast<double>(a[m * shape.depth + k]) * weight[n * shape.depth + k];
      }
      // Each of the 2K inputs is off by at most 2^-9 relative: the error of the
      // sum is bounded by 2^-8 times the sum of |products| (plus fp32 rounding).
      double magnitude = 0;
      for (int64_t k = 0; k < shape.depth; ++k) {
        magnitude += std::abs(static_cast<double>(a[m * shape.depth + k]) * weight[n * shape.depth + k]);
      }
      ASSERT_NEAR(out[m * shape.columns + n], exact, magnitude * (std::ldexp(1.0, -8) + 1e-6))
          << "row " << m << " column " << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, OrderedGemmBf16Test,
                         ::testing::Values(Shape{1, 1, 1}, Shape{1, 2048, 64}, Shape{3, 17, 7},
                                           Shape{7, 33, 96}, Shape{13, 64, 301}, Shape{300, 48, 40},
                                           // the narrow path (16-row blocks) and its remainder
                                           Shape{37, 1, 224}, Shape{50, 2, 19}, Shape{16, 3, 7},
                                           Shape{33, 4, 40}),
                         encodec::testing::gemm_shape_name);

}  // namespace
}  // namespace encodec::fast
