// Trainable SEANet encoder and decoder (encodec/modules/seanet.py, lstm.py)
// with the reference's module tree: `model` is a Sequential whose indices are
// those of the official state_dict (ELUs take an index and hold nothing), so
// `encoder.model.0.conv.conv.weight_g` names the same tensor here and there.
#pragma once

#include <torch/torch.h>

#include "modules/seanet.h"  // core/src: SEANetConfig, shared with the inference layers
#include "trainable_conv.h"

namespace encodec::train {

// SLSTM: a multi-layer LSTM over time with a skip connection; child `lstm`
// holds `weight_ih_l<k>`, `weight_hh_l<k>`, `bias_ih_l<k>`, `bias_hh_l<k>`.
class SLSTMImpl : public torch::nn::Module {
 public:
  SLSTMImpl(int64_t dimension, int64_t num_layers);
  // [B, C, T] -> [B, C, T]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::LSTM lstm_{nullptr};
};
TORCH_MODULE(SLSTM);

// shortcut(x) + block(x); block = ELU, conv k (dilated), ELU, conv 1 (children
// `block.1`, `block.3`); shortcut a 1x1 conv, or the identity with true_skip.
class SEANetResnetBlockImpl : public torch::nn::Module {
 public:
  SEANetResnetBlockImpl(const SEANetConfig& config, int64_t dim, int64_t dilation);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential block_{nullptr};
  SConv1d shortcut_{nullptr};
};
TORCH_MODULE(SEANetResnetBlock);

// [B, channels, T] -> [B, dimension, ceil(T / hop)]
class SEANetEncoderImpl : public torch::nn::Module {
 public:
  explicit SEANetEncoderImpl(const SEANetConfig& config);
  torch::Tensor forward(const torch::Tensor& x) { return model_->forward(x); }

 private:
  torch::nn::Sequential model_{nullptr};
};
TORCH_MODULE(SEANetEncoder);

// [B, dimension, T] -> [B, channels, T * hop]
class SEANetDecoderImpl : public torch::nn::Module {
 public:
  explicit SEANetDecoderImpl(const SEANetConfig& config);
  torch::Tensor forward(const torch::Tensor& z) { return model_->forward(z); }

 private:
  torch::nn::Sequential model_{nullptr};
};
TORCH_MODULE(SEANetDecoder);

}  // namespace encodec::train
