// SLSTM: a multi-layer LSTM over the time axis of a [B, C, T] activation, with
// the skip connection of the reference (encodec/modules/lstm.py).
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "modules/weights.h"

namespace encodec {

class SLSTM {
 public:
  // Reads `<prefix>.lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l<k>`.
  SLSTM(WeightLoader& weights, const std::string& prefix, int64_t dimension, int64_t num_layers);

  // x: [B, C, T] -> [B, C, T], starting from zero state.
  torch::Tensor forward(const torch::Tensor& x) const;

  int64_t dimension() const { return dimension_; }
  int64_t num_layers() const { return num_layers_; }
  // Flat parameters in torch's order: per layer w_ih, w_hh, b_ih, b_hh.
  const std::vector<torch::Tensor>& parameters() const { return parameters_; }
  // Frees the weight matrices once a fast copy holds them (as SConv1d::release_weight).
  void release_weights();

 private:
  int64_t dimension_, num_layers_;
  std::vector<torch::Tensor> parameters_;
};

}  // namespace encodec
