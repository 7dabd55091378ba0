// SEANet encoder/decoder on the fast (oneDNN) kernels, built from the reference
// layers so that both paths share one set of weights and one architecture.
#pragma once

#include <variant>
#include <vector>

#include "fast/onednn_layers.h"
#include "modules/seanet.h"

namespace encodec::fast {

class ResnetBlock {
 public:
  explicit ResnetBlock(const SEANetResnetBlock& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue) const;

 private:
  std::vector<Conv1d> block_;
  std::optional<Conv1d> shortcut_;
};

struct Elu {};
using Layer = std::variant<Elu, Conv1d, ConvTranspose1d, Lstm, ResnetBlock>;

class SEANet {
 public:
  explicit SEANet(const std::vector<SEANetLayer>& reference_layers);
  // [B, C, T] (any strides) -> [B, C', T'] with the same meaning as the reference.
  torch::Tensor forward(const torch::Tensor& x) const;

 private:
  std::vector<Layer> layers_;
};

}  // namespace encodec::fast
