// The tensors of an LM (the reference's LMModel state_dict) and what is derived
// from them once at load time.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "encodec/lm.h"

namespace encodec {

namespace lm {
struct FastWeights;  // fast_lm.h: the exact kernels' layouts
struct DetWeights;   // det_lm.h: the deterministic kernels' layouts
}

struct LmLayerWeights {
  torch::Tensor in_proj_weight, in_proj_bias;    // [3 dim, dim], [3 dim]: q, k, v
  torch::Tensor out_proj_weight, out_proj_bias;  // [dim, dim], [dim]
  torch::Tensor linear1_weight, linear1_bias;    // [hidden, dim], [hidden]
  torch::Tensor linear2_weight, linear2_bias;    // [dim, hidden], [dim]
  torch::Tensor norm1_weight, norm1_bias, norm2_weight, norm2_bias;
};

struct LmModel::Weights {
  LmConfig config;
  std::vector<torch::Tensor> emb;  // n_q x [card + 1, dim]
  torch::Tensor norm_in_weight, norm_in_bias;
  std::vector<LmLayerWeights> layers;
  std::vector<torch::Tensor> linears_weight, linears_bias;  // n_q x [card, dim], [card]
  // max_period ** (arange(dim / 2) / (dim / 2 - 1)) as the reference computes it
  // ([1, 1, dim / 2] float32): positions are divided by it.
  torch::Tensor position_divisors;
  // Made on first use (lm::fast_weights): present when the exact kernels passed
  // the self-check, else why not.
  mutable std::once_flag fast_once;
  mutable std::shared_ptr<const lm::FastWeights> fast;
  mutable std::string fast_unavailable_reason;
  // The deterministic kernels' layouts, made on first use (lm::det_weights).
  mutable std::once_flag det_once;
  mutable std::shared_ptr<const lm::DetWeights> det;

  Weights();
  ~Weights();
};

}  // namespace encodec
