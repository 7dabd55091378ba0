// How the ordered kernels (ordered_gemm.h, ordered_gemm_bf16.h) cut a product
// into tiles of rows x 16-column panels and share them between threads. Each
// output element belongs to exactly one tile, so the split never changes a result.
#pragma once

#include <algorithm>
#include <cstdint>

#include <ATen/Parallel.h>

namespace encodec::fast {

inline constexpr int64_t kMaxTileRows = 6;

// Calls run_tile(first_row, rows, first_panel, panels, prefetch_panels) for
// every tile, on LibTorch's threads. `tile_panels(rows)` gives the panels per
// tile for tiles of that many rows. Tiles walk the rows fastest: a panel block
// stays in cache while the rows pass over it. The last row block of a panel
// block gets the next block's panel count as `prefetch_panels` (0 for the
// others): a tile over warm panels can fetch the next ones, which the first
// row block would otherwise wait for (a batch of a few streams reads large
// weights, the LSTMs', from memory every tick).
template <typename TilePanels, typename RunTile>
void for_each_tile(int64_t row_count, int64_t panel_count, int64_t depth, TilePanels&& tile_panels,
                   RunTile&& run_tile) {
  if (row_count <= 0 || panel_count <= 0) return;
  const int64_t tile_rows = std::min(row_count, kMaxTileRows);
  const int64_t panels = tile_panels(tile_rows);
  const int64_t row_blocks = (row_count + tile_rows - 1) / tile_rows;
  const int64_t panel_blocks = (panel_count + panels - 1) / panels;
  // About a million multiply-adds per task: enough to pay for waking a thread.
  const int64_t work_per_tile = tile_rows * panels * 16 * depth;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, work_per_tile));
  at::parallel_for(0, row_blocks * panel_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t first_row = (index % row_blocks) * tile_rows;
      const int64_t first_panel = (index / row_blocks) * panels;
      const int64_t row_block = index % row_blocks, next_panel = first_panel + panels;
      const int64_t prefetch_panels = row_blocks > 1 && row_block == row_blocks - 1 && next_panel < panel_count
                                          ? std::min(panels, panel_count - next_panel)
                                          : 0;
      run_tile(first_row, std::min(tile_rows, row_count - first_row), first_panel,
               std::min(panels, panel_count - first_panel), prefetch_panels);
    }
  });
}

// Calls `product(rows, out_rows, count)` over the rows a + m * lda (outputs
// c + m * ldc) in chunks whose row pointers live on the stack, so that the
// strided products allocate nothing on the per-frame path.
template <typename Product>
void for_strided_row_chunks(const float* a, int64_t lda, int64_t row_count, float* c, int64_t ldc,
                            Product&& product) {
  constexpr int64_t kChunk = 256;
  const float* rows[kChunk];
  float* out_rows[kChunk];
  for (int64_t first = 0; first < row_count; first += kChunk) {
    const int64_t count = std::min(kChunk, row_count - first);
    for (int64_t m = 0; m < count; ++m) {
      rows[m] = a + (first + m) * lda;
      out_rows[m] = c + (first + m) * ldc;
    }
    product(rows, out_rows, count);
  }
}

}  // namespace encodec::fast
