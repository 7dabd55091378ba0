// A matrix product whose every output element is one fused multiply-add chain
// in a fixed order: c[m][n] = bias[n] + a_m[0] b[0][n] + a_m[1] b[1][n] + ...,
// rounded after each step, whatever the number of rows, their position in the
// batch or the CPU's vector width. BLAS and oneDNN choose their blocking (and so
// the order of their sums) from the matrix shapes, which makes a row's result
// depend on how many rows came with it. The streaming encoder needs the opposite:
// a frame encoded alone, within a whole file, or stacked with other streams must
// give the same bits, so that streamed codes equal offline codes exactly.
//
// Thread safety: PackedMatrix is immutable after construction; ordered_gemm
// keeps no state.
#pragma once

#include <cstdint>
#include <vector>

#include "fast/weight_storage.h"

namespace encodec::fast {

// The right-hand matrix b [K, N], stored as panels of 16 columns (zero-padded)
// so that the kernel reads each k's 16 values with one aligned load.
class PackedMatrix {
 public:
  static constexpr int64_t kPanelWidth = 16;
  PackedMatrix() = default;
  // From the transposed matrix: rows_by_k is [N, K] row-major (a linear layer's
  // weight [out, in]), so b[k][n] = rows_by_k[n * K + k].
  PackedMatrix(const float* rows_by_k, int64_t n, int64_t k);

  int64_t rows() const { return k_; }     // K
  int64_t columns() const { return n_; }  // N
  const float* panel(int64_t index) const { return data_.as<float>() + index * k_ * kPanelWidth; }
  int64_t panel_count() const { return (n_ + kPanelWidth - 1) / kPanelWidth; }

 private:
  int64_t n_ = 0, k_ = 0;
  WeightBuffer data_;  // huge pages: a single stream is bound by reading the weights
};

struct OrderedGemmOptions {
  const float* bias = nullptr;  // [N]; the chain starts at 0 without
  bool accumulate = false;      // c = c + (chain): c holds a value to add (a residual)
};

// For m in [0, row_count): out_rows[m][n] for n < b.columns(), from the K values
// at rows[m]. The rows may overlap (a strided convolution's windows) and may lie
// in different buffers (streams of a batch, each with its own state).
void ordered_gemm(const float* const* rows, int64_t row_count, const PackedMatrix& b,
                  float* const* out_rows, const OrderedGemmOptions& options = {});

// The instruction set the kernel runs on: cpu_tier() (the best the CPU has, or
// ENCODEC_CPU's). Every one computes the same chains, so the results are the
// same bits on any of them (tested).
enum class OrderedGemmIsa { kAvx512, kAvx2, kScalar };
OrderedGemmIsa ordered_gemm_isa();
// For tests: use `isa` from now on (not while products run on other threads).
// Throws std::invalid_argument if the CPU lacks it.
void set_ordered_gemm_isa(OrderedGemmIsa isa);

// The common case of rows at a fixed distance: a_m = a + m * lda.
void ordered_gemm(const float* a, int64_t lda, int64_t row_count, const PackedMatrix& b, float* c,
                  int64_t ldc, const OrderedGemmOptions& options = {});

}  // namespace encodec::fast
