// ordered_gemm's contract: each output element is the fused multiply-add chain
// bias, + a[0] b[0], + a[1] b[1], ... in that order, whatever the shapes, the
// rows computed with it, or the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include "fast/ordered_gemm.h"
#include "gemm_shape.h"
#include "golden.h"

namespace encodec::fast {
namespace {

// The chain the contract defines, one element at a time with std::fma.
float expected_chain(const float* a_row, const float* weight_row, int64_t depth, float start) {
  float sum = start;
  for (int64_t k = 0; k < depth; ++k) sum = std::fma(a_row[k], weight_row[k], sum);
  return sum;
}

using Shape = encodec::testing::GemmShape;

class OrderedGemmTest : public ::testing::TestWithParam<Shape> {};

TEST_P(OrderedGemmTest, EveryElementIsTheFmaChainInOrder) {
  const Shape shape = GetParam();
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 1);
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 2);  // [N, K]
  const std::vector<float> bias = encodec::testing::random_normal_values(shape.columns, 3);
  const PackedMatrix packed(weight.data(), shape.columns, shape.depth);
  // A wider output than needed: the columns beyond N must stay untouched.
  const int64_t ldc = shape.columns + 3;
  std::vector<float> c(shape.rows * ldc, 7.0f);
  ordered_gemm(a.data(), shape.depth, shape.rows, packed, c.data(), ldc, {bias.data(), false});
  for (int64_t m = 0; m < shape.rows; ++m) {
    for (int64_t n = 0; n < ldc; ++n) {
      const float expected =
          n < shape.columns
              ? expected_chain(&a[m * shape.depth], &weight[n * shape.depth], shape.depth, bias[n])
              : 7.0f;
      ASSERT_EQ(c[m * ldc + n], expected) << "row " << m << " column " << n;
    }
  }
}

TEST_P(OrderedGemmTest, AccumulateAddsTheChainToTheOutput) {
  const Shape shape = GetParam();
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 4);
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 5);
  const PackedMatrix packed(weight.data(), shape.columns, shape.depth);
  const std::vector<float> residual = encodec::testing::random_normal_values(shape.rows * shape.columns, 6);
  std::vector<float> c = residual;
  ordered_gemm(a.data(), shape.depth, shape.rows, packed, c.data(), shape.columns, {nullptr, true});
  for (int64_t m = 0; m < shape.rows; ++m) {
    for (int64_t n = 0; n < shape.columns; ++n) {
      const float chain = expected_chain(&a[m * shape.depth], &weight[n * shape.depth], shape.depth, 0.0f);
      ASSERT_EQ(c[m * shape.columns + n], residual[m * shape.columns + n] + chain)
          << "row " << m << " column " << n;
    }
  }
}

TEST_P(OrderedGemmTest, ARowGivesTheSameBitsAloneAsInAnyBatchOrThreadCount) {
  const Shape shape = GetParam();
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 7);
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 8);
  const PackedMatrix packed(weight.data(), shape.columns, shape.depth);
  std::vector<float> together(shape.rows * shape.columns);
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  ordered_gemm(a.data(), shape.depth, shape.rows, packed, together.data(), shape.columns);
  at::set_num_threads(threads);
  // Rows given in reverse order through row pointers, then each row alone.
  std::vector<const float*> reversed(shape.rows);
  for (int64_t m = 0; m < shape.rows; ++m) reversed[m] = &a[(shape.rows - 1 - m) * shape.depth];
  std::vector<float> backwards(shape.rows * shape.columns);
  std::vector<float*> backwards_rows(shape.rows);
  for (int64_t m = 0; m < shape.rows; ++m) backwards_rows[m] = &backwards[m * shape.columns];
  ordered_gemm(reversed.data(), shape.rows, packed, backwards_rows.data());
  for (int64_t m = 0; m < shape.rows; ++m) {
    std::vector<float> alone(shape.columns);
    ordered_gemm(&a[m * shape.depth], shape.depth, 1, packed, alone.data(), shape.columns);
    for (int64_t n = 0; n < shape.columns; ++n) {
      ASSERT_EQ(alone[n], together[m * shape.columns + n]) << "row " << m << " column " << n;
      ASSERT_EQ(alone[n], backwards[(shape.rows - 1 - m) * shape.columns + n]);
    }
  }
}

// Every instruction set the CPU has gives the same bits (so do machines with
// different ones: the chains are the same).
TEST_P(OrderedGemmTest, EveryInstructionSetGivesTheSameBits) {
  const Shape shape = GetParam();
  const std::vector<float> a = encodec::testing::random_normal_values(shape.rows * shape.depth, 9);
  const std::vector<float> weight = encodec::testing::random_normal_values(shape.columns * shape.depth, 10);
  const std::vector<float> bias = encodec::testing::random_normal_values(shape.columns, 11);
  const PackedMatrix packed(weight.data(), shape.columns, shape.depth);
  const OrderedGemmIsa original = ordered_gemm_isa();
  std::vector<float> scalar(shape.rows * shape.columns, 3.0f);
  set_ordered_gemm_isa(OrderedGemmIsa::kScalar);
  ordered_gemm(a.data(), shape.depth, shape.rows, packed, scalar.data(), shape.columns,
               {bias.data(), true});
  int compared = 0;
  for (OrderedGemmIsa isa : {OrderedGemmIsa::kAvx2, OrderedGemmIsa::kAvx512}) {
    try {
      set_ordered_gemm_isa(isa);
    } catch (const std::invalid_argument&) {
      continue;  // not on this CPU
    }
    std::vector<float> vector(shape.rows * shape.columns, 3.0f);
    ordered_gemm(a.data(), shape.depth, shape.rows, packed, vector.data(), shape.columns,
                 {bias.data(), true});
    EXPECT_EQ(vector, scalar) << "instruction set " << static_cast<int>(isa);
    ++compared;
  }
  set_ordered_gemm_isa(original);
  if (compared == 0) GTEST_SKIP() << "no vector instruction set on this CPU";
}

INSTANTIATE_TEST_SUITE_P(Shapes, OrderedGemmTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{1, 2048, 64}, Shape{3, 17, 7},
                                           Shape{7, 33, 96}, Shape{13, 64, 300}, Shape{6, 130, 5},
                                           Shape{300, 48, 40},
                                           // the narrow path (16-row blocks) and its remainder
                                           Shape{37, 1, 224}, Shape{50, 2, 19}, Shape{16, 3, 7},
                                           Shape{33, 4, 40}),
                         encodec::testing::gemm_shape_name);

}  // namespace
}  // namespace encodec::fast
