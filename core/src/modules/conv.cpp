#include "modules/conv.h"

#include <cmath>

namespace encodec {
namespace {

// weight = g * v / ||v||, the norm taken over every dim but 0, computed with the
// same kernel as torch.nn.utils.weight_norm so that folded weights are bit-identical.
torch::Tensor load_conv_weight(WeightLoader& weights, const std::string& module_prefix,
                               const std::vector<int64_t>& shape, ConvNorm norm) {
  if (norm == ConvNorm::kWeightNorm) {
    torch::Tensor g = weights.take(module_prefix + ".weight_g", {shape[0], 1, 1});
    torch::Tensor v = weights.take(module_prefix + ".weight_v", shape);
    return torch::_weight_norm(v, g, 0).contiguous();
  }
  return weights.take(module_prefix + ".weight", shape);
}

std::optional<GroupNormWeights> load_group_norm(WeightLoader& weights, const std::string& prefix,
                                                int64_t channels, ConvNorm norm) {
  if (norm != ConvNorm::kTimeGroupNorm) return std::nullopt;
  return GroupNormWeights{weights.take(prefix + ".weight", {channels}),
                          weights.take(prefix + ".bias", {channels})};
}

torch::Tensor apply_group_norm(const torch::Tensor& x, const std::optional<GroupNormWeights>& gn) {
  if (!gn) return x;
  return torch::group_norm(x, 1, gn->weight, gn->bias, 1e-5);
}

}  // namespace

ConvNorm parse_conv_norm(const std::string& name) {
  if (name == "weight_norm") return ConvNorm::kWeightNorm;
  if (name == "time_group_norm") return ConvNorm::kTimeGroupNorm;
  if (name == "none") return ConvNorm::kNone;
  throw std::invalid_argument("unsupported conv normalization '" + name +
                              "' (expected weight_norm, time_group_norm or none)");
}

int64_t extra_padding_for_conv1d(int64_t length, int64_t kernel_size, int64_t stride,
                                 int64_t padding_total) {
  // Integer form of the reference's ceil((length - kernel + padding) / stride + 1).
  const int64_t span = length - kernel_size + padding_total;
  const int64_t n_frames = span >= 0 ? (span + stride - 1) / stride + 1
                                     : static_cast<int64_t>(std::ceil(
                                           static_cast<double>(span) / stride + 1));
  const int64_t ideal_length = (n_frames - 1) * stride + (kernel_size - padding_total);
  return ideal_length - length;
}

torch::Tensor pad1d_reflect(const torch::Tensor& x, int64_t padding_left, int64_t padding_right) {
  const int64_t length = x.size(-1);
  const int64_t max_pad = std::max(padding_left, padding_right);
  int64_t extra_pad = 0;
  torch::Tensor input = x;
  if (length <= max_pad) {
    extra_pad = max_pad - length + 1;
    input = torch::constant_pad_nd(x, {0, extra_pad});
  }
  torch::Tensor padded = torch::reflection_pad1d(input, {padding_left, padding_right});
  return padded.narrow(-1, 0, padded.size(-1) - extra_pad);
}

SConv1d::SConv1d(WeightLoader& weights, const std::string& prefix, int64_t in_channels,
                 int64_t out_channels, int64_t kernel_size, int64_t stride, int64_t dilation,
                 bool causal, ConvNorm norm)
    : kernel_size_(kernel_size), stride_(stride), dilation_(dilation), causal_(causal) {
  weight_ = load_conv_weight(weights, prefix + ".conv.conv", {out_channels, in_channels, kernel_size},
                             norm);
  bias_ = weights.take(prefix + ".conv.conv.bias", {out_channels});
  group_norm_ = load_group_norm(weights, prefix + ".conv.norm", out_channels, norm);
}

torch::Tensor SConv1d::forward(const torch::Tensor& x) const {
  const int64_t padding = padding_total();
  const int64_t extra = extra_padding_for_conv1d(x.size(-1), effective_kernel_size(), stride_, padding);
  torch::Tensor padded;
  if (causal_) {
    padded = pad1d_reflect(x, padding, extra);
  } else {
    const int64_t padding_right = padding / 2;
    padded = pad1d_reflect(x, padding - padding_right, padding_right + extra);
  }
  const int64_t no_padding = 0;
  torch::Tensor y = torch::conv1d(padded, weight_, bias_, torch::IntArrayRef(stride_),
                                  torch::IntArrayRef(no_padding), torch::IntArrayRef(dilation_));
  return apply_group_norm(y, group_norm_);
}

SConvTranspose1d::SConvTranspose1d(WeightLoader& weights, const std::string& prefix,
                                   int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                                   int64_t stride, bool causal, ConvNorm norm)
    : kernel_size_(kernel_size), stride_(stride), causal_(causal) {
  weight_ = load_conv_weight(weights, prefix + ".convtr.convtr",
                             {in_channels, out_channels, kernel_size}, norm);
  bias_ = weights.take(prefix + ".convtr.convtr.bias", {out_channels});
  group_norm_ = load_group_norm(weights, prefix + ".convtr.norm", out_channels, norm);
}

torch::Tensor SConvTranspose1d::forward(const torch::Tensor& x) const {
  torch::Tensor y = torch::conv_transpose1d(x, weight_, bias_, {stride_});
  y = apply_group_norm(y, group_norm_);
  const int64_t padding_total = kernel_size_ - stride_;
  const int64_t padding_right = causal_ ? padding_total : padding_total / 2;
  const int64_t padding_left = padding_total - padding_right;
  return y.narrow(-1, padding_left, y.size(-1) - padding_left - padding_right);
}

}  // namespace encodec
