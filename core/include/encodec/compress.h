// Audio <-> .ecdc bytes, byte-compatible with the reference's encodec.compress.
//
// Usage:
//   std::string bytes = encodec::compress(model, wav);            // wav [C, T] at model rate
//   encodec::DecompressedAudio audio = encodec::decompress(bytes, encodec::ModelResolver(...));
//
// Thread safety: the functions keep no state; see EncodecModel for sharing a model.
#pragma once

#include <functional>
#include <istream>
#include <ostream>
#include <string>

#include <torch/torch.h>

#include "encodec/ecdc.h"
#include "encodec/encodec.h"

namespace encodec {

// Writes the .ecdc stream of `wav` ([channels, T] at the model's sample rate)
// encoded at the model's current bandwidth. LM coding (use_lm) is not available
// yet: it throws std::invalid_argument.
void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        bool use_lm = false);
std::string compress(const EncodecModel& model, const torch::Tensor& wav, bool use_lm = false);

struct DecompressedAudio {
  torch::Tensor samples;  // float32 [channels, audio_length]
  int sample_rate_hz = 0;
  EcdcHeader header;
};

// Gives the model named in a file's header ("encodec_24khz", "encodec_48khz").
using ModelProvider = std::function<EncodecModel(const std::string& model_name)>;

// Reads a whole .ecdc stream and decodes it. Throws EcdcFormatError for a
// malformed, truncated or LM-coded stream (the message says which) and whatever
// `models` throws for an unknown model.
DecompressedAudio decompress_from_stream(std::istream& in, const ModelProvider& models);
DecompressedAudio decompress(const std::string& bytes, const ModelProvider& models);

// Reads the chunks that follow `header` (already read from `in`): codes
// [1, K, T] and, when the model normalizes, scale [1, 1]. Throws EcdcFormatError.
std::vector<EncodedFrame> read_ecdc_frames(std::istream& in, const EcdcHeader& header,
                                           const EncodecConfig& config);
// Writes header and frames (raw bit-packed codes).
void write_ecdc(std::ostream& out, const EcdcHeader& header, const std::vector<EncodedFrame>& frames,
                int bits_per_codebook);

}  // namespace encodec
