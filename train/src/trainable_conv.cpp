#include "trainable_conv.h"

#include <cmath>

namespace encodec::train {

ConvParametersImpl::ConvParametersImpl(const std::vector<int64_t>& shape, int64_t bias_size,
                                       bool weight_norm)
    : weight_norm_(weight_norm) {
  // nn.ConvNd.reset_parameters: kaiming_uniform_(a=sqrt(5)) is uniform with
  // bound 1/sqrt(fan_in), fan_in = size(1) * prod(kernel), the bias likewise.
  int64_t fan_in = shape[1];
  for (size_t d = 2; d < shape.size(); ++d) fan_in *= shape[d];
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::NoGradGuard no_grad;
  torch::Tensor weight = torch::empty(shape).uniform_(-bound, bound);
  if (weight_norm_) {
    std::vector<int64_t> g_shape(shape.size(), 1);
    g_shape[0] = shape[0];
    weight_g_ = register_parameter("weight_g", torch::norm_except_dim(weight, 2, 0).view(g_shape));
    weight_v_ = register_parameter("weight_v", weight);
  } else {
    weight_ = register_parameter("weight", weight);
  }
  bias_ = register_parameter("bias", torch::empty({bias_size}).uniform_(-bound, bound));
}

torch::Tensor ConvParametersImpl::weight() const {
  // The operation torch.nn.utils.weight_norm runs (and the inference loader
  // folds with), differentiable in g and v.
  return weight_norm_ ? torch::_weight_norm(weight_v_, weight_g_, 0) : weight_;
}

NormConv1dImpl::NormConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                               int64_t stride, int64_t dilation, bool transposed, Norm norm)
    : kernel_size_(kernel_size), stride_(stride), dilation_(dilation), transposed_(transposed) {
  const std::vector<int64_t> shape = transposed ? std::vector<int64_t>{in_channels, out_channels, kernel_size}
                                                : std::vector<int64_t>{out_channels, in_channels, kernel_size};
  params_ = register_module(transposed ? "convtr" : "conv",
                            ConvParameters(shape, out_channels, norm == Norm::kWeightNorm));
  if (norm == Norm::kTimeGroupNorm) {
    norm_ = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(1, out_channels)));
  }
}

torch::Tensor NormConv1dImpl::forward(const torch::Tensor& x) {
  torch::Tensor y;
  if (transposed_) {
    y = torch::conv_transpose1d(x, params_->weight(), params_->bias(), {stride_});
  } else {
    const int64_t no_padding = 0;
    y = torch::conv1d(x, params_->weight(), params_->bias(), torch::IntArrayRef(stride_),
                      torch::IntArrayRef(no_padding), torch::IntArrayRef(dilation_));
  }
  return norm_ ? norm_->forward(y) : y;
}

SConv1dImpl::SConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                         int64_t stride, int64_t dilation, bool causal, Norm norm)
    : causal_(causal) {
  conv_ = register_module("conv", NormConv1d(in_channels, out_channels, kernel_size, stride,
                                             dilation, /*transposed=*/false, norm));
}

torch::Tensor SConv1dImpl::forward(const torch::Tensor& x) {
  const int64_t effective_kernel = (conv_->kernel_size() - 1) * conv_->dilation() + 1;
  const int64_t padding_total = effective_kernel - conv_->stride();
  const int64_t extra = extra_padding_for_conv1d(x.size(-1), effective_kernel, conv_->stride(), padding_total);
  const int64_t padding_right = causal_ ? 0 : padding_total / 2;
  return conv_->forward(pad1d_reflect(x, padding_total - padding_right, padding_right + extra));
}

SConvTranspose1dImpl::SConvTranspose1dImpl(int64_t in_channels, int64_t out_channels,
                                           int64_t kernel_size, int64_t stride, bool causal,
                                           Norm norm)
    : causal_(causal) {
  convtr_ = register_module("convtr", NormConv1d(in_channels, out_channels, kernel_size, stride,
                                                 /*dilation=*/1, /*transposed=*/true, norm));
}

torch::Tensor SConvTranspose1dImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = convtr_->forward(x);
  const int64_t padding_total = convtr_->kernel_size() - convtr_->stride();
  // The reference trims causally with trim_right_ratio 1.
  const int64_t padding_right = causal_ ? padding_total : padding_total / 2;
  const int64_t padding_left = padding_total - padding_right;
  return y.narrow(-1, padding_left, y.size(-1) - padding_left - padding_right);
}

}  // namespace encodec::train
