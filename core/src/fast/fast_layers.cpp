#include "fast/fast_layers.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

namespace encodec::fast {
namespace {

// exp for the gate nonlinearities: Cephes' single-precision polynomial (about
// 1 ulp), branch-free so that the gate loop vectorizes.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round to nearest with the 1.5 * 2^23 trick: no libm call, so loops vectorize.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
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

// ELU(x) = x for x > 0, exp(x) - 1 otherwise (NaN gives 0). exp is Cephes'
// polynomial on the reduced argument, written with fused multiply-adds and an
// exact power-of-two scaling, so that the AVX-512, the AVX2 and the portable
// versions below do the same operations in the same order: the same bits on
// every CPU, and the fused and unfused ELUs of the fast paths round alike.
namespace elu {

// Below this, exp(x) - 1 rounds to -1 in fp32 (exp(-20) < 2^-24): clamping
// there keeps the scaling's exponent small (2^n stays normal) without
// changing a result.
constexpr float kFloor = -20.0f;
constexpr float kLog2e = 1.44269504088896341f;
// ln 2 in two parts (the first exact in few bits): r = x - n ln 2 stays exact.
constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
constexpr float kPolynomial[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

float portable(float x) {
  float t = x < 0.0f ? x : 0.0f;  // NaN: 0
  t = t < kFloor ? kFloor : t;
  const float n = std::nearbyint(t * kLog2e);  // to nearest even, as VRNDSCALEPS
  float r = std::fma(-n, kLn2High, t);
  r = std::fma(n, -kLn2Low, r);
  float p = kPolynomial[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kPolynomial[i]);
  const float e = std::fma(p, r * r, r) + 1.0f;
  const float negative = std::ldexp(e, static_cast<int>(n)) - 1.0f;
  return x > 0.0f ? x : negative;
}

__attribute__((target("avx512f"))) __m512 avx512(__m512 x) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 t = _mm512_max_ps(_mm512_min_ps(x, zero), _mm512_set1_ps(kFloor));  // min: NaN gives 0
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), t);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Low), r);
  __m512 p = _mm512_set1_ps(kPolynomial[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kPolynomial[i]));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), one);
  const __m512 negative = _mm512_sub_ps(_mm512_scalef_ps(e, n), one);  // n >= -29: exact
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), negative, x);
}

__attribute__((target("avx2,fma"))) __m256 avx2(__m256 x) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 t = _mm256_max_ps(_mm256_min_ps(x, zero), _mm256_set1_ps(kFloor));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2High), t);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Low), r);
  __m256 p = _mm256_set1_ps(kPolynomial[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kPolynomial[i]));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), one);
  // 2^n from its exponent bits (n >= -29: a normal number, so the product is exact).
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 negative = _mm256_sub_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(exponent)), one);
  return _mm256_blendv_ps(negative, x, _mm256_cmp_ps(x, zero, _CMP_GT_OQ));
}

__attribute__((target("avx512f"))) void span_avx512(const float* source, float* target, int64_t count) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) _mm512_storeu_ps(target + i, avx512(_mm512_loadu_ps(source + i)));
  if (i < count) {
    const auto mask = static_cast<__mmask16>((1u << (count - i)) - 1u);
    _mm512_mask_storeu_ps(target + i, mask, avx512(_mm512_maskz_loadu_ps(mask, source + i)));
  }
}

__attribute__((target("avx2,fma"))) void span_avx2(const float* source, float* target, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(target + i, avx2(_mm256_loadu_ps(source + i)));
  for (; i < count; ++i) target[i] = portable(source[i]);
}

}  // namespace elu

VectorIsa best_vector_isa() { return cpu_tier(); }

void copy_elu(const float* source, float* target, int64_t count, VectorIsa isa) {
  switch (isa) {
    case VectorIsa::kAvx512: return elu::span_avx512(source, target, count);
    case VectorIsa::kAvx2: return elu::span_avx2(source, target, count);
    case VectorIsa::kPortable:
      for (int64_t i = 0; i < count; ++i) target[i] = elu::portable(source[i]);
  }
}

void copy_elu(const float* source, float* target, int64_t count) {
  copy_elu(source, target, count, best_vector_isa());
}

void elu_in_place(float* values, int64_t count) { copy_elu(values, values, count, best_vector_isa()); }

