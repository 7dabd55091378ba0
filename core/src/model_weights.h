// The layers of an EnCodec model, shared read-only by every copy of the model
// (and later by the streaming engine).
#pragma once

#include "encodec/encodec.h"
#include "modules/seanet.h"
#include "quantization/vq.h"

namespace encodec {

struct EncodecModel::Weights {
  EncodecConfig config;
  SEANetEncoder encoder;
  ResidualVectorQuantizer quantizer;
  SEANetDecoder decoder;
};

SEANetConfig seanet_config(const EncodecConfig& config);

}  // namespace encodec
