#include "fast/ordered_gemm_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "fast/narrow_rows.h"
#include "fast/tile_schedule.h"

namespace encodec::fast {
namespace {

constexpr int64_t kPanel = PackedMatrixBf16::kPanelWidth;

// VDPBF16PS treats denormal inputs and results as zero.
float flush_denormal(float value) {
  return std::fpclassify(value) == FP_SUBNORMAL ? std::copysign(0.0f, value) : value;
}

template <int kRows, int kPanels>
__attribute__((target("avx512f,avx512bf16"))) void tile(const uint16_t* const* rows,
                                                         const PackedMatrixBf16& b,
                                                         int64_t first_panel, float* const* out_rows,
                                                         const OrderedGemmOptions& options,
                                                         int64_t prefetch_panels) {
  const float* bias = options.bias;
  __m512 accumulators[kRows][kPanels];
  __mmask16 masks[kPanels];
  const uint32_t* panels[kPanels];
  for (int p = 0; p < kPanels; ++p) {
    const int64_t valid = std::min(kPanel, b.columns() - (first_panel + p) * kPanel);
    masks[p] = static_cast<__mmask16>((1u << valid) - 1u);
    panels[p] = b.panel(first_panel + p);
    const __m512 start = bias ? _mm512_maskz_loadu_ps(masks[p], bias + (first_panel + p) * kPanel)
                              : _mm512_setzero_ps();
    for (int r = 0; r < kRows; ++r) accumulators[r][p] = start;
  }
  // The next panels, a cache line (one pair) of each per step (tile_schedule.h).
  const uint32_t* next = prefetch_panels > 0 ? b.panel(first_panel + kPanels) : nullptr;
  const int64_t pairs = b.pairs();
  for (int64_t pair = 0; pair < pairs; ++pair) {
    if (next) {
      for (int64_t p = 0; p < prefetch_panels; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(next + (p * pairs + pair) * kPanel), _MM_HINT_T1);
      }
    }
    __m512bh b_values[kPanels];
    for (int p = 0; p < kPanels; ++p) {
      b_values[p] = (__m512bh)_mm512_loadu_si512(panels[p] + pair * kPanel);
    }
    for (int r = 0; r < kRows; ++r) {
      uint32_t word;
      std::memcpy(&word, rows[r] + 2 * pair, sizeof(word));
      const __m512bh a_value = (__m512bh)_mm512_set1_epi32(static_cast<int>(word));
      for (int p = 0; p < kPanels; ++p) {
        accumulators[r][p] = _mm512_dpbf16_ps(accumulators[r][p], a_value, b_values[p]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int p = 0; p < kPanels; ++p) {
      float* target = out_rows[r] + (first_panel + p) * kPanel;
      __m512 value = accumulators[r][p];
      if (options.accumulate) value = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[p], target), value);
      _mm512_mask_storeu_ps(target, masks[p], value);
    }
  }
}

template <int kRows>
void tile_panels(const uint16_t* const* rows, const PackedMatrixBf16& b, int64_t first_panel,
                 int64_t panels, float* const* out_rows, const OrderedGemmOptions& options,
                 int64_t prefetch_panels) {
  switch (panels) {
    case 1: return tile<kRows, 1>(rows, b, first_panel, out_rows, options, prefetch_panels);
    case 2: return tile<kRows, 2>(rows, b, first_panel, out_rows, options, prefetch_panels);
    case 3: return tile<kRows, 3>(rows, b, first_panel, out_rows, options, prefetch_panels);
    default: return tile<kRows, 4>(rows, b, first_panel, out_rows, options, prefetch_panels);
  }
}

void run_tile(const uint16_t* const* rows, int64_t row_count, const PackedMatrixBf16& b,
              int64_t first_panel, int64_t panels, float* const* out_rows,
              const OrderedGemmOptions& options, int64_t prefetch_panels) {
  const auto run = [&](auto tile_rows) {
    tile_panels<decltype(tile_rows)::value>(rows, b, first_panel, panels, out_rows, options, prefetch_panels);
  };
  switch (row_count) {
    case 1: return run(std::integral_constant<int, 1>{});
    case 2: return run(std::integral_constant<int, 2>{});
    case 3: return run(std::integral_constant<int, 3>{});
    case 4: return run(std::integral_constant<int, 4>{});
    case 5: return run(std::integral_constant<int, 5>{});
    default: return run(std::integral_constant<int, 6>{});
  }
}

// The narrow path (narrow_rows.h): 16 rows of a product with kColumns columns,
// each lane one row's pair chain (the rows' bf16 pairs transposed as 32-bit
// words, the weights' pair broadcast), in the order the tiles run it.
template <int kColumns>
__attribute__((target("avx512f,avx512bf16"))) void narrow_block(const uint16_t* const* rows,
                                                                const PackedMatrixBf16& b,
                                                                float* const* out_rows,
                                                                const OrderedGemmOptions& options) {
  __m512 accumulators[kColumns];
  start_narrow_block(accumulators, options.bias);
  const uint32_t* panel = b.panel(0);
  for (int64_t first = 0; first < b.pairs(); first += kNarrowRows) {
    const int count = static_cast<int>(std::min<int64_t>(kNarrowRows, b.pairs() - first));
    const auto mask = static_cast<__mmask16>((1u << count) - 1u);
    __m512i words[kNarrowRows];
    for (int j = 0; j < kNarrowRows; ++j) words[j] = _mm512_maskz_loadu_epi32(mask, rows[j] + 2 * first);
    transpose_16x16(words);  // words[p]: the 16 rows' pairs first + p
    for (int p = 0; p < count; ++p) {
      for (int n = 0; n < kColumns; ++n) {
        const __m512i weight = _mm512_set1_epi32(static_cast<int>(panel[(first + p) * kPanel + n]));
        accumulators[n] = _mm512_dpbf16_ps(accumulators[n], (__m512bh)words[p], (__m512bh)weight);
      }
    }
  }
  store_narrow_block(accumulators, out_rows, options.accumulate);
}

}  // namespace