namespace {

// Applies the parts of an epilogue a primitive could not fuse.
torch::Tensor finish(torch::Tensor y, const Epilogue& epilogue, bool accumulated, bool elu_done) {
  if (epilogue.accumulate_into.defined() && !accumulated) {
    y = epilogue.accumulate_into.add_(y);
  }
  if (epilogue.elu && !elu_done) {
    y = y.contiguous();
    elu_in_place(y.data_ptr<float>(), y.numel());
  }
  return y;
}

void copy_rows(const float* source, float* target, int64_t count, bool elu) {
  if (elu) {
    copy_elu(source, target, count);
  } else {
    std::memcpy(target, source, count * sizeof(float));
  }
}

}  // namespace

torch::Tensor reflect_pad_time_major(const torch::Tensor& x, int64_t left, int64_t right,
                                     bool elu) {
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
  // The reference appends zeros when the input is too short to reflect, then
  // drops them again: positions map into that zero-extended signal.
  const int64_t extended = std::max(length, std::max(left, right) + 1);
  torch::Tensor out = torch::empty({batch, left + length + right, channels}, x.options());
  const float* source = x.data_ptr<float>();
  float* target = out.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* source_rows = source + b * length * channels;
    float* target_rows = target + b * (left + length + right) * channels;
    copy_rows(source_rows, target_rows + left * channels, length * channels, elu);
    for (int64_t j = 0; j < left + length + right; ++j) {
      if (j == left) j += length;  // the middle was copied above
      if (j >= left + length + right) break;
      int64_t position = j - left;
      if (position < 0) position = -position;
      if (position >= extended) position = 2 * (extended - 1) - position;
      float* row = target_rows + j * channels;
      if (position < length) {
        copy_rows(source_rows + position * channels, row, channels, elu);
      } else {
        std::fill(row, row + channels, 0.0f);  // ELU(0) = 0 too
      }
    }
  }
  return out;
}

namespace {

// Sum and sum of squares of `count` floats, in double (eight independent lanes
// so that the loop vectorizes without reassociating a single sum).
__attribute__((target_clones("avx512f", "avx2", "default")))
void sum_and_squares(const float* __restrict values, int64_t count, double* sum, double* squares) {
  double lane_sum[8] = {}, lane_squares[8] = {};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    for (int lane = 0; lane < 8; ++lane) {
      const double value = values[i + lane];
      lane_sum[lane] += value;
      lane_squares[lane] += value * value;
    }
  }
  for (; i < count; ++i) {
    lane_sum[0] += values[i];
    lane_squares[0] += static_cast<double>(values[i]) * values[i];
  }
  *sum = *squares = 0;
  for (int lane = 0; lane < 8; ++lane) {
    *sum += lane_sum[lane];
    *squares += lane_squares[lane];
  }
}

// rows x channels: value * scale[c] + shift[c], in place.
__attribute__((target_clones("avx512f", "avx2", "default")))
void scale_and_shift(float* __restrict values, int64_t rows, int64_t channels,
                     const float* __restrict scale, const float* __restrict shift) {
  for (int64_t row = 0; row < rows; ++row) {
    float* row_values = values + row * channels;
    for (int64_t c = 0; c < channels; ++c) row_values[c] = row_values[c] * scale[c] + shift[c];
  }
}

}  // namespace

void group_norm_time_major_(torch::Tensor& y, const GroupNormWeights& norm) {
  // Two passes over the activation instead of LibTorch's six: statistics, then
  // one scale-and-shift per channel folding the mean, deviation and affine.
  TORCH_CHECK(y.is_contiguous(), "group norm works in place on a contiguous tensor");
  const int64_t batch = y.size(0), rows = y.size(1), channels = y.size(2);
  const float* weight = norm.weight.data_ptr<float>();
  const float* bias = norm.bias.data_ptr<float>();
  std::vector<float> scale(channels), shift(channels);
  for (int64_t b = 0; b < batch; ++b) {
    float* values = y.data_ptr<float>() + b * rows * channels;
    const int64_t count = rows * channels;
    double sum = 0, squares = 0;
    sum_and_squares(values, count, &sum, &squares);
    const double mean = sum / count;
    const double variance = std::max(0.0, squares / count - mean * mean);
    const double inverse_deviation = 1.0 / std::sqrt(variance + 1e-5);
    for (int64_t c = 0; c < channels; ++c) {
      scale[c] = static_cast<float>(weight[c] * inverse_deviation);
      shift[c] = static_cast<float>(bias[c] - mean * weight[c] * inverse_deviation);
    }
    scale_and_shift(values, rows, channels, scale.data(), shift.data());
  }
}

