// The ordered product (ordered_gemm.h) in bf16 for the opt-in bf16 precision:
// weights and inputs rounded to bf16, products summed in fp32 by AVX512-BF16's
// pair dot product, in one fixed order per output element:
//   c = bias; for each pair p: c += a[2p+1] b[2p+1]; c += a[2p] b[2p]
// (each product is exact in fp32, each addition rounds to nearest even, and
// denormals are flushed, as VDPBF16PS does). Like the fp32 kernel, a row gives
// the same bits alone or in any batch, so bf16 streams still equal bf16 files.
// The layers reach it through OrderedMatrix (ordered_matrix.h), which also
// converts their fp32 inputs.
//
// Thread safety: PackedMatrixBf16 is immutable; the functions keep no state.
#pragma once

#include <cstdint>
#include <vector>

#include "fast/ordered_gemm.h"
#include "fast/weight_storage.h"

namespace encodec::fast {

// fp32 -> bf16 as AVX512-BF16 converts: round to nearest even, denormals to
// zero of their sign, NaN kept a (quiet) NaN.
uint16_t to_bf16(float value);
float from_bf16(uint16_t value);

// Whether the CPU has AVX512-BF16 (the kernel refuses to run without it).
bool cpu_has_avx512_bf16();

// b [K, N] in bf16, panels of 16 columns, k in pairs (K padded to even with zeros):
// the 32-bit word (panel, pair, column) holds b[2p][n] low, b[2p+1][n] high.
class PackedMatrixBf16 {
 public:
  static constexpr int64_t kPanelWidth = 16;
  // rows_by_k: [N, K] row-major fp32 (a linear layer's weight [out, in]).
  PackedMatrixBf16(const float* rows_by_k, int64_t n, int64_t k);

  int64_t rows() const { return k_; }
  int64_t pairs() const { return (k_ + 1) / 2; }
  int64_t columns() const { return n_; }
  int64_t panel_count() const { return (n_ + kPanelWidth - 1) / kPanelWidth; }
  const uint32_t* panel(int64_t index) const { return data_.as<uint32_t>() + index * pairs() * kPanelWidth; }

 private:
  int64_t n_, k_;
  WeightBuffer data_;  // zeros first (the padding); huge pages (weight_storage.h)
};

// out_rows[m][n] = the pair chain over rows[m] (bf16, K values, and one more
// readable value when K is odd: it meets a zero weight), starting at
// options.bias[n] (or 0), and added to what out_rows[m][n] holds with
// options.accumulate, as ordered_gemm does. Throws std::runtime_error without
// AVX512-BF16.
void ordered_gemm_bf16(const uint16_t* const* rows, int64_t row_count, const PackedMatrixBf16& b,
                       float* const* out_rows, const OrderedGemmOptions& options = {});

// The same chain, one element at a time: the definition the kernel is tested against.
float ordered_chain_bf16(const uint16_t* a_row, const PackedMatrixBf16& b, int64_t column,
                         float start);

}  // namespace encodec::fast
