#include "fast/ordered_matrix.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "fast/tile_schedule.h"

namespace encodec::fast {
namespace {

// Rows converted per call of the bf16 kernel: the scratch stays small (at most
// 256 x K values) and in cache, and each call still has rows enough for its tiles.
constexpr int64_t kChunkRows = 256;

// A thread's bf16 copies of the rows of the product it is running.
struct Bf16Scratch {
  std::vector<uint16_t> values;
  std::vector<const uint16_t*> rows;
  void reserve(int64_t value_count, int64_t row_count) {
    // Grow-only: the per-frame path allocates nothing once it has seen its largest product.
    if (static_cast<int64_t>(values.size()) < value_count) values.resize(value_count);
    if (static_cast<int64_t>(rows.size()) < row_count) rows.resize(row_count);
  }
};

Bf16Scratch& bf16_scratch() {
  thread_local Bf16Scratch scratch;
  return scratch;
}

// The distance in floats from `from` to `to` (rows of one buffer), or 0 when
// they are not a whole number of floats apart or `to` is not after `from`.
int64_t float_distance(const float* from, const float* to) {
  const auto bytes = static_cast<int64_t>(reinterpret_cast<uintptr_t>(to) -
                                          reinterpret_cast<uintptr_t>(from));
  return bytes > 0 && bytes % static_cast<int64_t>(sizeof(float)) == 0
             ? bytes / static_cast<int64_t>(sizeof(float))
             : 0;
}

// Converts `count` rows of `depth` values to bf16 in `scratch` and points
// scratch.rows at them. A run of rows at one distance shorter than the depth
// (overlapping conv windows) is converted as one span, its rows pointing into
// it: the same values, converted once. With an odd depth the kernel reads one
// value past a row, so every row gets its own copy followed by a zero.
void convert_rows(const float* const* rows, int64_t count, int64_t depth, Bf16Scratch& scratch) {
  const bool odd = depth % 2 != 0;
  scratch.reserve(count * (depth + 1), count);
  int64_t used = 0;
  for (int64_t m = 0; m < count;) {
    int64_t end = m + 1, distance = 0;
    if (!odd && end < count) {
      distance = float_distance(rows[m], rows[m + 1]);
      if (distance > 0 && distance < depth) {
        while (end < count && float_distance(rows[end - 1], rows[end]) == distance) ++end;
      } else {
        distance = 0;
      }
    }
    const int64_t span = (end - 1 - m) * distance + depth;
    uint16_t* target = scratch.values.data() + used;
    convert_to_bf16(rows[m], target, span);
    if (odd) target[depth] = 0;
    for (int64_t j = m; j < end; ++j) scratch.rows[j] = target + (j - m) * distance;
    used += span + (odd ? 1 : 0);
    m = end;
  }
}

// The same rounding by AVX512-BF16's conversion instructions (which define it),
// 32 values per instruction: several times faster than convert_to_bf16_portably.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void convert_with_avx512_bf16(const float* source, uint16_t* target, int64_t count) {
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m512bh pairs = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(source + i + 16), _mm512_loadu_ps(source + i));
    _mm512_storeu_si512(target + i, (__m512i)pairs);
  }
  for (; i < count; i += 16) {
    const auto mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, count - i)) - 1u);
    const __m256bh values = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, source + i));
    _mm256_mask_storeu_epi16(target + i, mask, (__m256i)values);
  }
}

}  // namespace

// to_bf16's rounding, in a loop that vectorizes (CPUs without AVX512-BF16).
__attribute__((target_clones("avx512f", "avx2", "default")))
void convert_to_bf16_portably(const float* __restrict source, uint16_t* __restrict target, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, source + i, sizeof(bits));
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const bool denormal = (bits & 0x7f800000u) == 0;
    const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    target[i] = static_cast<uint16_t>(nan        ? (bits >> 16) | 0x40u
                                      : denormal ? (bits >> 16) & 0x8000u
                                                 : rounded >> 16);
  }
}

void convert_to_bf16(const float* source, uint16_t* target, int64_t count) {
  if (cpu_has_avx512_bf16()) {
    convert_with_avx512_bf16(source, target, count);
  } else {
    convert_to_bf16_portably(source, target, count);
  }
}

OrderedMatrix::OrderedMatrix(const float* rows_by_k, int64_t n, int64_t k, Precision precision) {
  if (precision == Precision::kBf16) {
    matrix_.emplace<PackedMatrixBf16>(rows_by_k, n, k);
  } else {
    matrix_.emplace<PackedMatrix>(rows_by_k, n, k);
  }
}

Precision OrderedMatrix::precision() const { return bf16() ? Precision::kBf16 : Precision::kFp32; }

int64_t OrderedMatrix::rows() const {
  return std::visit([](const auto& matrix) { return matrix.rows(); }, matrix_);
}

int64_t OrderedMatrix::columns() const {
  return std::visit([](const auto& matrix) { return matrix.columns(); }, matrix_);
}

void ordered_gemm(const float* const* rows, int64_t row_count, const OrderedMatrix& b,
                  float* const* out_rows, const OrderedGemmOptions& options) {
  if (const PackedMatrix* matrix = b.fp32()) {
    ordered_gemm(rows, row_count, *matrix, out_rows, options);
    return;
  }
  const PackedMatrixBf16& matrix = *b.bf16();
  Bf16Scratch& scratch = bf16_scratch();
  for (int64_t first = 0; first < row_count; first += kChunkRows) {
    const int64_t count = std::min(kChunkRows, row_count - first);
    convert_rows(rows + first, count, matrix.rows(), scratch);
    ordered_gemm_bf16(scratch.rows.data(), count, matrix, out_rows + first, options);
  }
}

void ordered_gemm(const float* a, int64_t lda, int64_t row_count, const OrderedMatrix& b, float* c,
                  int64_t ldc, const OrderedGemmOptions& options) {
  for_strided_row_chunks(a, lda, row_count, c, ldc,
                         [&](const float* const* rows, float* const* out_rows, int64_t count) {
                           ordered_gemm(rows, count, b, out_rows, options);
                         });
}

}  // namespace encodec::fast
