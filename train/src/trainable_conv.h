// Trainable convolutions with the reference's parametrization and padding
// (encodec/modules/conv.py): weight norm as two parameters `weight_g` (one norm
// per output row) and `weight_v` (the direction), folded on every forward so
// that gradients reach both; SConv1d's causal or centred reflect padding and
// SConvTranspose1d's trimming. Module and parameter names follow the
// reference, so a model's named_parameters() are the official state_dict keys.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "modules/conv.h"  // core/src: the inference layers

namespace encodec::train {

// The inference layers' vocabulary: ConvNorm, parse_conv_norm, pad1d_reflect
// and extra_padding_for_conv1d (differentiable LibTorch operations) are shared.
using Norm = ::encodec::ConvNorm;

// The bare convolution's parameters (the reference's nn.ConvNd under its
// weight_norm hook): `weight_g`, `weight_v`, `bias`, or `weight`, `bias`.
// Initialized as PyTorch initializes nn.ConvNd (uniform, bound 1/sqrt(fan_in)),
// then g = ||v|| so that the folded weight equals v, as weight_norm() does.
class ConvParametersImpl : public torch::nn::Module {
 public:
  // `shape`: the weight's shape ([out, in, k...] for convs, [in, out, k] for
  // transposed convs); `fan_in`: in * prod(k) as PyTorch computes it.
  ConvParametersImpl(const std::vector<int64_t>& shape, int64_t bias_size, bool weight_norm);
  // The folded weight: g * v / ||v|| (norm over every dim but 0), or the plain weight.
  torch::Tensor weight() const;
  torch::Tensor bias() const { return bias_; }

 private:
  bool weight_norm_;
  torch::Tensor weight_g_, weight_v_, weight_, bias_;
};
TORCH_MODULE(ConvParameters);

// NormConv1d / NormConvTranspose1d: the parameters (child `conv` / `convtr`)
// and, for time-group-norm, a GroupNorm with one group (child `norm`).
class NormConv1dImpl : public torch::nn::Module {
 public:
  NormConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
                 int64_t dilation, bool transposed, Norm norm);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t dilation() const { return dilation_; }

 private:
  int64_t kernel_size_, stride_, dilation_;
  bool transposed_;
  ConvParameters params_{nullptr};
  torch::nn::GroupNorm norm_{nullptr};
};
TORCH_MODULE(NormConv1d);

// Conv1d padded as the reference's SConv1d: reflect padding of
// (kernel - 1) * dilation + 1 - stride samples in total (all on the left when
// causal, else split with the extra one on the left), plus right padding so
// that the last window is full.
class SConv1dImpl : public torch::nn::Module {
 public:
  SConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
              int64_t dilation, bool causal, Norm norm);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool causal_;
  NormConv1d conv_{nullptr};
};
TORCH_MODULE(SConv1d);

// ConvTranspose1d whose kernel - stride extra samples are trimmed: all on the
// right when causal, otherwise half each side (the extra one on the right).
class SConvTranspose1dImpl : public torch::nn::Module {
 public:
  SConvTranspose1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                       int64_t stride, bool causal, Norm norm);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool causal_;
  NormConv1d convtr_{nullptr};
};
TORCH_MODULE(SConvTranspose1d);

}  // namespace encodec::train
