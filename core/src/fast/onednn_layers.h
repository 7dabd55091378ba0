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

// What happens to a convolution's output before it is stored.
struct Epilogue {
  const torch::Tensor* residual = nullptr;  // added first ([B, T, C], same shape as the output)
  bool elu = false;                         // then ELU
};

// SConv1d on [B, T, C]: reflect padding as the reference, then a oneDNN conv.
class Conv1d {
 public:
  explicit Conv1d(const SConv1d& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

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

// SLSTM on [B, T, C] with the skip connection, as one oneDNN LSTM primitive.
class Lstm {
 public:
  explicit Lstm(const SLSTM& reference);
  torch::Tensor forward(const torch::Tensor& x, const Epilogue& epilogue = {}) const;

 private:
  struct Compiled {
    dnnl::lstm_forward primitive;
    dnnl::memory weights_layer, weights_iter;
  };
  const Compiled& compiled(int64_t batch, int64_t length) const;

  int64_t dimension_, num_layers_;
  torch::Tensor weights_layer_ldigo_, weights_iter_ldigo_, bias_ldgo_;
  struct Cache {
    std::mutex mutex;
    std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Compiled>> entries;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

// Reflect padding of [B, T, C] along T, with the reference's rule for inputs
// shorter than the padding (zeros appended before reflecting, removed after).
torch::Tensor reflect_pad_time_major(const torch::Tensor& x, int64_t left, int64_t right);

// GroupNorm with one group over [B, T, C] (time-group-norm of the 48 kHz model).
torch::Tensor group_norm_time_major(const torch::Tensor& x, const GroupNormWeights& norm);

}  // namespace encodec::fast
