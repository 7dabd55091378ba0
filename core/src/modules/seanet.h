// SEANet encoder and decoder (encodec/modules/seanet.py): sequences of convs,
// residual blocks, ELUs and an LSTM, built with the reference's module indices
// so that the official state_dict names load unchanged.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <torch/torch.h>

#include "modules/conv.h"
#include "modules/lstm.h"

namespace encodec {

struct SEANetConfig {
  int64_t channels = 1;
  int64_t dimension = 128;
  int64_t n_filters = 32;
  int64_t n_residual_layers = 1;
  std::vector<int64_t> ratios = {8, 5, 4, 2};  // decoder order; the encoder reverses them
  int64_t kernel_size = 7;
  int64_t last_kernel_size = 7;
  int64_t residual_kernel_size = 3;
  int64_t dilation_base = 2;
  bool causal = false;
  int64_t compress = 2;
  bool true_skip = false;
  int64_t lstm_layers = 2;
  ConvNorm norm = ConvNorm::kWeightNorm;

  int64_t hop_length() const;
};

struct Elu {};  // ELU with alpha 1

// Residual block: shortcut(x) + block(x), block = ELU, conv k=3 (dilated), ELU, conv k=1.
class SEANetResnetBlock {
 public:
  SEANetResnetBlock(WeightLoader& weights, const std::string& prefix, const SEANetConfig& config,
                    int64_t dim, int64_t dilation);
  torch::Tensor forward(const torch::Tensor& x) const;

  // The convs of `block` in order (each preceded by an ELU).
  const std::vector<SConv1d>& block() const { return block_; }
  // nullopt when true_skip (identity shortcut).
  const std::optional<SConv1d>& shortcut() const { return shortcut_; }
  // Frees every conv's kernel (as SConv1d::release_weight).
  void release_weights();

 private:
  std::vector<SConv1d> block_;
  std::optional<SConv1d> shortcut_;
};

using SEANetLayer = std::variant<Elu, SConv1d, SConvTranspose1d, SLSTM, SEANetResnetBlock>;

torch::Tensor forward_layer(const SEANetLayer& layer, const torch::Tensor& x);
// Frees the layer's weight matrices and kernels (biases and norms stay), once
// fast copies hold them.
void release_weights(SEANetLayer& layer);

class SEANetEncoder {
 public:
  // Reads `<prefix>.model.<i>.*` (prefix "encoder").
  SEANetEncoder(WeightLoader& weights, const std::string& prefix, const SEANetConfig& config);
  // [B, channels, T] -> [B, dimension, ceil(T / hop)]
  torch::Tensor forward(const torch::Tensor& x) const;
  const std::vector<SEANetLayer>& layers() const { return layers_; }
  std::vector<SEANetLayer>& layers() { return layers_; }

 private:
  std::vector<SEANetLayer> layers_;
};

class SEANetDecoder {
 public:
  SEANetDecoder(WeightLoader& weights, const std::string& prefix, const SEANetConfig& config);
  // [B, dimension, T] -> [B, channels, T * hop]
  torch::Tensor forward(const torch::Tensor& z) const;
  const std::vector<SEANetLayer>& layers() const { return layers_; }
  std::vector<SEANetLayer>& layers() { return layers_; }

 private:
  std::vector<SEANetLayer> layers_;
};

}  // namespace encodec
