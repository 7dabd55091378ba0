// The LM step with exact kernels: the reference's arithmetic, float for float,
// without its cost. Per frame it projects only the new time step's keys and
// values (a cache holds the past ones) and runs the linears as single-row kernels
// that round as OpenBLAS does for the reference's shapes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lm/lm_stepper.h"
#include "lm/lm_weights.h"

namespace encodec::lm {

// A Linear layer prepared for the kernel OpenBLAS picks for it (see exact_kernels.h).
struct FastLinear {
  int out_features = 0, in_features = 0;
  bool small_tn = false;       // else the regular kernel's chain
  std::vector<float> weight;   // packed for its kernel (exact::pack_*_weights)
  std::vector<float> bias;     // [out]
  // What apply() reads: the vectors above, or their copies in FastWeights' arena.
  const float* packed_weight = nullptr;
  const float* packed_bias = nullptr;
  FastLinear() = default;
  FastLinear(const torch::Tensor& weight, const torch::Tensor& bias, int64_t rows);
  // y = W x + b (x: in_features, y: out_features).
  void apply(const float* x, float* y) const;
};

struct FastLayer {
  FastLinear q;           // rows of in_proj_weight [0, dim)
  FastLinear kv_chain;    // rows [dim, 3 dim), the regular kernel (products of many rows)
  FastLinear kv_small;    // the same weights for the small TN kernel (products of few rows)
  int kv_small_max_rows = 0;  // products of at most this many rows take the small kernel
  FastLinear out_proj, linear1, linear2;
};

struct FastWeights {
  std::vector<FastLayer> layers;
  std::vector<FastLinear> heads;  // n_q x [card, dim]
  std::vector<float> position_divisors;
  // Every packed weight in one block, in the order a step reads them, on 2 MB
  // pages where the kernel allows: a step streams ~16 MB of weights (the
  // official LM at 6 kbps) and 4 kB pages would make it miss the TLB all along.
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> arena;
};

// `count` floats, zeroed, 2 MB-aligned and advised to use huge pages (or
// nullptr if the allocation fails).
std::unique_ptr<float[], FastWeights::Free> allocate_huge_page_floats(size_t count);

// Prepares weights.fast, or sets weights.fast_unavailable_reason when the exact
// kernels cannot run here or differ from LibTorch in the self-check (which
// compares the two steppers' probabilities bit for bit over enough steps to
// take every kernel path, including the switches between them), once per set
// of weights, on first use (thread-safe): the self-check runs the reference
// steps, about as long as loading the LM, so models that never run these
// kernels (the deterministic ones, a live client's) never pay for it.
// Returns weights.fast (null when unavailable).
const FastWeights* fast_weights(const SharedLmWeights& weights);

}  // namespace encodec::lm