namespace {

// A conv weight [out, in, kernel] as the ordered kernel's matrix: row n holds
// output channel n's taps in the order of a time-major window (tap-major, then
// input channel), so that a window of `kernel` consecutive rows is one row of A.
OrderedMatrix pack_conv_weight(const torch::Tensor& weight, Precision precision) {
  const torch::Tensor window_order = weight.permute({0, 2, 1}).contiguous();
  return OrderedMatrix(window_order.data_ptr<float>(), weight.size(0),
                       weight.size(1) * weight.size(2), precision);
}

}  // namespace

Conv1d::Conv1d(const SConv1d& reference, Precision precision)
    : reference_(reference),
      in_channels_(reference.weight().size(1)),
      out_channels_(reference.weight().size(0)),
      weights_(pack_conv_weight(reference.weight(), precision)) {}

int64_t Conv1d::output_length(int64_t padded_length) const {
  return (padded_length - reference_.effective_kernel_size()) / reference_.stride() + 1;
}

void Conv1d::run_padded(const float* padded, int64_t batch, int64_t padded_length, float* out,
                        bool accumulate, bool elu) const {
  const int64_t in_channels = in_channels_, out_channels = out_channels_;
  const int64_t out_length = output_length(padded_length);
  if (out_length <= 0) return;
  TORCH_CHECK(reference_.dilation() == 1, "the ordered conv kernel reads windows of consecutive rows");
  const int64_t stride = reference_.stride();
  for (int64_t b = 0; b < batch; ++b) {
    float* target = out + b * out_length * out_channels;
    ordered_gemm(padded + b * padded_length * in_channels, stride * in_channels, out_length,
                 weights_, target, out_channels, {reference_.bias().data_ptr<float>(), accumulate});
    if (elu) elu_in_place(target, out_length * out_channels);
  }
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
  // The epilogue can only be fused when nothing (a group norm) comes between the conv and it.
  const bool plain = !reference_.group_norm().has_value();
  const bool fuse_sum = plain && epilogue.accumulate_into.defined();
  const bool fuse_elu = plain && epilogue.elu;
  torch::Tensor y = fuse_sum ? epilogue.accumulate_into
                             : torch::empty({padded.size(0), output_length(padded.size(1)),
                                             out_channels_},
                                            x.options());
  run_padded(padded.data_ptr<float>(), padded.size(0), padded.size(1), y.data_ptr<float>(),
             fuse_sum, fuse_elu);
  if (!plain) group_norm_time_major_(y, *reference_.group_norm());
  return finish(y, epilogue, fuse_sum, fuse_elu);
}

namespace {

// Rearranges a transposed conv's weight [in, out, m * stride] into the
// equivalent phase convolution's [stride * out, in, m] (see ConvTranspose1d).
torch::Tensor phase_weights(const torch::Tensor& weight, int64_t stride) {
  const int64_t in_channels = weight.size(0), out_channels = weight.size(1);
  const int64_t taps = weight.size(2) / stride;
  // [in, out, tap j, phase r] -> output channel r * out + o, input i, tap (taps - 1 - j):
  // the conv's last tap reads x[t], tap j of the transposed kernel reads x[t - j].
  return weight.view({in_channels, out_channels, taps, stride})
      .flip({2})
      .permute({3, 1, 0, 2})
      .reshape({stride * out_channels, in_channels, taps})
      .contiguous();
}

}  // namespace

ConvTranspose1d::ConvTranspose1d(const SConvTranspose1d& reference, Precision precision)
    : reference_(reference),
      out_channels_(reference.weight().size(1)),
      phase_bias_(reference.bias().repeat({reference.stride()}).contiguous()) {
  TORCH_CHECK(reference.kernel_size() % reference.stride() == 0,
              "fast transposed convs need a kernel size that is a multiple of the stride");
  const int64_t padding_total = reference.kernel_size() - reference.stride();
  trim_right_ = reference.causal() ? padding_total : padding_total / 2;
  trim_left_ = padding_total - trim_right_;
  phases_ = pack_conv_weight(phase_weights(reference.weight(), reference.stride()), precision);
}

