#include "fast/fast_seanet.h"

#include <algorithm>
#include <utility>

namespace encodec::fast {

ResnetBlock::ResnetBlock(const SEANetResnetBlock& reference, Precision precision) {
  block_.reserve(reference.block().size());
  for (const SConv1d& conv : reference.block()) block_.emplace_back(conv, precision);
  if (reference.shortcut()) shortcut_.emplace(*reference.shortcut(), precision);
  TORCH_CHECK(block_.size() >= 2, "a SEANet residual block has at least two convs");
}

torch::Tensor ResnetBlock::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  // Every conv of the block is preceded by an ELU: the first one is applied
  // while padding, the others fused into the conv before them.
  torch::Tensor h = block_.front().forward(x, Epilogue{{}, block_.size() > 1}, /*elu_input=*/true);
  for (size_t i = 1; i + 1 < block_.size(); ++i) h = block_[i].forward(h, Epilogue{{}, true});
  // The last conv adds its output onto the shortcut's, in place.
  torch::Tensor skip = shortcut_ ? shortcut_->forward(x) : x.contiguous().clone();
  return block_.back().forward(h, Epilogue{skip, epilogue.elu});
}

LayerPrecisions LayerPrecisions::all(Precision precision) {
  return {precision, precision, precision, precision, precision, precision};
}

LayerPrecisions LayerPrecisions::for_precision(Precision precision) {
  LayerPrecisions plan = all(precision);
  // Measured with bench/precision (official 24 kHz size, 1 thread, ms per s of
  // audio, fp32 -> bf16): the LSTMs 23 -> 12.5 (the largest single gain: their
  // per-step products read 4 MB of weights in fp32, 2 MB in bf16), the strided
  // and transposed convs 1.7-2.7x, the residual blocks 1.1-1.8x (0.9x at 32
  // channels, where the products are too small to gain), the search 1.25x;
  // the decode SNR against fp32 is the same (41.9 dB) with the LSTM or the
  // search in bf16 or in fp32, and 0.8 dB higher with both end convs in fp32,
  // which costs their 2-4x. The encoder's first conv (1 -> 32 channels, 7
  // taps) stays fp32: its odd depth makes every window a separate conversion
  // with a zero after it, and it ran 5x slower in bf16 (0.27 -> 1.3 ms).
  plan.first_conv = Precision::kFp32;
  return plan;
}

namespace {

// Indices of the first and last plain convs (the plan may keep them in fp32).
std::pair<size_t, size_t> end_convs(const std::vector<SEANetLayer>& reference_layers) {
  size_t first_conv = reference_layers.size(), last_conv = 0;
  for (size_t i = 0; i < reference_layers.size(); ++i) {
    if (!std::holds_alternative<SConv1d>(reference_layers[i])) continue;
    first_conv = std::min(first_conv, i);
    last_conv = i;
  }
  return {first_conv, last_conv};
}

}  // namespace

SEANet::SEANet(const std::vector<SEANetLayer>& reference_layers, const LayerPrecisions& precisions) {
  const auto [first_conv, last_conv] = end_convs(reference_layers);
  layers_.reserve(reference_layers.size());
  for (size_t i = 0; i < reference_layers.size(); ++i) {
    append(reference_layers[i], i == first_conv, i == last_conv, precisions);
  }
}

SEANet::SEANet(std::vector<SEANetLayer>& reference_layers, ReleaseReferenceWeights,
               const LayerPrecisions& precisions) {
  const auto [first_conv, last_conv] = end_convs(reference_layers);
  layers_.reserve(reference_layers.size());
  for (size_t i = 0; i < reference_layers.size(); ++i) {
    append(reference_layers[i], i == first_conv, i == last_conv, precisions);
    release_weights(reference_layers[i]);
  }
}

void SEANet::append(const SEANetLayer& layer, bool first_conv, bool last_conv,
                    const LayerPrecisions& precisions) {
  std::visit(
      [&](const auto& module) {
        using Module = std::decay_t<decltype(module)>;
        if constexpr (std::is_same_v<Module, encodec::Elu>) {
          layers_.emplace_back(Elu{});
        } else if constexpr (std::is_same_v<Module, SConv1d>) {
          const Precision precision = first_conv  ? precisions.first_conv
                                      : last_conv ? precisions.last_conv
                                                  : precisions.convs;
          layers_.emplace_back(std::in_place_type<Conv1d>, module, precision);
        } else if constexpr (std::is_same_v<Module, SConvTranspose1d>) {
          layers_.emplace_back(std::in_place_type<ConvTranspose1d>, module,
                               precisions.transposed_convs);
        } else if constexpr (std::is_same_v<Module, SLSTM>) {
          layers_.emplace_back(std::in_place_type<Lstm>, module, precisions.lstm);
        } else {
          layers_.emplace_back(std::in_place_type<ResnetBlock>, module, precisions.convs);
        }
      },
      layer);
}

torch::Tensor SEANet::forward(const torch::Tensor& x) const { return forward(x, {}); }

torch::Tensor SEANet::forward(const torch::Tensor& x,
                              const std::function<void(size_t layer_index)>& after_layer) const {
  torch::Tensor h = x.transpose(1, 2).contiguous();
  for (size_t i = 0; i < layers_.size(); ++i) {
    // An ELU is fused into the layer before it: only that layer reads its output.
    const bool elu_next = i + 1 < layers_.size() && std::holds_alternative<Elu>(layers_[i + 1]);
    h = std::visit(
        [&h, elu_next, i](const auto& module) -> torch::Tensor {
          using Module = std::decay_t<decltype(module)>;
          if constexpr (std::is_same_v<Module, Elu>) {
            return i == 0 ? torch::elu(h) : h;  // otherwise applied by the previous layer
          } else {
            return module.forward(h, Epilogue{{}, elu_next});
          }
        },
        layers_[i]);
    if (after_layer) after_layer(i);
  }
  return h.transpose(1, 2);
}

}  // namespace encodec::fast
