// The "fast" kernels: SEANet layers on time-major activations [B, T, C], with
// weights packed once and ELUs and residual adds fused into the product that
// produces their input. Every product runs on the ordered kernel
// (ordered_gemm.h): a row's bits do not depend on its batch or the input length,
// which the streaming engine needs to equal the offline path. (oneDNN, which
// LibTorch uses for convolutions, sums in an order chosen from the shapes.)
// Results equal the reference kernels to float rounding, not bit for bit.
// A layer built in Precision::kBf16 holds its weights in bf16 and rounds its
// inputs to bf16 (ordered_matrix.h); everything between the products (ELU,
// residual adds, group norm, LSTM gates) stays fp32.
//
// Thread safety: layers are immutable; forward() may run concurrently from
// several threads.
#pragma once

#include <optional>
#include <vector>

#include <torch/torch.h>

#include "fast/cpu_tier.h"
#include "fast/ordered_matrix.h"
#include "modules/conv.h"
#include "modules/lstm.h"

namespace encodec::fast {

// What happens to a layer's output before it is returned.
struct Epilogue {
  // When defined ([B, T, C], contiguous, the output's shape and not used
  // elsewhere): the output is added to it in place and it is returned.
  torch::Tensor accumulate_into;
  bool elu = false;  // then ELU
};

// SConv1d on [B, T, C]: reflect padding as the reference, then the convolution.
class Conv1d {
 public:
  explicit Conv1d(const SConv1d& reference, Precision precision = Precision::kFp32);
  // `elu_input`: the conv reads ELU(x) (applied while padding, saving a pass).
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {},
                        bool elu_input = false) const;

  // The convolution alone on an already padded input: `padded` [batch,
  // padded_length, in] -> `out` [batch, output_length(padded_length), out]
  // (plus what `out` holds with `accumulate`; ELU last with `elu`). No group
  // norm (streaming runs only causal, norm-free convs). Allocates nothing.
  void run_padded(const float* padded, int64_t batch, int64_t padded_length, float* out,
                  bool accumulate, bool elu) const;
  int64_t output_length(int64_t padded_length) const;
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  const SConv1d& reference() const { return reference_; }
  // [kernel * in (window order), out]
  const OrderedMatrix& ordered_weights() const { return weights_; }

 private:
  const SConv1d& reference_;  // its metadata: the kernel itself may be released
  int64_t in_channels_, out_channels_;
  OrderedMatrix weights_;
};

// SConvTranspose1d on [B, T, C], as a plain convolution over the input that
// computes every output phase (kernel 2 x stride, stride s: output t*s + r is
// x[t] w[r] + x[t-1] w[r+s]) into [B, T + 1, s * C_out], which in time-major
// layout already is the interleaved output [B, (T + 1) * s, C_out]: one
// ordered product over windows of kernel / stride rows, no scatter. The
// reference's padding trim is then a slice.
class ConvTranspose1d {
 public:
  explicit ConvTranspose1d(const SConvTranspose1d& reference,
                           Precision precision = Precision::kFp32);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

  const SConvTranspose1d& reference() const { return reference_; }
  int64_t taps() const { return reference_.kernel_size() / reference_.stride(); }
  int64_t in_channels() const { return phases_.rows() / taps(); }
  int64_t out_channels() const { return out_channels_; }
  // The phase convolution's matrix, [taps * in (window order), stride * out],
  // and its bias [stride * out].
  const OrderedMatrix& ordered_phases() const { return phases_; }
  const torch::Tensor& phase_bias() const { return phase_bias_; }

 private:
  const SConvTranspose1d& reference_;  // its metadata: the kernel itself may be released
  int64_t out_channels_, trim_left_, trim_right_;
  torch::Tensor phase_bias_;
  OrderedMatrix phases_;
};

// SLSTM on [B, T, C] with the skip connection. The input projections of all
// steps are one matrix product, each step's recurrent product another, and the
// gate arithmetic is one fused, vectorized loop. Both products run on the
// ordered kernel, so that a step gives the same bits for a stream alone, within
// a whole sequence, or stacked with other streams.
class Lstm {
 public:
  explicit Lstm(const SLSTM& reference, Precision precision = Precision::kFp32);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

  int64_t dimension() const { return dimension_; }
  int64_t num_layers() const { return num_layers_; }
  // One step for `batch` rows: input [batch, H] -> output [batch, H] (with the
  // skip connection added), updating hidden and cell [num_layers, batch, H].
  // `scratch` holds at least 4 * H * batch * 2 floats. Allocates nothing.
  void step(const float* input, float* output, float* hidden, float* cell, int64_t batch,
            float* scratch) const;

 private:
  int64_t dimension_, num_layers_;
  std::vector<OrderedMatrix> input_weights_;      // per layer W_ih, [in, 4H]
  std::vector<OrderedMatrix> recurrent_weights_;  // per layer W_hh, [H, 4H]
  std::vector<torch::Tensor> biases_;            // per layer b_ih + b_hh [4H]
};

// One LSTM step's gate arithmetic for `batch` rows: the gate pre-activations
// (i, f, g, o) are recurrent + projected, both [batch, 4H]; the cell state
// [batch, H] is updated and the hidden state [batch, H] written.
void lstm_gates(const float* recurrent, const float* projected, float* cell, float* hidden,
                int64_t batch, int64_t hidden_size);

// Reflect padding of [B, T, C] along T, with the reference's rule for inputs
// shorter than the padding (zeros appended before reflecting, removed after);
// optionally applying ELU to every value on the way.
torch::Tensor reflect_pad_time_major(const torch::Tensor& x, int64_t left, int64_t right,
                                     bool elu = false);

// ELU (alpha 1) with a vectorized exp: one function for every fused and
// unfused ELU of the fast paths, so that they round alike. The same bits on
// every CPU, whichever vector instructions it has; a NaN gives 0.
void copy_elu(const float* source, float* target, int64_t count);
void elu_in_place(float* values, int64_t count);

// The vector instructions copy_elu runs on: cpu_tier() (the best the CPU has,
// or ENCODEC_CPU's), or (tests) any below it; `source` may be `target`.
VectorIsa best_vector_isa();
void copy_elu(const float* source, float* target, int64_t count, VectorIsa isa);

// GroupNorm with one group over [B, T, C] (time-group-norm of the 48 kHz
// model), in place on a contiguous tensor.
void group_norm_time_major_(torch::Tensor& y, const GroupNormWeights& norm);

}  // namespace encodec::fast
