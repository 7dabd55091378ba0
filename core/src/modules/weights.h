// Takes tensors out of a state_dict by name, checking each one's shape, and
// remembers which names were used so that leftovers can be reported: the strict
// `load_state_dict` of the reference, with errors that name the tensor.
// It can instead synthesize every tensor it is asked for (random models for
// benchmarks, or listing the names and shapes an architecture expects).
#pragma once

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "encodec/checkpoint.h"

namespace encodec {

using TensorShape = std::vector<int64_t>;
using TensorSynthesizer =
    std::function<torch::Tensor(const std::string& name, const TensorShape& shape)>;

class WeightLoader {
 public:
  // Reads from `state`, which must outlive the loader; `source` names the
  // checkpoint in error messages.
  WeightLoader(const StateDict& state, std::string source);
  // Owns `state` and hands each tensor over as it is taken (the loader keeps no
  // reference to it), so that a model built from it never holds a tensor twice.
  WeightLoader(StateDict&& state, std::string source);
  // Makes each requested tensor with `synthesize` instead of reading it.
  explicit WeightLoader(TensorSynthesizer synthesize);
  WeightLoader(const WeightLoader&) = delete;  // state_ may point into this object
  WeightLoader& operator=(const WeightLoader&) = delete;

  // The tensor `name` as contiguous float32; throws CheckpointError when it is
  // missing or its shape differs from `expected_shape`.
  torch::Tensor take(const std::string& name, const TensorShape& expected_shape);

  // Throws CheckpointError listing tensors of the checkpoint that were never taken.
  void expect_all_used() const;

  // Every tensor taken so far, in order.
  const std::vector<std::pair<std::string, TensorShape>>& taken() const { return taken_; }

 private:
  StateDict owned_state_;
  const StateDict* state_ = nullptr;
  TensorSynthesizer synthesize_;
  std::string source_;
  std::set<std::string> used_;
  std::vector<std::pair<std::string, TensorShape>> taken_;
};

std::string shape_to_string(const TensorShape& shape);

}  // namespace encodec
