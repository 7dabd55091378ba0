#include "trainable_seanet.h"

namespace encodec::train {
namespace {

int64_t integer_power(int64_t base, int64_t exponent) {
  int64_t result = 1;
  for (int64_t i = 0; i < exponent; ++i) result *= base;
  return result;
}

torch::nn::ELU elu() { return torch::nn::ELU(torch::nn::ELUOptions().alpha(1.0)); }

}  // namespace

SLSTMImpl::SLSTMImpl(int64_t dimension, int64_t num_layers) {
  lstm_ = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(dimension, dimension).num_layers(num_layers)));
}

torch::Tensor SLSTMImpl::forward(const torch::Tensor& x) {
  torch::Tensor sequence = x.permute({2, 0, 1});
  torch::Tensor y = std::get<0>(lstm_->forward(sequence)) + sequence;
  return y.permute({1, 2, 0});
}

SEANetResnetBlockImpl::SEANetResnetBlockImpl(const SEANetConfig& config, int64_t dim, int64_t dilation) {
  const int64_t hidden = dim / config.compress;
  block_ = register_module("block", torch::nn::Sequential(
      elu(), SConv1d(dim, hidden, config.residual_kernel_size, 1, dilation, config.causal, config.norm),
      elu(), SConv1d(hidden, dim, 1, 1, 1, config.causal, config.norm)));
  if (!config.true_skip) {
    shortcut_ = register_module("shortcut", SConv1d(dim, dim, 1, 1, 1, config.causal, config.norm));
  }
}

torch::Tensor SEANetResnetBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor skip = shortcut_ ? shortcut_->forward(x) : x;
  return skip + block_->forward(x);
}

SEANetEncoderImpl::SEANetEncoderImpl(const SEANetConfig& config) {
  const int64_t nf = config.n_filters;
  int64_t mult = 1;
  torch::nn::Sequential model;
  model->push_back(SConv1d(config.channels, nf, config.kernel_size, 1, 1, config.causal, config.norm));
  for (auto ratio = config.ratios.rbegin(); ratio != config.ratios.rend(); ++ratio) {
    for (int64_t j = 0; j < config.n_residual_layers; ++j) {
      model->push_back(SEANetResnetBlock(config, mult * nf, integer_power(config.dilation_base, j)));
    }
    model->push_back(elu());
    model->push_back(SConv1d(mult * nf, mult * nf * 2, *ratio * 2, *ratio, 1, config.causal, config.norm));
    mult *= 2;
  }
  if (config.lstm_layers > 0) model->push_back(SLSTM(mult * nf, config.lstm_layers));
  model->push_back(elu());
  model->push_back(SConv1d(mult * nf, config.dimension, config.last_kernel_size, 1, 1, config.causal, config.norm));
  model_ = register_module("model", model);
}

SEANetDecoderImpl::SEANetDecoderImpl(const SEANetConfig& config) {
  const int64_t nf = config.n_filters;
  int64_t mult = integer_power(2, static_cast<int64_t>(config.ratios.size()));
  torch::nn::Sequential model;
  model->push_back(SConv1d(config.dimension, mult * nf, config.kernel_size, 1, 1, config.causal, config.norm));
  if (config.lstm_layers > 0) model->push_back(SLSTM(mult * nf, config.lstm_layers));
  for (int64_t ratio : config.ratios) {
    model->push_back(elu());
    model->push_back(SConvTranspose1d(mult * nf, mult * nf / 2, ratio * 2, ratio, config.causal, config.norm));
    for (int64_t j = 0; j < config.n_residual_layers; ++j) {
      model->push_back(SEANetResnetBlock(config, mult * nf / 2, integer_power(config.dilation_base, j)));
    }
    mult /= 2;
  }
  model->push_back(elu());
  model->push_back(SConv1d(nf, config.channels, config.last_kernel_size, 1, 1, config.causal, config.norm));
  model_ = register_module("model", model);
}

}  // namespace encodec::train