uint16_t to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stays a NaN
  // Denormals become zero of their sign, as VCVTNEPS2BF16 treats them (and
  // as VDPBF16PS would read them anyway).
  if (std::fpclassify(value) == FP_SUBNORMAL) return static_cast<uint16_t>((bits >> 16) & 0x8000);
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float from_bf16(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

bool cpu_has_avx512_bf16() {
  // Every CPU with AVX512-BF16 has BW and VL too; the conversion uses them.
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return supported;
}

PackedMatrixBf16::PackedMatrixBf16(const float* rows_by_k, int64_t n, int64_t k)
    : n_(n), k_(k), data_(static_cast<size_t>(panel_count() * pairs() * kPanel) * sizeof(uint32_t)) {
  for (int64_t column = 0; column < n; ++column) {
    uint32_t* panel = data_.as<uint32_t>() + (column / kPanel) * pairs() * kPanel + column % kPanel;
    for (int64_t pair = 0; pair < pairs(); ++pair) {
      const float low = rows_by_k[column * k + 2 * pair];
      const float high = 2 * pair + 1 < k ? rows_by_k[column * k + 2 * pair + 1] : 0.0f;
      panel[pair * kPanel] = static_cast<uint32_t>(to_bf16(low)) |
                             (static_cast<uint32_t>(to_bf16(high)) << 16);
    }
  }
}

float ordered_chain_bf16(const uint16_t* a_row, const PackedMatrixBf16& b, int64_t column,
                         float start) {
  const uint32_t* panel = b.panel(column / kPanel) + column % kPanel;
  float sum = flush_denormal(start);
  for (int64_t pair = 0; pair < b.pairs(); ++pair) {
    const uint32_t word = panel[pair * kPanel];
    const float b_low = flush_denormal(from_bf16(static_cast<uint16_t>(word)));
    const float b_high = flush_denormal(from_bf16(static_cast<uint16_t>(word >> 16)));
    const float a_low = flush_denormal(from_bf16(a_row[2 * pair]));
    const float a_high = flush_denormal(from_bf16(a_row[2 * pair + 1]));
    // Products of bf16 values are exact in fp32: one rounding per addition.
    sum = flush_denormal(sum + a_high * b_high);
    sum = flush_denormal(sum + a_low * b_low);
  }
  return sum;
}

void ordered_gemm_bf16(const uint16_t* const* rows, int64_t row_count, const PackedMatrixBf16& b,
                       float* const* out_rows, const OrderedGemmOptions& options) {
  if (!cpu_has_avx512_bf16()) {
    throw std::runtime_error("bf16 products need a CPU with AVX512-BF16");
  }
  if (b.columns() == 0) return;
  if (b.columns() <= kMaxNarrowColumns) {
    const int64_t narrow = run_narrow_blocks(
        rows, row_count, out_rows, b.rows() * b.columns(), [&](const uint16_t* const* block, float* const* out) {
          with_narrow_columns(b.columns(),
                              [&](auto columns) { narrow_block<decltype(columns)::value>(block, b, out, options); });
        });
    rows += narrow, out_rows += narrow, row_count -= narrow;
  }
  for_each_tile(
      row_count, b.panel_count(), b.rows(),
      [](int64_t tile_rows) -> int64_t { return tile_rows <= 2 ? 4 : 2; },
      [&](int64_t first_row, int64_t rows_in_tile, int64_t first_panel, int64_t panels,
          int64_t prefetch_panels) {
        run_tile(rows + first_row, rows_in_tile, b, first_panel, panels, out_rows + first_row,
                 options, prefetch_panels);
      });
}

}  // namespace encodec::fast
