// The "fast" kernels: SEANet layers run by oneDNN (the library LibTorch itself
// uses for convolutions) on time-major activations [B, T, C], with weights
// reordered once per shape instead of on every call and ELUs fused into the
// convolution that produces their input. Results equal the reference kernels
// to float rounding, not bit for bit (different summation order).
//
// Thread safety: layers are immutable apart from their compiled-primitive caches,
// each guarded by a mutex; forward() may run concurrently from several threads.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include <oneapi/dnnl/dnnl.hpp>
#include <torch/torch.h>

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

// SConv1d on [B, T, C]: reflect padding as the reference, then a oneDNN conv.
class Conv1d {
 public:
  explicit Conv1d(const SConv1d& reference);
  // `elu_input`: the conv reads ELU(x) (applied while padding, saving a pass).
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {},
                        bool elu_input = false) const;

 private:
  struct Compiled {
    dnnl::convolution_forward primitive;
    dnnl::memory weights;
  };
  const Compiled& compiled(int64_t batch, int64_t padded_length, bool fuse_elu, bool fuse_sum) const;

  const SConv1d& reference_;
  int64_t in_channels_, out_channels_;
  torch::Tensor weight_oiw_, bias_;
  struct Cache {
    std::mutex mutex;
    std::map<std::tuple<int64_t, int64_t, bool, bool>, std::unique_ptr<Compiled>> entries;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

// SConvTranspose1d on [B, T, C]: the trimmed padding is the deconvolution's padding.
class ConvTranspose1d {
 public:
  explicit ConvTranspose1d(const SConvTranspose1d& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

 private:
  struct Compiled {
    dnnl::deconvolution_forward primitive;
    dnnl::memory weights;
  };
  const Compiled& compiled(int64_t batch, int64_t length, bool fuse_elu) const;

  const SConvTranspose1d& reference_;
  int64_t in_channels_, out_channels_, padding_left_, padding_right_;
  int64_t trim_left_ = 0, trim_right_ = 0;  // trimmed after a group norm instead
  torch::Tensor weight_oiw_, bias_;
  struct Cache {
    std::mutex mutex;
    std::map<std::tuple<int64_t, int64_t, bool>, std::unique_ptr<Compiled>> entries;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

// SLSTM on [B, T, C] with the skip connection. The input projections of all
// steps are one matrix product; each step's recurrent product is a
// matrix-vector product (BLAS gemv, several times faster than the 1-row matrix
// products LibTorch uses) and the gate arithmetic is one fused, vectorized loop.
class Lstm {
 public:
  explicit Lstm(const SLSTM& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

 private:
  int64_t dimension_, num_layers_;
  std::vector<torch::Tensor> input_weights_;      // per layer W_ih [4H, in]
  std::vector<torch::Tensor> recurrent_weights_;  // per layer W_hh [4H, H]
  std::vector<torch::Tensor> biases_;             // per layer b_ih + b_hh [4H]
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

// GroupNorm with one group over [B, T, C] (time-group-norm of the 48 kHz model).
torch::Tensor group_norm_time_major(const torch::Tensor& x, const GroupNormWeights& norm);

}  // namespace encodec::fast
