#include "modules/weights.h"

#include <sstream>

namespace encodec {

std::string shape_to_string(const TensorShape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

WeightLoader::WeightLoader(const StateDict& state, std::string source)
    : state_(&state), source_(std::move(source)) {}

WeightLoader::WeightLoader(StateDict&& state, std::string source)
    : owned_state_(std::move(state)), state_(&owned_state_), source_(std::move(source)) {}

WeightLoader::WeightLoader(TensorSynthesizer synthesize)
    : synthesize_(std::move(synthesize)), source_("synthesized weights") {}

torch::Tensor WeightLoader::take(const std::string& name, const TensorShape& expected_shape) {
  taken_.emplace_back(name, expected_shape);
  used_.insert(name);
  if (synthesize_) return synthesize_(name, expected_shape).to(torch::kFloat32).contiguous();
  auto found = state_->find(name);
  if (found == state_->end()) {
    throw CheckpointError(source_ + ": missing tensor '" + name + "' (expected shape " +
                          shape_to_string(expected_shape) + ")");
  }
  const torch::Tensor& tensor = found->second;
  if (tensor.sizes().vec() != expected_shape) {
    throw CheckpointError(source_ + ": tensor '" + name + "' has shape " +
                          shape_to_string(tensor.sizes().vec()) + ", expected " +
                          shape_to_string(expected_shape));
  }
  if (!tensor.is_floating_point()) {
    throw CheckpointError(source_ + ": tensor '" + name + "' is not a floating-point tensor");
  }
  torch::Tensor result = tensor.to(torch::kFloat32).contiguous();
  if (state_ == &owned_state_) owned_state_.erase(found);
  return result;
}

void WeightLoader::expect_all_used() const {
  if (!state_) return;
  std::vector<std::string> unexpected;
  for (const auto& entry : *state_) {
    if (!used_.count(entry.first)) unexpected.push_back(entry.first);
  }
  if (unexpected.empty()) return;
  std::string message = source_ + ": unexpected tensor" + (unexpected.size() > 1 ? "s " : " ");
  for (size_t i = 0; i < unexpected.size() && i < 5; ++i) {
    message += (i ? ", '" : "'") + unexpected[i] + "'";
  }
  if (unexpected.size() > 5) message += " and " + std::to_string(unexpected.size() - 5) + " more";
  throw CheckpointError(message + " (not part of this model's architecture)");
}

}  // namespace encodec
