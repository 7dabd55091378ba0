#include "fast/fast_seanet.h"

namespace encodec::fast {

ResnetBlock::ResnetBlock(const SEANetResnetBlock& reference) {
  block_.reserve(reference.block().size());
  for (const SConv1d& conv : reference.block()) block_.emplace_back(conv);
  if (reference.shortcut()) shortcut_.emplace(*reference.shortcut());
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

SEANet::SEANet(const std::vector<SEANetLayer>& reference_layers) {
  layers_.reserve(reference_layers.size());
  for (const SEANetLayer& layer : reference_layers) append(layer);
}

SEANet::SEANet(std::vector<SEANetLayer>& reference_layers, ReleaseReferenceWeights) {
  layers_.reserve(reference_layers.size());
  for (SEANetLayer& layer : reference_layers) {
    append(layer);
    release_weights(layer);
  }
}

void SEANet::append(const SEANetLayer& layer) {
  std::visit(
      [this](const auto& module) {
        using Module = std::decay_t<decltype(module)>;
        if constexpr (std::is_same_v<Module, encodec::Elu>) {
          layers_.emplace_back(Elu{});
        } else if constexpr (std::is_same_v<Module, SConv1d>) {
          layers_.emplace_back(std::in_place_type<Conv1d>, module);
        } else if constexpr (std::is_same_v<Module, SConvTranspose1d>) {
          layers_.emplace_back(std::in_place_type<ConvTranspose1d>, module);
        } else if constexpr (std::is_same_v<Module, SLSTM>) {
          layers_.emplace_back(std::in_place_type<Lstm>, module);
        } else {
          layers_.emplace_back(std::in_place_type<ResnetBlock>, module);
        }
      },
      layer);
}

torch::Tensor SEANet::forward(const torch::Tensor& x) const {
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
  }
  return h.transpose(1, 2);
}

}  // namespace encodec::fast
