// The LM step on the deterministic kernels (det_kernels.h, "det1"): the
// reference's network (embeddings, streaming transformer with its past
// context, softmax heads) with a key/value cache, every probability the same
// bits on every CPU tier and thread count. Not the Python package's bits (its
// BLAS decides those): files coded with it are marked "lmk": "det1".
#pragma once

#include <memory>
#include <vector>

#include "lm/lm_stepper.h"
#include "lm/lm_weights.h"

namespace encodec::lm {

// A Linear layer packed for det::TierKernels::linear.
struct DetLinear {
  int out_features = 0, in_features = 0;
  std::vector<float> packed, bias;
  DetLinear() = default;
  DetLinear(const torch::Tensor& weight, const torch::Tensor& bias);
  // Several Linear layers as one: their outputs one after the other.
  DetLinear(const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& biases);
};

struct DetLayer {
  DetLinear q, kv, out_proj, linear1, linear2;  // q: in_proj rows [0, dim), kv: [dim, 3 dim)
  std::vector<float> norm1_weight, norm1_bias, norm2_weight, norm2_bias;
};

struct DetWeights {
  std::vector<DetLayer> layers;
  DetLinear heads;  // the n_q heads as one [n_q * card, dim] product
  std::vector<float> norm_in_weight, norm_in_bias;
  std::vector<float> position_divisors;
  float query_scale = 1;  // sqrt(head_dim), by which queries are divided
};

// weights.det, prepared on first use (thread-safe).
const DetWeights& det_weights(const LmModel::Weights& weights);

// The stepper on the kernels of cpu_tier() at the time it is made.
std::unique_ptr<LmStepper> make_det_lm_stepper(SharedLmWeights weights, int num_codebooks);

}  // namespace encodec::lm
