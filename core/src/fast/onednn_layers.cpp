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
torch::Tensor finish(torch::Tensor y, const Epilogue& epilogue, bool accumulated, bool elu_done) {
  if (epilogue.accumulate_into.defined() && !accumulated) {
    y = epilogue.accumulate_into.add_(y);
  }
  if (epilogue.elu && !elu_done) y = torch::elu_(y);
  return y;
}

}  // namespace

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

torch::Tensor reflect_pad_time_major(const torch::Tensor& x, int64_t left, int64_t right,
                                     bool elu) {
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
  if (elu) torch::elu_(out);
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

torch::Tensor Conv1d::forward(const torch::Tensor& x, const Epilogue& epilogue,
                             bool elu_input) const {
  const int64_t padding = reference_.padding_total();
  const int64_t extra = extra_padding_for_conv1d(x.size(1), reference_.effective_kernel_size(),
                                                 reference_.stride(), padding);
  const int64_t padding_right = reference_.causal() ? extra : padding / 2 + extra;
  const int64_t padding_left = reference_.causal() ? padding : padding - padding / 2;
  torch::Tensor padded;
  if (padding_left == 0 && padding_right == 0) {
    padded = elu_input ? torch::elu(x).contiguous() : x.contiguous();  // 1x1 convs: no copy
  } else {
    padded = reflect_pad_time_major(x.contiguous(), padding_left, padding_right, elu_input);
  }
  const int64_t batch = padded.size(0), padded_length = padded.size(1);
  const int64_t out_length =
      (padded_length - reference_.effective_kernel_size()) / reference_.stride() + 1;

  // Post-ops can only be fused when nothing (a group norm) comes between the conv and them.
  const bool plain = !reference_.group_norm().has_value();
  const bool fuse_sum = plain && epilogue.accumulate_into.defined();
  const bool fuse_elu = plain && epilogue.elu;
  torch::Tensor y = fuse_sum ? epilogue.accumulate_into
                             : torch::empty({batch, out_length, out_channels_}, x.options());
  TORCH_CHECK(y.is_contiguous() && y.size(1) == out_length && y.size(2) == out_channels_,
              "accumulation target has the wrong shape");
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
  const bool fuse_elu = plain && epilogue.elu && !epilogue.accumulate_into.defined();
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

namespace {

// exp for the gate nonlinearities: Cephes' single-precision polynomial (about
// 1 ulp), branch-free so that the gate loop vectorizes.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent_bits, sizeof(scale));
  return p * scale;
}

inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline float tanh_approx(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void lstm_gates(const float* recurrent, const float* projected, float* cell, float* hidden,
                int64_t batch, int64_t hidden_size) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* r = recurrent + b * 4 * hidden_size;
    const float* p = projected + b * 4 * hidden_size;
    const int64_t f = hidden_size, g = 2 * hidden_size, o = 3 * hidden_size;
    float* c = cell + b * hidden_size;
    float* h = hidden + b * hidden_size;
    for (int64_t j = 0; j < hidden_size; ++j) {
      const float new_cell = sigmoid_approx(r[f + j] + p[f + j]) * c[j] +
                             sigmoid_approx(r[j] + p[j]) * tanh_approx(r[g + j] + p[g + j]);
      c[j] = new_cell;
      h[j] = sigmoid_approx(r[o + j] + p[o + j]) * tanh_approx(new_cell);
    }
  }
}

Lstm::Lstm(const SLSTM& reference)
    : dimension_(reference.dimension()), num_layers_(reference.num_layers()) {
  const auto& parameters = reference.parameters();
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    input_weights_.push_back(parameters[4 * layer].contiguous());
    recurrent_weights_.push_back(parameters[4 * layer + 1].contiguous());
    biases_.push_back(parameters[4 * layer + 2] + parameters[4 * layer + 3]);
  }
}

torch::Tensor Lstm::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  const torch::Tensor sequence = x.transpose(0, 1).contiguous();  // [T, B, H]
  const int64_t length = sequence.size(0), batch = sequence.size(1), hidden = dimension_;
  torch::Tensor layer_input = sequence;
  torch::Tensor gates = torch::empty({batch, 4 * hidden}, x.options());
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    // All steps' input projections (plus both biases) at once: [T, B, 4H].
    const torch::Tensor projected =
        torch::addmm(biases_[layer], layer_input.reshape({length * batch, hidden}),
                     input_weights_[layer].t())
            .view({length, batch, 4 * hidden});
    torch::Tensor output = torch::empty({length, batch, hidden}, x.options());
    torch::Tensor cell = torch::zeros({batch, hidden}, x.options());
    torch::Tensor state = torch::zeros({batch, hidden}, x.options());
    const torch::Tensor& recurrent = recurrent_weights_[layer];
    for (int64_t t = 0; t < length; ++t) {
      if (batch == 1) {
        torch::Tensor row = gates[0];
        torch::mv_out(row, recurrent, state[0]);
      } else {
        torch::mm_out(gates, state, recurrent.t());
      }
      torch::Tensor step_output = output[t];
      lstm_gates(gates.data_ptr<float>(), projected[t].data_ptr<float>(), cell.data_ptr<float>(),
                 step_output.data_ptr<float>(), batch, hidden);
      state = step_output;
    }
    layer_input = output;
  }
  torch::Tensor y = layer_input.add_(sequence).transpose(0, 1).contiguous();  // skip connection
  return finish(y, epilogue, false, false);
}

}  // namespace encodec::fast
