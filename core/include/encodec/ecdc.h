// The `.ecdc` container of the reference package, byte for byte.
//
// Layout: header struct `!4sBI` (magic "ECDC", version 0, big-endian uint32
// metadata length), JSON metadata {"m": model name, "al": audio length in
// samples, "nc": codebooks per frame, "lm": language-model coding}, then for each
// chunk an optional big-endian float32 scale (48 kHz model) followed by the codes.
// Raw codes are bit-packed LSB first, 10 bits per value, frame after frame, all
// codebooks of a frame in order; the packer is flushed at the end of each chunk.
//
// One extension, written only for files LM-coded with the deterministic coder
// (LmKernels::kDeterministic): a last metadata field "lmk": "det1" naming the
// coder. The Python package ignores keys it does not know, so it still reads
// the header, but its own LM cannot decode such a file (it would silently
// decode other codes); every other file has no "lmk" and is the reference's
// byte for byte.
//
// Thread safety: no shared state; each packer/unpacker belongs to one caller.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>

namespace encodec {

// A malformed, truncated or unsupported .ecdc stream. The message says what is wrong.
class EcdcFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct EcdcHeader {
  std::string model_name;     // "m": "encodec_24khz" or "encodec_48khz"
  int64_t audio_length = 0;   // "al": samples per channel of the original audio
  int num_codebooks = 0;      // "nc"
  bool use_lm = false;        // "lm"
  // "lmk": which LM coder made the bytes of an LM-coded file. Empty (no "lmk")
  // for the Python package's coder; kLmCoderDeterministic for LmKernels::kDeterministic.
  std::string lm_coder;
};

// The "lmk" value of files coded with LmKernels::kDeterministic.
inline constexpr const char* kLmCoderDeterministic = "det1";

// Writes magic, version and the JSON metadata exactly as Python's
// `json.dumps({"m": ..., "al": ..., "nc": ..., "lm": ...})` does (with ", \"lmk\": ..."
// last when header.lm_coder is set). Throws std::invalid_argument for an lm_coder
// other than kLmCoderDeterministic, or one on a file that is not LM-coded.
void write_ecdc_header(std::ostream& out, const EcdcHeader& header);

// Reads and validates the header. Throws EcdcFormatError on a bad magic, an
// unknown version, truncated or non-JSON metadata, missing/mistyped fields, or an
// "lmk" this reader does not know (the message names it) or on a file without "lm".
EcdcHeader read_ecdc_header(std::istream& in);

// Packs `bits`-wide unsigned values LSB first, writing each completed byte.
class BitPacker {
 public:
  BitPacker(int bits, std::ostream& out);
  void push(uint32_t value);
  // Writes the final partial byte, if any. Call at the end of every chunk.
  void flush();

 private:
  int bits_;
  std::ostream& out_;
  uint64_t current_value_ = 0;
  int current_bits_ = 0;
};

// The inverse of BitPacker. `pull` returns nullopt at the end of the stream.
class BitUnpacker {
 public:
  BitUnpacker(int bits, std::istream& in);
  std::optional<uint32_t> pull();

 private:
  int bits_;
  std::istream& in_;
  uint32_t mask_;
  uint64_t current_value_ = 0;
  int current_bits_ = 0;
};

// Reads a big-endian float32 (the per-chunk scale). Throws EcdcFormatError if
// the stream ends first.
float read_be_float32(std::istream& in);
void write_be_float32(std::ostream& out, float value);

}  // namespace encodec
