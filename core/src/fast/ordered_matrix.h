// A layer's weight matrix in the precision the layer runs in, with one product
// for both: the fp32 ordered kernel (ordered_gemm.h) or the bf16 one
// (ordered_gemm_bf16.h), whose fp32 inputs are converted to bf16 on the way.
// The layers and the streaming engine call the same ordered_gemm whatever the
// precision, and both precisions keep the ordered kernels' promise: a row's
// result does not depend on the rows that come with it.
//
// Thread safety: OrderedMatrix is immutable; ordered_gemm keeps its bf16 input
// scratch per thread (grown on first use, then reused: no allocation after warm-up).
#pragma once

#include <cstdint>
#include <variant>

#include "encodec/precision.h"
#include "fast/ordered_gemm.h"
#include "fast/ordered_gemm_bf16.h"

namespace encodec::fast {

class OrderedMatrix {
 public:
  OrderedMatrix() = default;
  // rows_by_k: [N, K] row-major fp32 (a linear layer's weight [out, in]),
  // rounded to bf16 for Precision::kBf16.
  OrderedMatrix(const float* rows_by_k, int64_t n, int64_t k, Precision precision);

  Precision precision() const;
  int64_t rows() const;     // K
  int64_t columns() const;  // N
  // The matrix of the precision it has; null for the other.
  const PackedMatrix* fp32() const { return std::get_if<PackedMatrix>(&matrix_); }
  const PackedMatrixBf16* bf16() const { return std::get_if<PackedMatrixBf16>(&matrix_); }

 private:
  std::variant<PackedMatrix, PackedMatrixBf16> matrix_;
};

// ordered_gemm (ordered_gemm.h) on `b` in its precision. In bf16 the K input
// values of each row are rounded to bf16 first (rows that are overlapping
// windows at a fixed distance, a convolution's, are converted once for all).
void ordered_gemm(const float* const* rows, int64_t row_count, const OrderedMatrix& b,
                  float* const* out_rows, const OrderedGemmOptions& options = {});
void ordered_gemm(const float* a, int64_t lda, int64_t row_count, const OrderedMatrix& b, float* c,
                  int64_t ldc, const OrderedGemmOptions& options = {});

// fp32 -> bf16 as the bf16 product rounds its inputs (to_bf16), `count` values:
// by AVX512-BF16's conversion instructions where the CPU has them, else by
// the portable loop (tests compare both with to_bf16).
void convert_to_bf16(const float* source, uint16_t* target, int64_t count);
void convert_to_bf16_portably(const float* source, uint16_t* target, int64_t count);

}  // namespace encodec::fast
