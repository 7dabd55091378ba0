// Products with very few output columns (a conv to 1 or 2 channels: the
// decoder's last layer) waste most of a 16-column panel in the ordered kernels'
// tiles, which vectorize over columns. For those, the narrow path vectorizes
// over rows instead: 16 rows at a time, their inputs transposed 16 x 16 so that
// one vector holds the 16 rows' k-th values, each lane running the same chain
// (bias, then k = 0, 1, ... in order) that the tiles run. The bits are the
// tiles' (tested): only the direction of the vectors changes.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <ATen/Parallel.h>

namespace encodec::fast {

// Output columns up to which the narrow path is used.
inline constexpr int64_t kMaxNarrowColumns = 4;
inline constexpr int kNarrowRows = 16;

// values[j] (16 lanes of 32 bits each, row j) becomes column j: lane i of
// values[j] after the call is lane j of values[i] before.
// (GCC 12 warns inside its own unpack intrinsics, whose pass-through operand it
// leaves undefined on purpose.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) inline void transpose_16x16(__m512i values[16]) {
  __m512i pairs[16], quads[16];
  for (int i = 0; i < 8; ++i) {  // 32-bit interleave of rows 2i and 2i+1, per 128-bit lane
    pairs[2 * i] = _mm512_unpacklo_epi32(values[2 * i], values[2 * i + 1]);
    pairs[2 * i + 1] = _mm512_unpackhi_epi32(values[2 * i], values[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // quads[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3
    quads[4 * i + 0] = _mm512_unpacklo_epi64(pairs[4 * i], pairs[4 * i + 2]);
    quads[4 * i + 1] = _mm512_unpackhi_epi64(pairs[4 * i], pairs[4 * i + 2]);
    quads[4 * i + 2] = _mm512_unpacklo_epi64(pairs[4 * i + 1], pairs[4 * i + 3]);
    quads[4 * i + 3] = _mm512_unpackhi_epi64(pairs[4 * i + 1], pairs[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // gather lane L of the four row groups into column 4L + c
    const __m512i even_low = _mm512_shuffle_i32x4(quads[c], quads[4 + c], 0x88);
    const __m512i even_high = _mm512_shuffle_i32x4(quads[8 + c], quads[12 + c], 0x88);
    const __m512i odd_low = _mm512_shuffle_i32x4(quads[c], quads[4 + c], 0xDD);
    const __m512i odd_high = _mm512_shuffle_i32x4(quads[8 + c], quads[12 + c], 0xDD);
    values[c] = _mm512_shuffle_i32x4(even_low, even_high, 0x88);
    values[8 + c] = _mm512_shuffle_i32x4(even_low, even_high, 0xDD);
    values[4 + c] = _mm512_shuffle_i32x4(odd_low, odd_high, 0x88);
    values[12 + c] = _mm512_shuffle_i32x4(odd_low, odd_high, 0xDD);
  }
}
#pragma GCC diagnostic pop

// Runs the whole blocks of 16 rows among `row_count` through
// run_block(block_rows, block_out_rows), on LibTorch's threads with about a
// million multiply-adds per task (`work_per_row` per row), and returns how many
// rows they covered (the rest is for the tiles).
template <typename Row, typename RunBlock>
int64_t run_narrow_blocks(const Row* const* rows, int64_t row_count, float* const* out_rows,
                          int64_t work_per_row, RunBlock&& run_block) {
  const int64_t blocks = row_count / kNarrowRows;
  if (blocks == 0) return 0;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, kNarrowRows * work_per_row));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      run_block(rows + block * kNarrowRows, out_rows + block * kNarrowRows);
    }
  });
  return blocks * kNarrowRows;
}

// Calls block(std::integral_constant<int, N>{}) for N = `columns` (1 to kMaxNarrowColumns).
template <typename Block>
void with_narrow_columns(int64_t columns, Block&& block) {
  switch (columns) {
    case 1: return block(std::integral_constant<int, 1>{});
    case 2: return block(std::integral_constant<int, 2>{});
    case 3: return block(std::integral_constant<int, 3>{});
    default: return block(std::integral_constant<int, 4>{});
  }
}

// A block's chains start at the bias (or 0), one accumulator per column.
template <int kColumns>
__attribute__((target("avx512f"))) inline void start_narrow_block(__m512 (&accumulators)[kColumns],
                                                                  const float* bias) {
  for (int n = 0; n < kColumns; ++n) accumulators[n] = bias ? _mm512_set1_ps(bias[n]) : _mm512_setzero_ps();
}

// out_rows[j][n] = lane j of accumulators[n], added to what it holds with `accumulate`.
template <int kColumns>
__attribute__((target("avx512f"))) inline void store_narrow_block(const __m512 (&accumulators)[kColumns],
                                                                  float* const* out_rows, bool accumulate) {
  alignas(64) float lanes[kNarrowRows];
  for (int n = 0; n < kColumns; ++n) {
    _mm512_store_ps(lanes, accumulators[n]);
    for (int j = 0; j < kNarrowRows; ++j) {
      float& target = out_rows[j][n];
      target = accumulate ? target + lanes[j] : lanes[j];
    }
  }
}

}  // namespace encodec::fast
