// Audio <-> .ecdc bytes, byte-compatible with the reference's encodec.compress.
//
// Usage:
//   model.set_target_bandwidth(6.0);
//   std::string bytes = encodec::compress(model, wav);            // wav [C, T] at model rate
//   encodec::DecompressedAudio audio = encodec::decompress(
//       bytes, [&](const std::string& name) { return load_model(name); });
//
// Thread safety: the functions keep no state; see EncodecModel for sharing a model.
#pragma once

#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "encodec/ecdc.h"
#include "encodec/encodec.h"

namespace encodec {

// The model names a .ecdc header may carry (the reference's MODELS).
inline constexpr const char* kModelName24kHz = "encodec_24khz";
inline constexpr const char* kModelName48kHz = "encodec_48khz";
bool is_known_model_name(const std::string& model_name);

// Writes the .ecdc stream of `wav` ([model.channels(), T] at the model's sample
// rate, T > 0) encoded at the model's current bandwidth (all codebooks when none
// is set). Throws std::invalid_argument for audio of the wrong shape, a model
// whose name no .ecdc reader knows, or use_lm (LM coding is not available yet).
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

// Reads a whole .ecdc stream and decodes it to the first "al" samples of the
// model's output, as the reference's decompress. Throws EcdcFormatError for a
// malformed, truncated or LM-coded stream or an unknown model name (checked
// before `models` is asked, so no model is loaded for a file that cannot be
// decoded), std::invalid_argument when `models` returns a model of another name,
// and whatever `models` throws.
DecompressedAudio decompress_from_stream(std::istream& in, const ModelProvider& models);
DecompressedAudio decompress(const std::string& bytes, const ModelProvider& models);

// Reads the chunks that follow `header` (already read from `in`): codes
// [1, K, T] int64 and, when the model normalizes, scale [1, 1]. Memory grows
// with the bytes actually present, never with the header's claimed length.
// Throws EcdcFormatError.
std::vector<EncodedFrame> read_ecdc_frames(std::istream& in, const EcdcHeader& header,
                                           const EncodecConfig& config);
// Writes header and frames (raw bit-packed codes).
void write_ecdc(std::ostream& out, const EcdcHeader& header, const std::vector<EncodedFrame>& frames,
                int bits_per_codebook);

}  // namespace encodec
