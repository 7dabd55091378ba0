// EnCodec neural audio codec (Défossez et al., 2022) on LibTorch: the causal
// 24 kHz mono model and the non-causal 48 kHz stereo model, loading the official
// checkpoints unchanged.
//
// Usage:
//   auto model = encodec::EncodecModel::encodec_model_24khz();   // cache or download
//   model.set_target_bandwidth(6.0);
//   std::vector<encodec::EncodedFrame> frames = model.encode(wav);  // wav [B, C, T]
//   torch::Tensor out = model.decode(frames);                      // [B, C, >= T]
//
// Thread safety: the weights are immutable and shared by copies of a model, so
// copies may encode and decode concurrently; a single object must not be used
// from two threads while set_target_bandwidth is called on it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "encodec/checkpoint.h"
#include "encodec/model_store.h"
#include "encodec/precision.h"

namespace encodec {

// Everything that defines an EnCodec architecture (the reference's constructor
// arguments). Widths can differ from the official ones (test or custom models).
struct EncodecConfig {
  std::string name;  // "encodec_24khz", "encodec_48khz": written into .ecdc headers
  int sample_rate_hz = 24000;
  int channels = 1;
  bool causal = true;
  std::string norm = "weight_norm";  // or "time_group_norm"
  bool normalize = false;            // per-chunk volume normalization (48 kHz)
  std::optional<double> segment_s;   // chunk length; nullopt = whole input at once
  double overlap = 0.01;             // chunk overlap, fraction of the chunk
  int n_filters = 32;
  int dimension = 128;
  std::vector<int> ratios = {8, 5, 4, 2};
  int n_residual_layers = 1;
  int lstm_layers = 2;
  int n_q = 32;
  int bins = 1024;
  std::vector<double> target_bandwidths = {1.5, 3.0, 6.0, 12.0, 24.0};

  static EncodecConfig official_24khz();
  static EncodecConfig official_48khz();
  // The official configuration for `name` with widths (n_filters, dimension,
  // n_q, bins, lstm_layers) read from a checkpoint's tensor shapes.
  static EncodecConfig infer_from_state_dict(const std::string& name, const StateDict& state);

  int hop_length() const;  // product of ratios: samples per frame
  int frame_rate() const;  // ceil(sample_rate / hop)
  int bits_per_codebook() const;
  std::optional<int64_t> segment_length() const;  // samples per chunk
  std::optional<int64_t> segment_stride() const;  // samples between chunk starts
  // Codebooks used at `bandwidth_kbps` (all of them when nullopt).
  int num_codebooks(std::optional<double> bandwidth_kbps) const;
};

// Which kernels run the convolutions and LSTMs.
enum class Kernels {
  // The reference's own operations (LibTorch, as the Python package calls
  // them): codes and .ecdc files bit-identical to the Python package run with
  // the same LibTorch, BLAS kernels and thread count.
  kReference,
  // Time-major activations, weights prepared once, every product on one kernel
  // with a fixed summation order (so the streaming engine equals it bit for
  // bit): about 3x faster; equal to the reference to float rounding, so a code
  // sitting on a near-tie can differ.
  kFast,
};

// Which kernels' weights a model loads. Each kind keeps its own copy (the fast
// kernels' repacked; about 76 MB each for the official 24 kHz model), so a
// program that runs only one kind loads only that one.
enum class KernelSet {
  kBoth,           // set_kernels() may switch at any time
  kReferenceOnly,  // set_kernels(Kernels::kFast) throws in fp32 (bf16 builds its own layers)
  // Runs Kernels::kFast (set from the start); set_kernels(Kernels::kReference)
  // throws. The fast copies are packed layer by layer while each reference
  // kernel is released, so the weights are never held twice, even while loading.
  kFastOnly,
};

// One chunk's codes [B, K, T] (int64) and, for normalizing models, its scale [B, 1].
struct EncodedFrame {
  torch::Tensor codes;
  std::optional<torch::Tensor> scale;
};

class EncodecModel {
 public:
  // The official pretrained models, resolved through the model store (the hub
  // cache, downloading on first use, or options.model_dir).
  static EncodecModel encodec_model_24khz(const ModelStoreOptions& options = {},
                                          KernelSet kernel_set = KernelSet::kBoth);
  static EncodecModel encodec_model_48khz(const ModelStoreOptions& options = {},
                                          KernelSet kernel_set = KernelSet::kBoth);
  // A model named `name` ("encodec_24khz" or "encodec_48khz") from a checkpoint
  // file of any width; no checksum. Throws CheckpointError naming the tensor at fault.
  static EncodecModel from_checkpoint(const std::string& path, const std::string& name,
                                      KernelSet kernel_set = KernelSet::kBoth);
  // Strict loading: every tensor of `config` must be present with its shape, and
  // no other. `source` names the weights in error messages.
  static EncodecModel from_state_dict(const EncodecConfig& config, const StateDict& state,
                                      const std::string& source = "state_dict",
                                      KernelSet kernel_set = KernelSet::kBoth);
  // The same from a state dict given up by the caller: each tensor is taken out
  // of it as the model is built, so that loading holds the weights once.
  static EncodecModel from_state_dict(const EncodecConfig& config, StateDict&& state,
                                      const std::string& source = "state_dict",
                                      KernelSet kernel_set = KernelSet::kBoth);

