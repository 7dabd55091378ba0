#include "msstftd.h"

#include <algorithm>

namespace encodec::train {
namespace {

constexpr double kNegativeSlope = 0.2;

std::array<int64_t, 2> same_padding(std::array<int64_t, 2> kernel, std::array<int64_t, 2> dilation) {
  return {(kernel[0] - 1) * dilation[0] / 2, (kernel[1] - 1) * dilation[1] / 2};
}

}  // namespace

NormConv2dImpl::NormConv2dImpl(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel,
                               std::array<int64_t, 2> stride, std::array<int64_t, 2> dilation, bool weight_norm)
    : stride_(stride), dilation_(dilation), padding_(same_padding(kernel, dilation)) {
  params_ = register_module("conv", ConvParameters(std::vector<int64_t>{out_channels, in_channels, kernel[0], kernel[1]}, out_channels,
                                                   weight_norm));
}

torch::Tensor NormConv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, params_->weight(), params_->bias(), stride_, padding_, dilation_);
}

DiscriminatorSTFTImpl::DiscriminatorSTFTImpl(const DiscriminatorOptions& options, int64_t in_channels, int64_t n_fft,
                                             int64_t hop_length, int64_t win_length)
    : n_fft_(n_fft), hop_length_(hop_length), win_length_(win_length) {
  const std::array<int64_t, 2> kernel{3, 9}, stride{1, 2}, unit{1, 1};
  const std::vector<int64_t> dilations = {1, 2, 4};
  convs_ = register_module("convs", torch::nn::ModuleList());
  // The first conv has no weight norm in the reference (its norm argument is left at 'none').
  convs_->push_back(NormConv2d(2 * in_channels, options.filters, kernel, unit, unit, false));
  int64_t in_chs = std::min(options.filters_scale * options.filters, options.max_filters);
  int64_t scale = options.filters_scale;
  for (int64_t dilation : dilations) {
    const int64_t out_chs = std::min(scale * options.filters, options.max_filters);
    convs_->push_back(NormConv2d(in_chs, out_chs, kernel, stride, std::array<int64_t, 2>{dilation, 1}, true));
    in_chs = out_chs;
    scale *= options.filters_scale;
  }
  const int64_t out_chs = std::min(scale * options.filters, options.max_filters);
  const std::array<int64_t, 2> square{kernel[0], kernel[0]};
  convs_->push_back(NormConv2d(in_chs, out_chs, square, unit, unit, true));
  conv_post_ = register_module("conv_post", NormConv2d(out_chs, 1, square, unit, unit, true));
}

std::pair<torch::Tensor, std::vector<torch::Tensor>> DiscriminatorSTFTImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), channels = x.size(1);
  torch::Tensor window = torch::hann_window(win_length_, x.options());
  // torchaudio's Spectrogram(center=False, normalized=True, power=None).
  torch::Tensor spec = torch::stft(x.reshape({batch * channels, x.size(2)}), n_fft_, hop_length_, win_length_, window,
                                   /*normalized=*/false, /*onesided=*/true, /*return_complex=*/true) /
                       window.pow(2).sum().sqrt();
  spec = spec.view({batch, channels, spec.size(1), spec.size(2)});
  torch::Tensor z = torch::cat({torch::real(spec), torch::imag(spec)}, 1).transpose(2, 3);  // [B, 2C, frames, freqs]
  std::vector<torch::Tensor> features;
  for (size_t i = 0; i < convs_->size(); ++i) {
    z = torch::leaky_relu(convs_->ptr<NormConv2dImpl>(i)->forward(z), kNegativeSlope);
    features.push_back(z);
  }
  return {conv_post_->forward(z), features};
}

MultiScaleSTFTDiscriminatorImpl::MultiScaleSTFTDiscriminatorImpl(const DiscriminatorOptions& options,
                                                                 int64_t in_channels) {
  TORCH_CHECK(options.n_ffts.size() == options.hop_lengths.size() && options.n_ffts.size() == options.win_lengths.size(),
              "discriminator: n_ffts, hop_lengths and win_lengths differ in length");
  discriminators_ = register_module("discriminators", torch::nn::ModuleList());
  for (size_t i = 0; i < options.n_ffts.size(); ++i) {
    discriminators_->push_back(
        DiscriminatorSTFT(options, in_channels, options.n_ffts[i], options.hop_lengths[i], options.win_lengths[i]));
  }
}

DiscriminatorOutput MultiScaleSTFTDiscriminatorImpl::forward(const torch::Tensor& x) {
  DiscriminatorOutput out;
  for (size_t i = 0; i < discriminators_->size(); ++i) {
    auto [logits, features] = discriminators_->ptr<DiscriminatorSTFTImpl>(i)->forward(x);
    out.logits.push_back(logits);
    out.features.push_back(std::move(features));
  }
  return out;
}

}  // namespace encodec::train
