#include "modules/seanet.h"

namespace encodec {
namespace {

std::string module_name(const std::string& prefix, size_t index) {
  return prefix + ".model." + std::to_string(index);
}

int64_t integer_power(int64_t base, int64_t exponent) {
  int64_t result = 1;
  for (int64_t i = 0; i < exponent; ++i) result *= base;
  return result;
}

torch::Tensor run_layers(const std::vector<SEANetLayer>& layers, torch::Tensor x) {
  for (const auto& layer : layers) x = forward_layer(layer, x);
  return x;
}

}  // namespace

int64_t SEANetConfig::hop_length() const {
  int64_t hop = 1;
  for (int64_t ratio : ratios) hop *= ratio;
  return hop;
}

SEANetResnetBlock::SEANetResnetBlock(WeightLoader& weights, const std::string& prefix,
                                     const SEANetConfig& config, int64_t dim, int64_t dilation) {
  const int64_t hidden = dim / config.compress;
  // Sequential indices: 0 ELU, 1 conv, 2 ELU, 3 conv.
  block_.emplace_back(weights, prefix + ".block.1", dim, hidden, config.residual_kernel_size,
                      /*stride=*/1, dilation, config.causal, config.norm);
  block_.emplace_back(weights, prefix + ".block.3", hidden, dim, /*kernel_size=*/1,
                      /*stride=*/1, /*dilation=*/1, config.causal, config.norm);
  if (!config.true_skip) {
    shortcut_.emplace(weights, prefix + ".shortcut", dim, dim, /*kernel_size=*/1, /*stride=*/1,
                      /*dilation=*/1, config.causal, config.norm);
  }
}

torch::Tensor SEANetResnetBlock::forward(const torch::Tensor& x) const {
  torch::Tensor skip = shortcut_ ? shortcut_->forward(x) : x;
  torch::Tensor y = x;
  for (const SConv1d& conv : block_) y = conv.forward(torch::elu(y));
  return skip + y;
}

void SEANetResnetBlock::release_weights() {
  for (SConv1d& conv : block_) conv.release_weight();
  if (shortcut_) shortcut_->release_weight();
}

void release_weights(SEANetLayer& layer) {
  std::visit(
      [](auto& module) {
        using Module = std::decay_t<decltype(module)>;
        if constexpr (std::is_same_v<Module, SConv1d> || std::is_same_v<Module, SConvTranspose1d>) {
          module.release_weight();
        } else if constexpr (!std::is_same_v<Module, Elu>) {
          module.release_weights();
        }
      },
      layer);
}

torch::Tensor forward_layer(const SEANetLayer& layer, const torch::Tensor& x) {
  return std::visit(
      [&x](const auto& module) -> torch::Tensor {
        using Module = std::decay_t<decltype(module)>;
        if constexpr (std::is_same_v<Module, Elu>) {
          return torch::elu(x);
        } else {
          return module.forward(x);
        }
      },
      layer);
}

SEANetEncoder::SEANetEncoder(WeightLoader& weights, const std::string& prefix,
                             const SEANetConfig& config) {
  const int64_t nf = config.n_filters;
  int64_t mult = 1;
  layers_.emplace_back(SConv1d(weights, module_name(prefix, layers_.size()), config.channels,
                               mult * nf, config.kernel_size, 1, 1, config.causal, config.norm));
  for (auto ratio = config.ratios.rbegin(); ratio != config.ratios.rend(); ++ratio) {
    for (int64_t j = 0; j < config.n_residual_layers; ++j) {
      layers_.emplace_back(SEANetResnetBlock(weights, module_name(prefix, layers_.size()), config,
                                             mult * nf, integer_power(config.dilation_base, j)));
    }
    layers_.emplace_back(Elu{});
    layers_.emplace_back(SConv1d(weights, module_name(prefix, layers_.size()), mult * nf,
                                 mult * nf * 2, *ratio * 2, *ratio, 1, config.causal, config.norm));
    mult *= 2;
  }
  if (config.lstm_layers > 0) {
    layers_.emplace_back(
        SLSTM(weights, module_name(prefix, layers_.size()), mult * nf, config.lstm_layers));
  }
  layers_.emplace_back(Elu{});
  layers_.emplace_back(SConv1d(weights, module_name(prefix, layers_.size()), mult * nf,
                               config.dimension, config.last_kernel_size, 1, 1, config.causal,
                               config.norm));
}

torch::Tensor SEANetEncoder::forward(const torch::Tensor& x) const { return run_layers(layers_, x); }

SEANetDecoder::SEANetDecoder(WeightLoader& weights, const std::string& prefix,
                             const SEANetConfig& config) {
  const int64_t nf = config.n_filters;
  int64_t mult = integer_power(2, static_cast<int64_t>(config.ratios.size()));
  layers_.emplace_back(SConv1d(weights, module_name(prefix, layers_.size()), config.dimension,
                               mult * nf, config.kernel_size, 1, 1, config.causal, config.norm));
  if (config.lstm_layers > 0) {
    layers_.emplace_back(
        SLSTM(weights, module_name(prefix, layers_.size()), mult * nf, config.lstm_layers));
  }
  for (int64_t ratio : config.ratios) {
    layers_.emplace_back(Elu{});
    layers_.emplace_back(SConvTranspose1d(weights, module_name(prefix, layers_.size()), mult * nf,
                                          mult * nf / 2, ratio * 2, ratio, config.causal,
                                          config.norm));
    for (int64_t j = 0; j < config.n_residual_layers; ++j) {
      layers_.emplace_back(SEANetResnetBlock(weights, module_name(prefix, layers_.size()), config,
                                             mult * nf / 2, integer_power(config.dilation_base, j)));
    }
    mult /= 2;
  }
  layers_.emplace_back(Elu{});
  layers_.emplace_back(SConv1d(weights, module_name(prefix, layers_.size()), nf, config.channels,
                               config.last_kernel_size, 1, 1, config.causal, config.norm));
}

torch::Tensor SEANetDecoder::forward(const torch::Tensor& z) const { return run_layers(layers_, z); }

}  // namespace encodec
