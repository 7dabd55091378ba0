// SEANet encoder/decoder on the fast kernels (fast_layers.h), built from the reference
// layers so that both paths share one set of weights and one architecture.
#pragma once

#include <variant>
#include <vector>

#include "fast/fast_layers.h"
#include "modules/seanet.h"

namespace encodec::fast {

class ResnetBlock {
 public:
  explicit ResnetBlock(const SEANetResnetBlock& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue) const;

  // Each conv of the block reads ELU of its input.
  const std::vector<Conv1d>& block() const { return block_; }
  const std::optional<Conv1d>& shortcut() const { return shortcut_; }

 private:
  std::vector<Conv1d> block_;
  std::optional<Conv1d> shortcut_;
};

struct Elu {};
using Layer = std::variant<Elu, Conv1d, ConvTranspose1d, Lstm, ResnetBlock>;

class SEANet {
 public:
  // The fast layers keep referring to the reference layers for their metadata
  // (strides, padding, norms, biases), which must outlive them.
  explicit SEANet(const std::vector<SEANetLayer>& reference_layers);
  // Packs the layers one by one and releases each reference layer's kernels as
  // soon as they are packed (release_weights), so that a fast-only model never
  // holds its weights twice, even while loading.
  struct ReleaseReferenceWeights {};
  SEANet(std::vector<SEANetLayer>& reference_layers, ReleaseReferenceWeights);
  // [B, C, T] (any strides) -> [B, C', T'] with the same meaning as the reference.
  torch::Tensor forward(const torch::Tensor& x) const;

  const std::vector<Layer>& layers() const { return layers_; }

 private:
  void append(const SEANetLayer& reference_layer);
  std::vector<Layer> layers_;
};

}  // namespace encodec::fast
