// The multi-scale STFT discriminator (encodec/msstftd.py): per scale, the
// complex STFT (real and imaginary parts as two channels, time x frequency)
// through weight-normed 2-D convs with LeakyReLU(0.2), dilated in time and
// strided in frequency; every activation is a feature map for the
// feature-matching loss, the last conv gives the logits.
#pragma once

#include <array>
#include <vector>

#include <torch/torch.h>

#include "encodec/train.h"
#include "trainable_conv.h"

namespace encodec::train {

// NormConv2d: child `conv` with weight_g/weight_v/bias (or weight/bias), zero padding.
class NormConv2dImpl : public torch::nn::Module {
 public:
  NormConv2dImpl(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel,
                 std::array<int64_t, 2> stride, std::array<int64_t, 2> dilation, bool weight_norm);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::array<int64_t, 2> stride_, dilation_, padding_;
  ConvParameters params_{nullptr};
};
TORCH_MODULE(NormConv2d);

struct DiscriminatorOutput {
  std::vector<torch::Tensor> logits;                   // per scale [B, 1, frames', freqs']
  std::vector<std::vector<torch::Tensor>> features;    // per scale, per layer
};

class DiscriminatorSTFTImpl : public torch::nn::Module {
 public:
  DiscriminatorSTFTImpl(const DiscriminatorOptions& options, int64_t in_channels, int64_t n_fft, int64_t hop_length, int64_t win_length);
  // x: [B, in_channels, T]
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward(const torch::Tensor& x);

 private:
  int64_t n_fft_, hop_length_, win_length_;
  torch::nn::ModuleList convs_{nullptr};
  NormConv2d conv_post_{nullptr};
};
TORCH_MODULE(DiscriminatorSTFT);

class MultiScaleSTFTDiscriminatorImpl : public torch::nn::Module {
 public:
  MultiScaleSTFTDiscriminatorImpl(const DiscriminatorOptions& options, int64_t in_channels);
  DiscriminatorOutput forward(const torch::Tensor& x);

 private:
  torch::nn::ModuleList discriminators_{nullptr};
};
TORCH_MODULE(MultiScaleSTFTDiscriminator);

}  // namespace encodec::train
