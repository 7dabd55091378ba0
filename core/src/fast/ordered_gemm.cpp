#include "fast/ordered_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "fast/cpu_tier.h"
#include "fast/narrow_rows.h"
#include "fast/tile_schedule.h"

namespace encodec::fast {
namespace {

constexpr int64_t kPanel = PackedMatrix::kPanelWidth;

// cpu_tier(): the best the CPU has, or the one ENCODEC_CPU forces.
OrderedGemmIsa best_isa() {
  switch (cpu_tier()) {
    case VectorIsa::kAvx512: return OrderedGemmIsa::kAvx512;
    case VectorIsa::kAvx2: return OrderedGemmIsa::kAvx2;
    case VectorIsa::kPortable: break;
  }
  return OrderedGemmIsa::kScalar;
}

OrderedGemmIsa& isa_in_use() {
  static OrderedGemmIsa isa = best_isa();
  return isa;
}

// Panels (of 16 columns) per tile: with few rows the tile takes more columns, so
// that enough independent FMA chains hide the FMA latency. AVX2 has half the
// registers, each half as wide: one panel is already two accumulators per row.
int64_t panels_per_tile(int64_t tile_rows, OrderedGemmIsa isa) {
  if (isa == OrderedGemmIsa::kAvx2) return tile_rows <= 2 ? 2 : 1;
  return tile_rows <= 2 ? 4 : 2;
}

struct Tile {
  const float* const* rows;
  int64_t row_count;
  const PackedMatrix* b;
  int64_t first_panel;
  int64_t panel_count;
  float* const* out_rows;  // the tile's rows
  int64_t column_offset;   // of the tile's first column
  const float* bias;  // at the tile's first column, or null
  bool accumulate;
  int64_t prefetch_panels = 0;  // panels after the tile's to fetch into cache (tile_schedule.h)
};

// Columns of panel p of the tile that exist in the matrix.
int64_t valid_columns(const Tile& tile, int64_t p) {
  return std::min(kPanel, tile.b->columns() - (tile.first_panel + p) * kPanel);
}

template <int kRows, int kPanels>
__attribute__((target("avx512f"))) void tile_avx512(const Tile& tile) {
  __m512 accumulators[kRows][kPanels];
  __mmask16 masks[kPanels];
  const float* panels[kPanels];
  for (int p = 0; p < kPanels; ++p) {
    masks[p] = static_cast<__mmask16>((1u << valid_columns(tile, p)) - 1u);
    panels[p] = tile.b->panel(tile.first_panel + p);
    const __m512 start =
        tile.bias ? _mm512_maskz_loadu_ps(masks[p], tile.bias + p * kPanel) : _mm512_setzero_ps();
    for (int r = 0; r < kRows; ++r) accumulators[r][p] = start;
  }
  const float* rows[kRows];
  for (int r = 0; r < kRows; ++r) rows[r] = tile.rows[r];
  const int64_t depth = tile.b->rows();
  // The next panels, a cache line (one k) of each per step, as fast as this tile reads its own.
  const float* next = tile.prefetch_panels > 0 ? tile.b->panel(tile.first_panel + kPanels) : nullptr;
  const int64_t next_panels = tile.prefetch_panels;
  for (int64_t k = 0; k < depth; ++k) {
    if (next) {
      for (int64_t p = 0; p < next_panels; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(next + (p * depth + k) * kPanel), _MM_HINT_T1);
      }
    }
    __m512 b_values[kPanels];
    for (int p = 0; p < kPanels; ++p) b_values[p] = _mm512_load_ps(panels[p] + k * kPanel);
    for (int r = 0; r < kRows; ++r) {
      const __m512 a_value = _mm512_set1_ps(rows[r][k]);
      for (int p = 0; p < kPanels; ++p) {
        accumulators[r][p] = _mm512_fmadd_ps(a_value, b_values[p], accumulators[r][p]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int p = 0; p < kPanels; ++p) {
      float* target = tile.out_rows[r] + tile.column_offset + p * kPanel;
      __m512 value = accumulators[r][p];
      if (tile.accumulate) value = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[p], target), value);
      _mm512_mask_storeu_ps(target, masks[p], value);
    }
  }
}

template <int kRows>
void dispatch_panels(const Tile& tile) {
  switch (tile.panel_count) {
    case 1: return tile_avx512<kRows, 1>(tile);
    case 2: return tile_avx512<kRows, 2>(tile);
    case 3: return tile_avx512<kRows, 3>(tile);
    default: return tile_avx512<kRows, 4>(tile);
  }
}

void run_tile_avx512(const Tile& tile) {
  switch (tile.row_count) {
    case 1: return dispatch_panels<1>(tile);
    case 2: return dispatch_panels<2>(tile);
    case 3: return dispatch_panels<3>(tile);
    case 4: return dispatch_panels<4>(tile);
    case 5: return dispatch_panels<5>(tile);
    default: return dispatch_panels<6>(tile);
  }
}

// AVX2 + FMA: a 16-column panel as two 8-lane halves, the same chains.
template <int kRows, int kPanels>
__attribute__((target("avx2,fma"))) void tile_avx2(const Tile& tile) {
  constexpr int kHalves = 2 * kPanels;
  __m256 accumulators[kRows][kHalves];
  __m256i masks[kHalves];
  const float* halves[kHalves];
  for (int h = 0; h < kHalves; ++h) {
    const int p = h / 2, offset = (h % 2) * 8;
    const int64_t valid = std::clamp<int64_t>(valid_columns(tile, p) - offset, 0, 8);
    alignas(32) int32_t lanes[8];
    for (int lane = 0; lane < 8; ++lane) lanes[lane] = lane < valid ? -1 : 0;
    masks[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    halves[h] = tile.b->panel(tile.first_panel + p) + offset;
    const __m256 start = tile.bias ? _mm256_maskload_ps(tile.bias + p * kPanel + offset, masks[h])
                                   : _mm256_setzero_ps();
    for (int r = 0; r < kRows; ++r) accumulators[r][h] = start;
  }
  const float* rows[kRows];
  for (int r = 0; r < kRows; ++r) rows[r] = tile.rows[r];
  const int64_t depth = tile.b->rows();
  for (int64_t k = 0; k < depth; ++k) {
    __m256 b_values[kHalves];
    for (int h = 0; h < kHalves; ++h) b_values[h] = _mm256_load_ps(halves[h] + k * kPanel);
    for (int r = 0; r < kRows; ++r) {
      const __m256 a_value = _mm256_set1_ps(rows[r][k]);
      for (int h = 0; h < kHalves; ++h) {
        accumulators[r][h] = _mm256_fmadd_ps(a_value, b_values[h], accumulators[r][h]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int h = 0; h < kHalves; ++h) {
      float* target = tile.out_rows[r] + tile.column_offset + (h / 2) * kPanel + (h % 2) * 8;
      __m256 value = accumulators[r][h];
      if (tile.accumulate) value = _mm256_add_ps(_mm256_maskload_ps(target, masks[h]), value);
      _mm256_maskstore_ps(target, masks[h], value);
    }
  }
}

void run_tile_avx2(const Tile& tile) {
  const bool two = tile.panel_count >= 2;
  switch (tile.row_count) {
    case 1: return two ? tile_avx2<1, 2>(tile) : tile_avx2<1, 1>(tile);
    case 2: return two ? tile_avx2<2, 2>(tile) : tile_avx2<2, 1>(tile);
    case 3: return tile_avx2<3, 1>(tile);
    case 4: return tile_avx2<4, 1>(tile);
    case 5: return tile_avx2<5, 1>(tile);
    default: return tile_avx2<6, 1>(tile);
  }
}

// The narrow path (narrow_rows.h): 16 rows of a product with kColumns columns,
// each lane one row's chains, in the order the tiles run them.
template <int kColumns>
__attribute__((target("avx512f"))) void narrow_block_avx512(const float* const* rows, const PackedMatrix& b,
                                                            float* const* out_rows,
                                                            const OrderedGemmOptions& options) {
  __m512 accumulators[kColumns];
  start_narrow_block(accumulators, options.bias);
  const float* panel = b.panel(0);
  const int64_t depth = b.rows();
  for (int64_t first = 0; first < depth; first += kNarrowRows) {
    const int count = static_cast<int>(std::min<int64_t>(kNarrowRows, depth - first));
    const auto mask = static_cast<__mmask16>((1u << count) - 1u);
    __m512i values[kNarrowRows];
    for (int j = 0; j < kNarrowRows; ++j) values[j] = _mm512_maskz_loadu_epi32(mask, rows[j] + first);
    transpose_16x16(values);  // values[k]: the 16 rows' values at depth first + k
    for (int k = 0; k < count; ++k) {
      const __m512 a_values = _mm512_castsi512_ps(values[k]);
      for (int n = 0; n < kColumns; ++n) {
        accumulators[n] =
            _mm512_fmadd_ps(a_values, _mm512_set1_ps(panel[(first + k) * kPanel + n]), accumulators[n]);
      }
    }
  }
  store_narrow_block(accumulators, out_rows, options.accumulate);
}

// The same chains one element at a time (std::fma rounds once, as the vector FMA).
void run_tile_scalar(const Tile& tile) {
  const int64_t depth = tile.b->rows();
  for (int64_t r = 0; r < tile.row_count; ++r) {
    for (int64_t p = 0; p < tile.panel_count; ++p) {
      const float* panel = tile.b->panel(tile.first_panel + p);
      for (int64_t j = 0; j < valid_columns(tile, p); ++j) {
        float sum = tile.bias ? tile.bias[p * kPanel + j] : 0.0f;
        for (int64_t k = 0; k < depth; ++k) sum = std::fma(tile.rows[r][k], panel[k * kPanel + j], sum);
        float& target = tile.out_rows[r][tile.column_offset + p * kPanel + j];
        target = tile.accumulate ? target + sum : sum;
      }
    }
  }
}

}  // namespace

OrderedGemmIsa ordered_gemm_isa() { return isa_in_use(); }

void set_ordered_gemm_isa(OrderedGemmIsa isa) {
  if (isa == OrderedGemmIsa::kAvx512 && !__builtin_cpu_supports("avx512f")) {
    throw std::invalid_argument("this CPU has no AVX-512");
  }
  if (isa == OrderedGemmIsa::kAvx2 &&
      !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    throw std::invalid_argument("this CPU has no AVX2 with FMA");
  }
  isa_in_use() = isa;
}

PackedMatrix::PackedMatrix(const float* rows_by_k, int64_t n, int64_t k)
    : n_(n), k_(k), data_(static_cast<size_t>(panel_count() * k * kPanel) * sizeof(float)) {
  // The buffer starts as zeros: the padding columns of the last panel stay 0.
  float* const packed = data_.as<float>();
  for (int64_t column = 0; column < n; ++column) {
    float* panel = packed + (column / kPanel) * k * kPanel + column % kPanel;
    for (int64_t depth = 0; depth < k; ++depth) panel[depth * kPanel] = rows_by_k[column * k + depth];
  }
}

void ordered_gemm(const float* const* rows, int64_t row_count, const PackedMatrix& b,
                  float* const* out_rows, const OrderedGemmOptions& options) {
  if (b.columns() == 0) return;
  const OrderedGemmIsa isa = isa_in_use();
  if (isa == OrderedGemmIsa::kAvx512 && b.columns() <= kMaxNarrowColumns) {
    const int64_t narrow = run_narrow_blocks(
        rows, row_count, out_rows, b.rows() * b.columns(), [&](const float* const* block, float* const* out) {
          with_narrow_columns(b.columns(), [&](auto columns) {
            narrow_block_avx512<decltype(columns)::value>(block, b, out, options);
          });
        });
    rows += narrow, out_rows += narrow, row_count -= narrow;
  }
  for_each_tile(
      row_count, b.panel_count(), b.rows(),
      [isa](int64_t tile_rows) { return panels_per_tile(tile_rows, isa); },
      [&](int64_t first_row, int64_t rows_in_tile, int64_t first_panel, int64_t panels,
          int64_t prefetch_panels) {
        Tile tile{rows + first_row,
                  rows_in_tile,
                  &b,
                  first_panel,
                  panels,
                  out_rows + first_row,
                  first_panel * kPanel,
                  options.bias ? options.bias + first_panel * kPanel : nullptr,
                  options.accumulate,
                  prefetch_panels};
        switch (isa) {
          case OrderedGemmIsa::kAvx512: run_tile_avx512(tile); break;
          case OrderedGemmIsa::kAvx2: run_tile_avx2(tile); break;
          case OrderedGemmIsa::kScalar: run_tile_scalar(tile); break;
        }
      });
}

void ordered_gemm(const float* a, int64_t lda, int64_t row_count, const PackedMatrix& b, float* c,
                  int64_t ldc, const OrderedGemmOptions& options) {
  for_strided_row_chunks(a, lda, row_count, c, ldc,
                         [&](const float* const* rows, float* const* out_rows, int64_t count) {
                           ordered_gemm(rows, count, b, out_rows, options);
                         });
}

}  // namespace encodec::fast
