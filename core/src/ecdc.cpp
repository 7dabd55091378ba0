#include "encodec/ecdc.h"

#include <array>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace encodec {
namespace {

constexpr char kMagic[4] = {'E', 'C', 'D', 'C'};
constexpr int kVersion = 0;
constexpr size_t kFixedHeaderBytes = 9;  // struct '!4sBI'
// Real metadata is about 60 bytes; the cap keeps a corrupt length from making
// us allocate gigabytes before noticing the file is bad.
constexpr uint32_t kMaxMetadataBytes = 1u << 20;
constexpr int kMaxCodebooks = 32;

// A JSON string literal as Python's json.dumps writes it (ensure_ascii=True).
// Only ASCII is supported: model names are identifiers, and reproducing
// Python's \uXXXX escaping of arbitrary UTF-8 is not worth the code.
std::string python_json_string(const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (byte >= 0x80) {
          throw std::invalid_argument("ecdc model name must be ASCII: " + text);
        } else if (byte < 0x20 || byte == 0x7f) {  // outside Python's ' '..'~'
          out += "\\u00";
          out += kHex[byte >> 4];
          out += kHex[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

// Reads exactly `size` bytes, or throws naming `what` and how much was there.
std::string read_exactly(std::istream& in, size_t size, const std::string& what) {
  std::string buffer(size, '\0');
  in.read(buffer.data(), static_cast<std::streamsize>(size));
  const auto got = static_cast<size_t>(in.gcount());
  if (got != size) {
    throw EcdcFormatError("truncated .ecdc " + what + ": expected " + std::to_string(size) +
                          " bytes, got " + std::to_string(got));
  }
  return buffer;
}

const nlohmann::json& require_field(const nlohmann::json& metadata, const char* key,
                                    const char* meaning) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) {
    throw EcdcFormatError(std::string(".ecdc metadata lacks field '") + key + "' (" + meaning +
                          ")");
  }
  return *it;
}

[[noreturn]] void throw_bad_field(const char* key, const std::string& expected,
                                  const nlohmann::json& value) {
  throw EcdcFormatError(std::string(".ecdc metadata field '") + key + "' must be " + expected +
                        ", got " + value.dump());
}

// The integer value of `value` if it is a JSON integer within [min, max].
int64_t integer_field(const nlohmann::json& value, const char* key, int64_t min, int64_t max,
                      const std::string& expected) {
  if (!value.is_number_integer()) throw_bad_field(key, expected, value);
  if (value.is_number_unsigned() &&
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw_bad_field(key, expected, value);
  }
  const auto number = value.get<int64_t>();
  if (number < min || number > max) throw_bad_field(key, expected, value);
  return number;
}

// Up to 32 bits plus 7 (packer) or 8 (unpacker) pending bits fit the 64-bit accumulator.
int checked_width(int bits, const char* who) {
  if (bits < 1 || bits > 32) {
    throw std::invalid_argument(std::string(who) + " width must be 1..32, got " +
                                std::to_string(bits));
  }
  return bits;
}

// "" when "lmk": lm_coder names a coder this code has, on an LM-coded file; else what is wrong.
std::string lm_coder_problem(const std::string& lm_coder, bool use_lm) {
  const std::string quoted = nlohmann::json(lm_coder).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (lm_coder != kLmCoderDeterministic) {
    return "unknown LM coder \"lmk\": " + quoted + " (this reader knows \"" + kLmCoderDeterministic +
           "\", the deterministic coder; files without \"lmk\" use the Python package's)";
  }
  if (!use_lm) return "\"lmk\": " + quoted + " names an LM coder but the file is not LM-coded (\"lm\": false)";
  return "";
}

}  // namespace

void write_ecdc_header(std::ostream& out, const EcdcHeader& header) {
  if (!header.lm_coder.empty()) {
    const std::string problem = lm_coder_problem(header.lm_coder, header.use_lm);
    if (!problem.empty()) throw std::invalid_argument("write_ecdc_header: " + problem);
  }
  // json.dumps' default separators are ", " and ": "; the key order is the
  // reference's dict order. Both are part of the byte-exact format.
  std::string metadata = "{\"m\": " + python_json_string(header.model_name) +
                         ", \"al\": " + std::to_string(header.audio_length) +
                         ", \"nc\": " + std::to_string(header.num_codebooks) +
                         ", \"lm\": " + (header.use_lm ? "true" : "false");
  if (!header.lm_coder.empty()) metadata += ", \"lmk\": " + python_json_string(header.lm_coder);
  metadata += "}";
  const auto size = static_cast<uint32_t>(metadata.size());
  const std::array<char, kFixedHeaderBytes> fixed = {
      kMagic[0], kMagic[1], kMagic[2], kMagic[3], static_cast<char>(kVersion),
      static_cast<char>(size >> 24), static_cast<char>(size >> 16),
      static_cast<char>(size >> 8), static_cast<char>(size)};
  out.write(fixed.data(), fixed.size());
  out.write(metadata.data(), static_cast<std::streamsize>(metadata.size()));
}

EcdcHeader read_ecdc_header(std::istream& in) {
  const std::string fixed = read_exactly(in, kFixedHeaderBytes, "header");
  if (std::memcmp(fixed.data(), kMagic, sizeof(kMagic)) != 0) {
    throw EcdcFormatError("not an .ecdc file (bad magic)");
  }
  const int version = static_cast<unsigned char>(fixed[4]);
  if (version != kVersion) {
    throw EcdcFormatError("unsupported .ecdc version " + std::to_string(version));
  }
  uint32_t metadata_size = 0;
  for (int i = 5; i < 9; ++i) {
    metadata_size = (metadata_size << 8) | static_cast<unsigned char>(fixed[i]);
  }
  if (metadata_size > kMaxMetadataBytes) {
    throw EcdcFormatError("implausible .ecdc metadata length " + std::to_string(metadata_size) +
                          " bytes (limit " + std::to_string(kMaxMetadataBytes) + ")");
  }
  const std::string metadata_text = read_exactly(in, metadata_size, "metadata");

  nlohmann::json metadata;
  try {
    metadata = nlohmann::json::parse(metadata_text);
  } catch (const nlohmann::json::parse_error& error) {
    throw EcdcFormatError(std::string(".ecdc metadata is not valid JSON: ") + error.what());
  }
  if (!metadata.is_object()) {
    throw EcdcFormatError(".ecdc metadata must be a JSON object, got " + metadata.dump());
  }

  EcdcHeader header;
  const auto& name = require_field(metadata, "m", "model name");
  if (!name.is_string()) throw_bad_field("m", "a string", name);
  header.model_name = name.get<std::string>();
  header.audio_length =
      integer_field(require_field(metadata, "al", "audio length"), "al", 0,
                    std::numeric_limits<int64_t>::max(), "a non-negative integer");
  header.num_codebooks = static_cast<int>(
      integer_field(require_field(metadata, "nc", "number of codebooks"), "nc", 1,
                    kMaxCodebooks, "an integer in 1.." + std::to_string(kMaxCodebooks)));
  const auto& use_lm = require_field(metadata, "lm", "language-model coding");
  if (!use_lm.is_boolean()) throw_bad_field("lm", "true or false", use_lm);
  header.use_lm = use_lm.get<bool>();
  const auto lm_coder = metadata.find("lmk");
  if (lm_coder != metadata.end()) {
    if (!lm_coder->is_string()) throw_bad_field("lmk", "a string", *lm_coder);
    header.lm_coder = lm_coder->get<std::string>();
    const std::string problem = lm_coder_problem(header.lm_coder, header.use_lm);
    if (!problem.empty()) throw EcdcFormatError(".ecdc metadata: " + problem);
  }
  return header;
}

BitPacker::BitPacker(int bits, std::ostream& out)
    : bits_(checked_width(bits, "BitPacker")), out_(out) {}

void BitPacker::push(uint32_t value) {
  // Python would silently corrupt neighbouring values; a wide value is a bug here.
  if (bits_ < 32 && (value >> bits_) != 0) {
    throw std::invalid_argument("value " + std::to_string(value) + " does not fit in " +
                                std::to_string(bits_) + " bits");
  }
  current_value_ += static_cast<uint64_t>(value) << current_bits_;
  current_bits_ += bits_;
  while (current_bits_ >= 8) {
    out_.put(static_cast<char>(current_value_ & 0xff));
    current_value_ >>= 8;
    current_bits_ -= 8;
  }
}

void BitPacker::flush() {
  if (current_bits_ > 0) {
    out_.put(static_cast<char>(current_value_));
    current_value_ = 0;
    current_bits_ = 0;
  }
  out_.flush();
}

BitUnpacker::BitUnpacker(int bits, std::istream& in)
    : bits_(checked_width(bits, "BitUnpacker")),
      in_(in),
      mask_(static_cast<uint32_t>((uint64_t{1} << bits_) - 1)) {}

std::optional<uint32_t> BitUnpacker::pull() {
  while (current_bits_ < bits_) {
    const int byte = in_.get();
    if (byte == std::char_traits<char>::eof()) return std::nullopt;
    current_value_ += static_cast<uint64_t>(byte) << current_bits_;
    current_bits_ += 8;
  }
  const auto value = static_cast<uint32_t>(current_value_ & mask_);
  current_value_ >>= bits_;
  current_bits_ -= bits_;
  return value;
}

float read_be_float32(std::istream& in) {
  const std::string bytes = read_exactly(in, 4, "chunk scale");
  uint32_t bits = 0;
  for (const char byte : bytes) bits = (bits << 8) | static_cast<unsigned char>(byte);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

void write_be_float32(std::ostream& out, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const char bytes[4] = {static_cast<char>(bits >> 24), static_cast<char>(bits >> 16),
                         static_cast<char>(bits >> 8), static_cast<char>(bits)};
  out.write(bytes, sizeof(bytes));
}

}  // namespace encodec
