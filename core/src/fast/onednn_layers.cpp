#include "fast/onednn_layers.h"

#include <cstring>

namespace encodec::fast {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;

dnnl::stream make_stream() { return dnnl::stream(cpu_engine()); }

memory::desc time_major_desc(int64_t batch, int64_t length, int64_t channels) {
  return memory::desc({batch, channels, length}, DataType::f32, Tag::nwc);
}

memory wrap(const memory::desc& desc, const torch::Tensor& tensor) {
  return memory(desc, cpu_engine(), const_cast<void*>(tensor.data_ptr()));
}

// Reorders plain weights into the layout the primitive chose.
memory reorder_weights(const memory::desc& plain_desc, const torch::Tensor& plain,
                       const memory::desc& wanted) {
  memory source = wrap(plain_desc, plain);
  memory target(wanted, cpu_engine());
  dnnl::stream stream = make_stream();
  dnnl::reorder(source, target).execute(stream, source, target);
  stream.wait();
  return target;
}

dnnl::primitive_attr make_attr(bool fuse_sum, bool fuse_elu) {
  dnnl::post_ops ops;
  if (fuse_sum) ops.append_sum(1.0f);
  if (fuse_elu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_elu, 1.0f, 0.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  return attr;
}

// Applies the parts of an epilogue a primitive could not fuse.
torch::Tensor finish(torch::Tensor y, const Epilogue& epilogue, bool residual_done, bool elu_done) {
  if (epilogue.residual && !residual_done) y.add_(*epilogue.residual);
  if (epilogue.elu && !elu_done) y = torch::elu(y);
  return y;
}

}  // namespace

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

torch::Tensor reflect_pad_time_major(const torch::Tensor& x, int64_t left, int64_t right) {
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
  // The reference appends zeros when the input is too short to reflect, then
  // drops them again: positions map into that zero-extended signal.
  const int64_t extended = std::max(length, std::max(left, right) + 1);
  torch::Tensor out = torch::empty({batch, left + length + right, channels}, x.options());
  const float* source = x.data_ptr<float>();
  float* target = out.data_ptr<float>();
  const size_t row_bytes = channels * sizeof(float);
  for (int64_t b = 0; b < batch; ++b) {
    const float* source_rows = source + b * length * channels;
    float* target_rows = target + b * (left + length + right) * channels;
    for (int64_t j = 0; j < left + length + right; ++j) {
      int64_t position = j - left;
      if (position < 0) position = -position;
      if (position >= extended) position = 2 * (extended - 1) - position;
      float* row = target_rows + j * channels;
      if (position < length) {
        std::memcpy(row, source_rows + position * channels, row_bytes);
      } else {
        std::memset(row, 0, row_bytes);
      }
    }
  }
  return out;
}

torch::Tensor group_norm_time_major(const torch::Tensor& x, const GroupNormWeights& norm) {
  const int64_t batch = x.size(0);
  torch::Tensor flat = x.reshape({batch, -1});
  torch::Tensor mean = flat.mean(1, /*keepdim=*/true);
  torch::Tensor variance = (flat - mean).pow(2).mean(1, /*keepdim=*/true);
  torch::Tensor normalized = ((flat - mean) * torch::rsqrt(variance + 1e-5)).view_as(x);
  return normalized * norm.weight + norm.bias;
}

Conv1d::Conv1d(const SConv1d& reference)
    : reference_(reference),
      in_channels_(reference.weight().size(1)),
      out_channels_(reference.weight().size(0)),
      weight_oiw_(reference.weight().contiguous()),
      bias_(reference.bias().contiguous()) {}

const Conv1d::Compiled& Conv1d::compiled(int64_t batch, int64_t padded_length, bool fuse_elu,
                                         bool fuse_sum) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto& slot = cache_->entries[{batch, padded_length, fuse_elu, fuse_sum}];
  if (!slot) {
    const int64_t kernel = reference_.kernel_size(), stride = reference_.stride(),
                  dilation = reference_.dilation();
    const int64_t out_length = (padded_length - reference_.effective_kernel_size()) / stride + 1;
    const memory::desc weights_plain({out_channels_, in_channels_, kernel}, DataType::f32, Tag::oiw);
    const memory::desc weights_any({out_channels_, in_channels_, kernel}, DataType::f32, Tag::any);
    const memory::desc bias_desc({out_channels_}, DataType::f32, Tag::a);
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        time_major_desc(batch, padded_length, in_channels_), weights_any, bias_desc,
        time_major_desc(batch, out_length, out_channels_), {stride}, {dilation - 1}, {0}, {0});
    dnnl::convolution_forward::primitive_desc primitive_desc(desc, make_attr(fuse_sum, fuse_elu),
                                                              cpu_engine());
    slot = std::make_unique<Compiled>(Compiled{
        dnnl::convolution_forward(primitive_desc),
        reorder_weights(weights_plain, weight_oiw_, primitive_desc.weights_desc())});
  }
  return *slot;
}