  // A model of `config`'s architecture with random weights, scaled so that
  // activations stay in a normal range (benchmarks: speed does not depend on values).
  static EncodecModel with_random_weights(const EncodecConfig& config, uint64_t seed = 0,
                                          KernelSet kernel_set = KernelSet::kBoth);
  // Name and shape of every tensor a checkpoint of `config` holds, in module order.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_shapes(
      const EncodecConfig& config);

  const EncodecConfig& config() const;
  const std::string& name() const { return config().name; }
  int sample_rate_hz() const { return config().sample_rate_hz; }
  int channels() const { return config().channels; }

  // Throws std::invalid_argument unless `bandwidth_kbps` is one of config().target_bandwidths.
  void set_target_bandwidth(double bandwidth_kbps);
  std::optional<double> bandwidth() const { return bandwidth_kbps_; }
  int num_codebooks() const { return config().num_codebooks(bandwidth_kbps_); }

  // Throws std::logic_error when the model cannot run `kernels` in its
  // precision: the reference kernels run in fp32 only and need the reference
  // weights (not KernelSet::kFastOnly); the fp32 fast kernels need the fast
  // copies (not KernelSet::kReferenceOnly).
  void set_kernels(Kernels kernels);
  Kernels kernels() const { return kernels_; }
  KernelSet kernel_set() const;

  // Precision::kBf16 (opt-in, see encodec/precision.h) runs the fast kernels in
  // bf16, and so also selects Kernels::kFast; kFp32 (the default) keeps the
  // kernels (on a KernelSet::kReferenceOnly model: back to kReference). The
  // bf16 layers are built from the reference weights on the first call for a
  // set of weights (once, shared by the copies of the model; fp32-only users
  // never pay for them), so a bf16-only program loads KernelSet::kReferenceOnly
  // (no fp32 fast copies). Throws std::runtime_error, saying why, where bf16 is
  // unavailable (bf16_unavailable_reason()), and std::logic_error on a
  // KernelSet::kFastOnly model (its reference weights are released).
  void set_precision(Precision precision);
  Precision precision() const { return precision_; }

  // wav: float32 [B, channels, T]. One frame per chunk (a single one without segments).
  std::vector<EncodedFrame> encode(const torch::Tensor& wav) const;
  // Overlap-adds chunks as the reference; the result can be longer than the input.
  torch::Tensor decode(const std::vector<EncodedFrame>& frames) const;

  // One chunk at a time (at most segment_length samples), for callers that stream chunks.
  EncodedFrame encode_chunk(const torch::Tensor& wav) const;
  torch::Tensor decode_chunk(const EncodedFrame& frame) const;

  // The layers, for the streaming engine and benchmarks.
  struct Weights;
  const Weights& weights() const { return *weights_; }

 private:
  explicit EncodecModel(std::shared_ptr<const Weights> weights);
  std::shared_ptr<const Weights> weights_;
  std::optional<double> bandwidth_kbps_;
  Kernels kernels_ = Kernels::kReference;
  Precision precision_ = Precision::kFp32;
};

// Cross-fades chunk outputs with triangular weights (the reference's _linear_overlap_add).
torch::Tensor linear_overlap_add(const std::vector<torch::Tensor>& frames, int64_t stride);

}  // namespace encodec
