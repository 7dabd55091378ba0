// Convolutions with the reference's padding rules (SConv1d, SConvTranspose1d in
// encodec/modules/conv.py). Weight norm is folded into a plain weight once, at
// load; time-group-norm (GroupNorm with one group) follows the conv when the
// model uses it.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "modules/weights.h"

namespace encodec {

enum class ConvNorm { kNone, kWeightNorm, kTimeGroupNorm };

ConvNorm parse_conv_norm(const std::string& name);

struct GroupNormWeights {
  torch::Tensor weight;  // [channels]
  torch::Tensor bias;    // [channels]
};

// Conv1d with causal or centred padding; reflect padding by default.
class SConv1d {
 public:
  // Reads `<prefix>.conv.conv.*` (and `<prefix>.conv.norm.*` for time-group-norm).
  SConv1d(WeightLoader& weights, const std::string& prefix, int64_t in_channels,
          int64_t out_channels, int64_t kernel_size, int64_t stride, int64_t dilation,
          bool causal, ConvNorm norm);

  torch::Tensor forward(const torch::Tensor& x) const;

  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t dilation() const { return dilation_; }
  bool causal() const { return causal_; }
  // (kernel_size - 1) * dilation + 1
  int64_t effective_kernel_size() const { return (kernel_size_ - 1) * dilation_ + 1; }
  // Zero-free padding the reference adds in total (left for causal convs).
  int64_t padding_total() const { return effective_kernel_size() - stride_; }
  const torch::Tensor& weight() const { return weight_; }  // [out, in, kernel]
  const torch::Tensor& bias() const { return bias_; }      // [out]
  // Frees the kernel once a fast copy holds it (a fast-only model keeps one
  // copy of its weights); forward() may not be called afterwards.
  void release_weight() { weight_ = torch::Tensor(); }
  const std::optional<GroupNormWeights>& group_norm() const { return group_norm_; }

 private:
  int64_t kernel_size_, stride_, dilation_;
  bool causal_;
  torch::Tensor weight_, bias_;
  std::optional<GroupNormWeights> group_norm_;
};

// ConvTranspose1d whose fixed padding is trimmed from the output: all on the
// right when causal (trim_right_ratio 1), otherwise split as the reference does.
class SConvTranspose1d {
 public:
  // Reads `<prefix>.convtr.convtr.*` (and `<prefix>.convtr.norm.*`).
  SConvTranspose1d(WeightLoader& weights, const std::string& prefix, int64_t in_channels,
                   int64_t out_channels, int64_t kernel_size, int64_t stride, bool causal,
                   ConvNorm norm);

  torch::Tensor forward(const torch::Tensor& x) const;

  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  bool causal() const { return causal_; }
  const torch::Tensor& weight() const { return weight_; }  // [in, out, kernel]
  const torch::Tensor& bias() const { return bias_; }      // [out]
  // As SConv1d::release_weight.
  void release_weight() { weight_ = torch::Tensor(); }
  const std::optional<GroupNormWeights>& group_norm() const { return group_norm_; }

 private:
  int64_t kernel_size_, stride_;
  bool causal_;
  torch::Tensor weight_, bias_;
  std::optional<GroupNormWeights> group_norm_;
};

// Right padding that makes the last conv window full (get_extra_padding_for_conv1d).
int64_t extra_padding_for_conv1d(int64_t length, int64_t kernel_size, int64_t stride,
                                 int64_t padding_total);

// F.pad with reflect mode made safe for inputs shorter than the padding, as the
// reference's pad1d: zeros are appended first, then removed after reflecting.
torch::Tensor pad1d_reflect(const torch::Tensor& x, int64_t padding_left, int64_t padding_right);

}  // namespace encodec
