// Audio <-> .ecdc bytes, byte-compatible with the reference's encodec.compress.
//
// Usage:
//   model.set_target_bandwidth(6.0);
//   std::string bytes = encodec::compress(model, wav);            // wav [C, T] at model rate
//   std::string smaller = encodec::compress(model, wav, lm);      // LM entropy coding
//   encodec::DecompressedAudio audio = encodec::decompress(
//       bytes, [&](const std::string& name) { return load_model(name); },
//       [&](const std::string& name) { return lm; });             // only asked for "lm": true
//
// Thread safety: the functions keep no state; see EncodecModel for sharing a model.
#pragma once

#include <functional>
#include <istream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "encodec/ecdc.h"
#include "encodec/encodec.h"
#include "encodec/lm.h"

namespace encodec {

// The model names a .ecdc header may carry (the reference's MODELS).
inline constexpr const char* kModelName24kHz = "encodec_24khz";
inline constexpr const char* kModelName48kHz = "encodec_48khz";
// This project's demo model (demo_model.h): the 24 kHz layout under its own
// name, so that its files are never decoded by the official model (or the
// Python package) as noise, nor official files by it.
inline constexpr const char* kModelNameDemo24kHz = "encodec_demo_24khz";
bool is_known_model_name(const std::string& model_name);
// "encodec_24khz, encodec_48khz, encodec_demo_24khz", for error messages.
std::string known_model_names();
// encodec_24khz or the demo model: the causal 24 kHz mono layout.
bool is_24khz_model_name(const std::string& model_name);

// An LM codes files of `codec` with `num_codebooks` codebooks if it predicts at
// least that many codebooks of the codec's size. Returns "" or what is wrong.
std::string lm_fit_problem(const LmModel& lm, const EncodecConfig& codec, int num_codebooks);

// The LM coder an .ecdc file's header names ("lmk"): `lm` on the deterministic
// kernels for "lmk": "det1", otherwise `lm` on the Python package's (its own
// kernels, or kAuto when it runs the deterministic ones). The header decides
// both ways: EcdcStreamWriter and read_ecdc_chunks code with this.
LmModel lm_coder_for(const LmModel& lm, const EcdcHeader& header);
// The "lmk" value for files coded with `lm`'s kernels ("" or kLmCoderDeterministic).
std::string lm_coder_mark(const LmModel& lm);

// Writes the .ecdc stream of `wav` ([model.channels(), T] at the model's sample
// rate, T > 0) encoded at the model's current bandwidth (all codebooks when none
// is set). Throws std::invalid_argument for audio of the wrong shape or a model
// whose name no .ecdc reader knows. With use_lm, the codes are entropy-coded with
// the official LM of the model (LmModel::official, the default model store), as
// the reference's compress(..., use_lm=True) does.
void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        bool use_lm = false);
std::string compress(const EncodecModel& model, const torch::Tensor& wav, bool use_lm = false);
// LM entropy coding ("lm": true) with `lm`, which must predict at least the
// codebooks used and have the codec's codebook size (else std::invalid_argument).
// An LM on LmKernels::kDeterministic writes a file marked "lmk": "det1".
void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        const LmModel& lm);
std::string compress(const EncodecModel& model, const torch::Tensor& wav, const LmModel& lm);

struct DecompressedAudio {
  torch::Tensor samples;  // float32 [channels, audio_length]
  int sample_rate_hz = 0;
  EcdcHeader header;
};

// Gives the model named in a file's header ("encodec_24khz", "encodec_48khz").
using ModelProvider = std::function<EncodecModel(const std::string& model_name)>;
// Gives the LM of the model named in an LM-coded file's header.
using LmProvider = std::function<LmModel(const std::string& model_name)>;

// Reads a whole .ecdc stream and decodes it to the first "al" samples of the
// model's output, as the reference's decompress. An LM-coded file ("lm": true)
// asks `lms` for the LM (when `lms` is empty: LmModel::official with the default
// model store, as the reference). Throws EcdcFormatError for a malformed,
// truncated or corrupt stream or an unknown model name (checked before `models`
// is asked, so no model is loaded for a file that cannot be decoded),
// std::invalid_argument when `models` returns a model of another name or `lms`
// an LM that does not fit, and whatever the providers throw.
DecompressedAudio decompress_from_stream(std::istream& in, const ModelProvider& models,
                                         const LmProvider& lms = {});
DecompressedAudio decompress(const std::string& bytes, const ModelProvider& models,
                             const LmProvider& lms = {});

// Receives the codes of a .ecdc stream chunk by chunk and, within a chunk, in
// runs of time steps (a streaming encoder pushes one step at a time).
class CodesSink {
 public:
  virtual ~CodesSink() = default;
  // A chunk starts; `scale` is its volume scale for normalizing models (48 kHz).
  virtual void begin_chunk(std::optional<float> scale) = 0;
  // More time steps of the current chunk: codes [K, T] (int64, T >= 0).
  virtual void push_codes(const torch::Tensor& codes) = 0;
  virtual void end_chunk() = 0;
};

// Writes a .ecdc stream as its codes arrive: the header at construction, then
// each chunk's scale and raw bit-packed or (header.use_lm) LM-coded codes. The
// bytes equal write_ecdc's for the same chunks. Throws std::invalid_argument for
// codes that do not fit the header (check the LM with lm_fit_problem first).
class EcdcStreamWriter : public CodesSink {
 public:
  EcdcStreamWriter(std::ostream& out, const EcdcHeader& header, int bits_per_codebook,
                   const LmModel* lm = nullptr);
  ~EcdcStreamWriter() override;
  void begin_chunk(std::optional<float> scale) override;
  void push_codes(const torch::Tensor& codes) override;
  void end_chunk() override;

 private:
  std::ostream& out_;
  EcdcHeader header_;
  int bits_per_codebook_;
  std::optional<LmModel> lm_;  // lm_coder_for(the LM given, header)
  std::optional<BitPacker> packer_;
  std::optional<LmStreamEncoder> lm_encoder_;
};

// Reads the chunks that follow `header` (already read from `in`) and hands
// their codes to `sink` as they are read, in pieces of at most 20 s, so memory
// does not grow with the file (a 24 kHz file is a single chunk). Checks and
// errors as read_ecdc_frames; on a truncated or corrupt file the sink has
// already received the codes before the fault.
void read_ecdc_chunks(std::istream& in, const EcdcHeader& header, const EncodecConfig& config,
                      const LmModel* lm, CodesSink& sink);

// Reads the chunks that follow `header` (already read from `in`): codes
// [1, K, T] int64 and, when the model normalizes, scale [1, 1]. Memory grows
// with the bytes actually present (LM-coded: with the frames decoded), never
// with the header's claimed length. `lm` is required when header.use_lm.
// Throws EcdcFormatError.
std::vector<EncodedFrame> read_ecdc_frames(std::istream& in, const EcdcHeader& header,
                                           const EncodecConfig& config,
                                           const LmModel* lm = nullptr);
// Writes header and frames: raw bit-packed codes, or LM-coded with `lm` when
// header.use_lm (then `lm` is required).
void write_ecdc(std::ostream& out, const EcdcHeader& header, const std::vector<EncodedFrame>& frames,
                int bits_per_codebook, const LmModel* lm = nullptr);

}  // namespace encodec
