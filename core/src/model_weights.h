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
};

SEANetConfig seanet_config(const EncodecConfig& config);

}  // namespace encodec
