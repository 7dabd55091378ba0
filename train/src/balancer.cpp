#include "balancer.h"

#include <stdexcept>
#include <vector>

namespace encodec::train {

Balancer::Balancer(std::map<std::string, double> weights, const BalancerOptions& options)
    : weights_(std::move(weights)), options_(options) {}

void Balancer::backward(const std::map<std::string, torch::Tensor>& losses, const torch::Tensor& output) {
  std::map<std::string, torch::Tensor> grads;
  std::map<std::string, double> norms;
  for (const auto& [name, loss] : losses) {
    if (!weights_.count(name)) throw std::invalid_argument("balancer: no weight for loss '" + name + "'");
    torch::Tensor grad = torch::autograd::grad({loss}, {output}, {}, /*retain_graph=*/true,
                                               /*create_graph=*/false, /*allow_unused=*/true)[0];
    if (!grad.defined()) grad = torch::zeros_like(output);
    torch::Tensor norm;
    if (options_.per_batch_item) {
      norm = grad.reshape({grad.size(0), -1}).norm(2, 1).mean();
    } else {
      norm = grad.norm();
    }
    norms[name] = norm.item<double>();
    grads[name] = grad;
  }
  // averager(ema_decay): total = total * beta + value, fix = fix * beta + 1.
  const double beta = options_.ema_decay;
  average_norms_.clear();
  for (const auto& [name, norm] : norms) {
    total_[name] = total_[name] * beta + norm;
    fix_[name] = fix_[name] * beta + 1.0;
  }
  // The reference returns every key the averager has seen, not only this call's.
  for (const auto& [name, total] : total_) average_norms_[name] = total / fix_[name];
  double total_weights = 0;
  for (const auto& [name, norm] : average_norms_) total_weights += weights_.at(name);

  torch::Tensor out_grad = torch::zeros_like(output);
  for (const auto& [name, grad] : grads) {
    const double scale = options_.rescale_grads
                             ? weights_.at(name) / total_weights * options_.total_norm /
                                   (options_.epsilon + average_norms_.at(name))
                             : weights_.at(name);
    out_grad = out_grad + grad * scale;
  }
  output.backward(out_grad, /*retain_graph=*/true);
}

std::map<std::string, std::pair<double, double>> Balancer::state() const {
  std::map<std::string, std::pair<double, double>> state;
  for (const auto& [name, total] : total_) state[name] = {total, fix_.at(name)};
  return state;
}

void Balancer::set_state(const std::map<std::string, std::pair<double, double>>& state) {
  total_.clear();
  fix_.clear();
  for (const auto& [name, value] : state) {
    total_[name] = value.first;
    fix_[name] = value.second;
  }
}

}  // namespace encodec::train
