// SEANet encoder/decoder on the fast kernels (fast_layers.h), built from the reference
// layers so that both paths share one set of weights and one architecture.
#pragma once

#include <functional>
#include <variant>
#include <vector>

#include "fast/fast_layers.h"
#include "modules/seanet.h"

namespace encodec::fast {

class ResnetBlock {
 public:
  ResnetBlock(const SEANetResnetBlock& reference, Precision precision);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue) const;

  // Each conv of the block reads ELU of its input.
  const std::vector<Conv1d>& block() const { return block_; }
  const std::optional<Conv1d>& shortcut() const { return shortcut_; }

 private:
  std::vector<Conv1d> block_;
  std::optional<Conv1d> shortcut_;
};

struct Elu {};

// The precision of each kind of layer in a model (the SEANets read the conv and
// LSTM fields, the quantizer its own). bf16 models use
// for_precision(kBf16), the choice measured by bench/precision (see there and
// the README); the other plans are for measuring alternatives.
struct LayerPrecisions {
  Precision first_conv = Precision::kFp32;  // the encoder's input conv, the decoder's first
  Precision convs = Precision::kFp32;       // every other conv, residual blocks included
  Precision transposed_convs = Precision::kFp32;
  Precision lstm = Precision::kFp32;
  Precision last_conv = Precision::kFp32;  // the encoder's embedding conv, the decoder's output conv
  Precision quantizer = Precision::kFp32;  // the nearest-neighbour search

  static LayerPrecisions all(Precision precision);
  static LayerPrecisions for_precision(Precision precision);
};

using Layer = std::variant<Elu, Conv1d, ConvTranspose1d, Lstm, ResnetBlock>;

class SEANet {
 public:
  // The fast layers keep referring to the reference layers for their metadata
  // (strides, padding, norms, biases), which must outlive them.
  explicit SEANet(const std::vector<SEANetLayer>& reference_layers,
                  const LayerPrecisions& precisions = {});
  // Packs the layers one by one and releases each reference layer's kernels as
  // soon as they are packed (release_weights), so that a fast-only model never
  // holds its weights twice, even while loading.
  struct ReleaseReferenceWeights {};
  SEANet(std::vector<SEANetLayer>& reference_layers, ReleaseReferenceWeights,
         const LayerPrecisions& precisions = {});
  // [B, C, T] (any strides) -> [B, C', T'] with the same meaning as the reference.
  torch::Tensor forward(const torch::Tensor& x) const;
  // The same, calling `after_layer(i)` once layer i is done (per-layer
  // profiles: bench/precision).
  torch::Tensor forward(const torch::Tensor& x,
                        const std::function<void(size_t layer_index)>& after_layer) const;

  const std::vector<Layer>& layers() const { return layers_; }

 private:
  void append(const SEANetLayer& reference_layer, bool first_conv, bool last_conv,
              const LayerPrecisions& precisions);
  std::vector<Layer> layers_;
};

}  // namespace encodec::fast
