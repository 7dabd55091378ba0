// The loss balancer (encodec/balancer.py): each loss's gradient with respect
// to the model's output is taken apart, its norm averaged over time with an
// EMA, and the gradients rescaled so that loss k contributes a share
// weight_k / sum(weights) of a fixed total norm, whatever its own scale. Then
// the combined gradient flows back from the output into the model.
//
// Thread safety: an object belongs to one thread.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

#include "encodec/train.h"

namespace encodec::train {

class Balancer {
 public:
  // `weights`: one per loss name given to backward(); every name needs a weight.
  Balancer(std::map<std::string, double> weights, const BalancerOptions& options = {});

  // Adds to the gradients of everything `output` depends on:
  // sum_k scale_k * d loss_k / d output, scale_k = ratio_k * total_norm /
  // (epsilon + EMA of ||d loss_k / d output||) (or weight_k without rescaling).
  // The graphs behind the losses are kept (retain_graph) for other backward passes.
  void backward(const std::map<std::string, torch::Tensor>& losses, const torch::Tensor& output);

  // The EMA of each loss's gradient norm after the last backward().
  const std::map<std::string, double>& average_norms() const { return average_norms_; }

  // The averager's state ({total, weight sum} per loss), to save and resume.
  std::map<std::string, std::pair<double, double>> state() const;
  void set_state(const std::map<std::string, std::pair<double, double>>& state);

 private:
  std::map<std::string, double> weights_;
  BalancerOptions options_;
  std::map<std::string, double> total_, fix_, average_norms_;
};

}  // namespace encodec::train