torch::Tensor Conv1d::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  const int64_t padding = reference_.padding_total();
  const int64_t extra = extra_padding_for_conv1d(x.size(1), reference_.effective_kernel_size(),
                                                 reference_.stride(), padding);
  const int64_t padding_right = reference_.causal() ? extra : padding / 2 + extra;
  const int64_t padding_left = reference_.causal() ? padding : padding - padding / 2;
  const torch::Tensor padded = reflect_pad_time_major(x.contiguous(), padding_left, padding_right);
  const int64_t batch = padded.size(0), padded_length = padded.size(1);
  const int64_t out_length =
      (padded_length - reference_.effective_kernel_size()) / reference_.stride() + 1;

  // Post-ops can only be fused when nothing (a group norm) comes between the conv and them.
  const bool plain = !reference_.group_norm().has_value();
  const bool fuse_sum = plain && epilogue.residual != nullptr;
  const bool fuse_elu = plain && epilogue.elu;
  torch::Tensor y = fuse_sum ? epilogue.residual->clone()
                             : torch::empty({batch, out_length, out_channels_}, x.options());
  const Compiled& conv = compiled(batch, padded_length, fuse_elu, fuse_sum);
  dnnl::stream stream = make_stream();
  conv.primitive.execute(
      stream, {{DNNL_ARG_SRC, wrap(time_major_desc(batch, padded_length, in_channels_), padded)},
               {DNNL_ARG_WEIGHTS, conv.weights},
               {DNNL_ARG_BIAS, wrap(memory::desc({out_channels_}, DataType::f32, Tag::a), bias_)},
               {DNNL_ARG_DST, wrap(time_major_desc(batch, out_length, out_channels_), y)}});
  stream.wait();
  if (!plain) y = group_norm_time_major(y, *reference_.group_norm());
  return finish(y, epilogue, fuse_sum, fuse_elu);
}

ConvTranspose1d::ConvTranspose1d(const SConvTranspose1d& reference)
    : reference_(reference),
      in_channels_(reference.weight().size(0)),
      out_channels_(reference.weight().size(1)),
      // PyTorch stores transposed-conv weights [in, out, k]; oneDNN wants [out, in, k].
      weight_oiw_(reference.weight().transpose(0, 1).contiguous()),
      bias_(reference.bias().contiguous()) {
  const int64_t padding_total = reference.kernel_size() - reference.stride();
  padding_right_ = reference.causal() ? padding_total : padding_total / 2;
  padding_left_ = padding_total - padding_right_;
  // The reference normalizes the untrimmed output, so with a group norm the
  // primitive keeps the padding and it is trimmed after normalizing.
  if (reference.group_norm()) {
    trim_left_ = padding_left_;
    trim_right_ = padding_right_;
    padding_left_ = padding_right_ = 0;
  }
}

const ConvTranspose1d::Compiled& ConvTranspose1d::compiled(int64_t batch, int64_t length,
                                                           bool fuse_elu) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto& slot = cache_->entries[{batch, length, fuse_elu}];
  if (!slot) {
    const int64_t kernel = reference_.kernel_size(), stride = reference_.stride();
    const int64_t out_length = (length - 1) * stride + kernel - padding_left_ - padding_right_;
    const memory::desc weights_plain({out_channels_, in_channels_, kernel}, DataType::f32, Tag::oiw);
    const memory::desc weights_any({out_channels_, in_channels_, kernel}, DataType::f32, Tag::any);
    const memory::desc bias_desc({out_channels_}, DataType::f32, Tag::a);
    dnnl::deconvolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::deconvolution_direct,
        time_major_desc(batch, length, in_channels_), weights_any, bias_desc,
        time_major_desc(batch, out_length, out_channels_), {stride}, {padding_left_},
        {padding_right_});
    dnnl::deconvolution_forward::primitive_desc primitive_desc(desc, make_attr(false, fuse_elu),
                                                                cpu_engine());
    slot = std::make_unique<Compiled>(Compiled{
        dnnl::deconvolution_forward(primitive_desc),
        reorder_weights(weights_plain, weight_oiw_, primitive_desc.weights_desc())});
  }
  return *slot;
}