torch::Tensor ConvTranspose1d::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  const torch::Tensor input = x.contiguous();
  const int64_t batch = input.size(0), stride = reference_.stride();
  // The phase convolution's zero padding (taps - 1 rows each side) made
  // explicit, then windows of `taps` rows: one phase row per window.
  const int64_t in_channels = input.size(2), context = taps() - 1;
  const int64_t phase_rows = input.size(1) + context;
  const bool plain = !reference_.group_norm().has_value();
  const bool fuse_elu = plain && epilogue.elu && !epilogue.accumulate_into.defined();
  torch::Tensor full = torch::empty({batch, phase_rows, stride * out_channels_}, input.options());
  const torch::Tensor padded = torch::constant_pad_nd(input, {0, 0, context, context}).contiguous();
  for (int64_t b = 0; b < batch; ++b) {
    float* target = full[b].data_ptr<float>();
    ordered_gemm(padded[b].data_ptr<float>(), in_channels, phase_rows, phases_, target,
                 stride * out_channels_, {phase_bias_.data_ptr<float>()});
    if (fuse_elu) elu_in_place(target, phase_rows * stride * out_channels_);
  }
  torch::Tensor y = full.view({batch, phase_rows * stride, out_channels_});
  // The reference normalizes the untrimmed output, then trims.
  if (!plain) group_norm_time_major_(y, *reference_.group_norm());
  y = y.narrow(1, trim_left_, y.size(1) - trim_left_ - trim_right_);
  if (batch > 1 || !plain) y = y.contiguous();
  return finish(y, epilogue, false, fuse_elu);
}


__attribute__((target_clones("avx512f", "avx2", "default")))
void lstm_gates(const float* __restrict recurrent, const float* __restrict projected,
                float* __restrict cell, float* __restrict hidden, int64_t batch,
                int64_t hidden_size) {
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

Lstm::Lstm(const SLSTM& reference, Precision precision)
    : dimension_(reference.dimension()), num_layers_(reference.num_layers()) {
  const auto& parameters = reference.parameters();
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    const torch::Tensor input_weight = parameters[4 * layer].contiguous();
    const torch::Tensor recurrent_weight = parameters[4 * layer + 1].contiguous();
    input_weights_.emplace_back(input_weight.data_ptr<float>(), input_weight.size(0),
                                input_weight.size(1), precision);
    recurrent_weights_.emplace_back(recurrent_weight.data_ptr<float>(), recurrent_weight.size(0),
                                    recurrent_weight.size(1), precision);
    biases_.push_back(parameters[4 * layer + 2] + parameters[4 * layer + 3]);
  }
}

torch::Tensor Lstm::forward(const torch::Tensor& x, const Epilogue& epilogue) const {
  const torch::Tensor sequence = x.transpose(0, 1).contiguous();  // [T, B, H]
  const int64_t length = sequence.size(0), batch = sequence.size(1), hidden = dimension_;
  torch::Tensor layer_input = sequence;
  torch::Tensor recurrent = torch::empty({batch, 4 * hidden}, x.options());
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    // All steps' input projections (plus both biases) at once: [T, B, 4H].
    torch::Tensor projected = torch::empty({length, batch, 4 * hidden}, x.options());
    ordered_gemm(layer_input.data_ptr<float>(), hidden, length * batch, input_weights_[layer],
                 projected.data_ptr<float>(), 4 * hidden, {biases_[layer].data_ptr<float>()});
    torch::Tensor output = torch::empty({length, batch, hidden}, x.options());
    torch::Tensor cell = torch::zeros({batch, hidden}, x.options());
    torch::Tensor state = torch::zeros({batch, hidden}, x.options());
    for (int64_t t = 0; t < length; ++t) {
      ordered_gemm(state.data_ptr<float>(), hidden, batch, recurrent_weights_[layer],
                   recurrent.data_ptr<float>(), 4 * hidden);
      torch::Tensor step_output = output[t];
      lstm_gates(recurrent.data_ptr<float>(), projected[t].data_ptr<float>(),
                 cell.data_ptr<float>(), step_output.data_ptr<float>(), batch, hidden);
      state = step_output;
    }
    layer_input = output;
  }
  torch::Tensor y = layer_input.add_(sequence).transpose(0, 1).contiguous();  // skip connection
  return finish(y, epilogue, false, false);
}

void Lstm::step(const float* input, float* output, float* hidden, float* cell, int64_t batch,
                float* scratch) const {
  const int64_t size = dimension_;
  float* projected = scratch;
  float* recurrent = scratch + 4 * size * batch;
  const float* layer_input = input;
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    float* layer_hidden = hidden + layer * batch * size;
    float* layer_cell = cell + layer * batch * size;
    ordered_gemm(layer_input, size, batch, input_weights_[layer], projected, 4 * size,
                 {biases_[layer].data_ptr<float>()});
    ordered_gemm(layer_hidden, size, batch, recurrent_weights_[layer], recurrent, 4 * size);
    lstm_gates(recurrent, projected, layer_cell, layer_hidden, batch, size);
    layer_input = layer_hidden;
  }
  for (int64_t i = 0; i < batch * size; ++i) output[i] = layer_input[i] + input[i];
}

}  // namespace encodec::fast
