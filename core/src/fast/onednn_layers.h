// The "fast" kernels: SEANet layers on time-major activations [B, T, C], with
// weights prepared once and ELUs and residual adds fused into the product that
// produces their input. The products run on the ordered kernel (ordered_gemm.h,
// the default everywhere: a row's bits do not depend on its batch or the input
// length, which streaming needs) or on oneDNN (the library LibTorch uses for
// convolutions; weights reordered once per shape). Results equal the reference
// kernels to float rounding, not bit for bit (different summation order).
//
// Thread safety: layers are immutable apart from their compiled-primitive caches,
// each guarded by a mutex; forward() may run concurrently from several threads.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <torch/torch.h>

#include "fast/ordered_gemm.h"
#include "modules/conv.h"
#include "modules/lstm.h"

namespace encodec::fast {

// The process-wide CPU engine (oneDNN engines are thread-safe).
const dnnl::engine& cpu_engine();

// What happens to a layer's output before it is returned.
struct Epilogue {
  // When defined ([B, T, C], contiguous, the output's shape and not used
  // elsewhere): the output is added to it in place and it is returned.
  torch::Tensor accumulate_into;
  bool elu = false;  // then ELU
};

// A oneDNN convolution over time-major [B, T, C] with zero padding, compiled
// once per input shape (weights reordered to the layout the kernel chose).
class ConvPrimitive {
 public:
  // weight [out, in, kernel], bias [out].
  ConvPrimitive(torch::Tensor weight, torch::Tensor bias, int64_t stride, int64_t dilation,
                int64_t padding_left, int64_t padding_right);
  int64_t output_length(int64_t input_length) const;
  int64_t out_channels() const { return weight_.size(0); }
  // x [B, T, in] contiguous -> out [B, output_length(T), out] contiguous. With
  // `accumulate` the result is added to what `out` holds; `elu` is applied last.
  void run(const torch::Tensor& x, torch::Tensor& out, bool accumulate, bool elu) const;

 private:
  struct Compiled {
    dnnl::convolution_forward primitive;
    dnnl::memory weights;
  };
  using Key = std::tuple<int64_t, int64_t, bool, bool>;  // batch, length, accumulate, elu
  std::shared_ptr<const Compiled> compiled(int64_t batch, int64_t length, bool accumulate,
                                           bool elu) const;

  torch::Tensor weight_, bias_;
  int64_t stride_, dilation_, padding_left_, padding_right_;
  // A file-transcoding server meets a new input length with every file, so the
  // cache is bounded (oldest out first); reordered weights are shared by every
  // entry whose kernel chose the same layout.
  static constexpr size_t kMaxCachedShapes = 32;
  struct Cache {
    std::mutex mutex;
    std::map<Key, std::shared_ptr<const Compiled>> entries;
    std::deque<Key> insertion_order;
    std::vector<dnnl::memory> reordered_weights;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

// Which kernel a convolution runs on. oneDNN is the fastest for long inputs, but
// the order of its sums depends on the input length; the ordered kernel
// (ordered_gemm.h) gives every output the same bits whatever the length, the
// batch or the thread count, which the streaming encoder needs to equal the
// offline one.
enum class ConvBackend { kOneDnn, kOrdered };

// SConv1d on [B, T, C]: reflect padding as the reference, then the convolution.
class Conv1d {
 public:
  explicit Conv1d(const SConv1d& reference, ConvBackend backend = ConvBackend::kOneDnn);
  // `elu_input`: the conv reads ELU(x) (applied while padding, saving a pass).
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {},
                        bool elu_input = false) const;

  // The convolution alone on an already padded input: `padded` [batch,
  // padded_length, in] -> `out` [batch, output_length(padded_length), out]
  // (plus what `out` holds with `accumulate`; ELU last with `elu`). No group
  // norm (streaming runs only causal, norm-free convs). Allocates nothing once
  // a shape has been seen.
  void run_padded(const float* padded, int64_t batch, int64_t padded_length, float* out,
                  bool accumulate, bool elu) const;
  int64_t output_length(int64_t padded_length) const;
  const SConv1d& reference() const { return reference_; }
  const PackedMatrix& ordered_weights() const { return ordered_weights_; }  // kOrdered only

 private:
  void run(const torch::Tensor& padded, torch::Tensor& out, bool accumulate, bool elu) const;

  const SConv1d& reference_;
  ConvBackend backend_;
  ConvPrimitive conv_;
  PackedMatrix ordered_weights_;  // kOrdered: [kernel * in (window order), out]
};

// SConvTranspose1d on [B, T, C], as a plain convolution over the input that
// computes every output phase (kernel 2 x stride, stride s: output t*s + r is
// x[t] w[r] + x[t-1] w[r+s]) into [B, T + 1, s * C_out], which in time-major
// layout already is the interleaved output [B, (T + 1) * s, C_out]. oneDNN's
// own deconvolution kernels run at a third to half of its convolution speed on
// these shapes. The reference's padding trim is then a slice.
class ConvTranspose1d {
 public:
  explicit ConvTranspose1d(const SConvTranspose1d& reference,
                           ConvBackend backend = ConvBackend::kOneDnn);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

  const SConvTranspose1d& reference() const { return reference_; }
  int64_t taps() const { return reference_.kernel_size() / reference_.stride(); }
  // kOrdered: the phase convolution's matrix, [taps * in (window order), stride * out],
  // and its bias [stride * out].
  const PackedMatrix& ordered_phases() const { return ordered_phases_; }
  const torch::Tensor& phase_bias() const { return phase_bias_; }

 private:
  const SConvTranspose1d& reference_;
  ConvBackend backend_;
  int64_t out_channels_, trim_left_, trim_right_;
  torch::Tensor phase_bias_;
  ConvPrimitive phases_;
  PackedMatrix ordered_phases_;
};

// SLSTM on [B, T, C] with the skip connection. The input projections of all
// steps are one matrix product, each step's recurrent product another, and the
// gate arithmetic is one fused, vectorized loop. Both products run on the
// ordered kernel, so that a step gives the same bits for a stream alone, within
// a whole sequence, or stacked with other streams.
class Lstm {
 public:
  explicit Lstm(const SLSTM& reference);
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
  std::vector<PackedMatrix> input_weights_;      // per layer W_ih, [in, 4H]
  std::vector<PackedMatrix> recurrent_weights_;  // per layer W_hh, [H, 4H]
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
// unfused ELU of the fast paths, so that they round alike.
void copy_elu(const float* source, float* target, int64_t count);
void elu_in_place(float* values, int64_t count);

// GroupNorm with one group over [B, T, C] (time-group-norm of the 48 kHz
// model), in place on a contiguous tensor.
void group_norm_time_major_(torch::Tensor& y, const GroupNormWeights& norm);

}  // namespace encodec::fast