torch::Tensor ConvTranspose1d::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  const torch::Tensor input = x.contiguous();
  const int64_t batch = input.size(0), length = input.size(1);
  const int64_t out_length =
      (length - 1) * reference_.stride() + reference_.kernel_size() - padding_left_ - padding_right_;
  const bool plain = !reference_.group_norm().has_value();
  const bool fuse_elu = plain && epilogue.elu && !epilogue.residual;
  torch::Tensor y = torch::empty({batch, out_length, out_channels_}, input.options());
  const Compiled& deconv = compiled(batch, length, fuse_elu);
  dnnl::stream stream = make_stream();
  deconv.primitive.execute(
      stream, {{DNNL_ARG_SRC, wrap(time_major_desc(batch, length, in_channels_), input)},
               {DNNL_ARG_WEIGHTS, deconv.weights},
               {DNNL_ARG_BIAS, wrap(memory::desc({out_channels_}, DataType::f32, Tag::a), bias_)},
               {DNNL_ARG_DST, wrap(time_major_desc(batch, out_length, out_channels_), y)}});
  stream.wait();
  if (!plain) {
    y = group_norm_time_major(y, *reference_.group_norm())
            .narrow(1, trim_left_, out_length - trim_left_ - trim_right_)
            .contiguous();
  }
  return finish(y, epilogue, false, fuse_elu);
}

Lstm::Lstm(const SLSTM& reference)
    : dimension_(reference.dimension()), num_layers_(reference.num_layers()) {
  // PyTorch: per layer W_ih, W_hh [4H, in] with gates i, f, g, o, and two biases.
  // oneDNN: ldigo weights [layers, 1, in, 4, H] with the same gate order, one bias.
  std::vector<torch::Tensor> layer_weights, iter_weights, biases;
  const auto& parameters = reference.parameters();
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    const torch::Tensor& w_ih = parameters[4 * layer];
    const torch::Tensor& w_hh = parameters[4 * layer + 1];
    layer_weights.push_back(w_ih.view({4, dimension_, dimension_}).permute({2, 0, 1}));
    iter_weights.push_back(w_hh.view({4, dimension_, dimension_}).permute({2, 0, 1}));
    biases.push_back((parameters[4 * layer + 2] + parameters[4 * layer + 3]).view({4, dimension_}));
  }
  weights_layer_ldigo_ = torch::stack(layer_weights).unsqueeze(1).contiguous();
  weights_iter_ldigo_ = torch::stack(iter_weights).unsqueeze(1).contiguous();
  bias_ldgo_ = torch::stack(biases).unsqueeze(1).contiguous();
}

const Lstm::Compiled& Lstm::compiled(int64_t batch, int64_t length) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto& slot = cache_->entries[{batch, length}];
  if (!slot) {
    const int64_t layers = num_layers_, hidden = dimension_;
    const memory::desc sequence({length, batch, hidden}, DataType::f32, Tag::tnc);
    const memory::desc weights_any({layers, 1, hidden, 4, hidden}, DataType::f32, Tag::any);
    const memory::desc weights_plain({layers, 1, hidden, 4, hidden}, DataType::f32, Tag::ldigo);
    const memory::desc bias({layers, 1, 4, hidden}, DataType::f32, Tag::ldgo);
    const memory::desc no_state;
    dnnl::lstm_forward::desc desc(dnnl::prop_kind::forward_inference,
                                  dnnl::rnn_direction::unidirectional_left2right, sequence, no_state,
                                  no_state, weights_any, weights_any, bias, sequence, no_state,
                                  no_state);
    dnnl::lstm_forward::primitive_desc primitive_desc(desc, cpu_engine());
    slot = std::make_unique<Compiled>(Compiled{
        dnnl::lstm_forward(primitive_desc),
        reorder_weights(weights_plain, weights_layer_ldigo_, primitive_desc.weights_layer_desc()),
        reorder_weights(weights_plain, weights_iter_ldigo_, primitive_desc.weights_iter_desc())});
  }
  return *slot;
}

torch::Tensor Lstm::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  // oneDNN wants time-major [T, B, C]; for one stream that is the same memory.
  const torch::Tensor sequence = x.transpose(0, 1).contiguous();
  const int64_t length = sequence.size(0), batch = sequence.size(1);
  torch::Tensor output = torch::empty_like(sequence);
  const Compiled& lstm = compiled(batch, length);
  const memory::desc sequence_desc({length, batch, dimension_}, DataType::f32, Tag::tnc);
  dnnl::stream stream = make_stream();
  lstm.primitive.execute(
      stream, {{DNNL_ARG_SRC_LAYER, wrap(sequence_desc, sequence)},
               {DNNL_ARG_WEIGHTS_LAYER, lstm.weights_layer},
               {DNNL_ARG_WEIGHTS_ITER, lstm.weights_iter},
               {DNNL_ARG_BIAS,
                wrap(memory::desc({num_layers_, 1, 4, dimension_}, DataType::f32, Tag::ldgo),
                     bias_ldgo_)},
               {DNNL_ARG_DST_LAYER, wrap(sequence_desc, output)}});
  stream.wait();
  output.add_(sequence);  // SLSTM's skip connection
  torch::Tensor y = output.transpose(0, 1).contiguous();
  return finish(y, epilogue, false, false);
}

}  // namespace encodec::fast
