// The layers of an EnCodec model, shared read-only by every copy of the model
// (and later by the streaming engine).
#pragma once

#include <memory>

#include "encodec/encodec.h"
#include "fast/fast_quantizer.h"
#include "fast/fast_seanet.h"
#include "modules/seanet.h"
#include "quantization/vq.h"

namespace encodec {

// The fast path's layers in one precision.
struct FastLayers {
  const fast::SEANet& encoder;
  const fast::SEANet& decoder;
  const fast::Quantizer& quantizer;
};

// The fast layers in bf16, built from the reference layers on first use, once
// (thread-safe: copies of a model may ask concurrently), so that a model never
// run in bf16 holds no bf16 copy. Movable only until first used.
class LazyBf16Layers {
 public:
  LazyBf16Layers();
  ~LazyBf16Layers();
  LazyBf16Layers(LazyBf16Layers&&) noexcept;
  FastLayers get(const EncodecModel::Weights& weights) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct EncodecModel::Weights {
  EncodecConfig config;
  KernelSet kernel_set;
  // With KernelSet::kFastOnly the layers keep their metadata and biases but not
  // their kernels (released once packed into the fast copies).
  SEANetEncoder encoder;
  ResidualVectorQuantizer quantizer;
  SEANetDecoder decoder;
  // The same layers on the fast kernels (null with KernelSet::kReferenceOnly);
  // they refer to the layers above.
  std::unique_ptr<fast::SEANet> fast_encoder;
  std::unique_ptr<fast::SEANet> fast_decoder;
  std::unique_ptr<fast::Quantizer> fast_quantizer;
  LazyBf16Layers bf16_layers;
};

// The fast layers `model` runs in its precision (bf16: built on first use).
FastLayers fast_layers(const EncodecModel& model);

SEANetConfig seanet_config(const EncodecConfig& config);

}  // namespace encodec
