// The .ecdc container against the reference's files: headers and raw bit-packed
// codes must parse to the reference values and re-serialize byte for byte.
#include "encodec/ecdc.h"

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "golden.h"

namespace encodec {
namespace {

using ::encodec::testing::golden_manifest;
using ::encodec::testing::golden_path;
using ::encodec::testing::load_npy;
using ::encodec::testing::read_file_bytes;

constexpr int kBitsPerCodebook = 10;  // log2(1024 bins)

// Magic, version and big-endian length in front of `metadata`, as Python's
// struct.pack('!4sBI', ...) lays them out.
std::string ecdc_with_metadata(const std::string& metadata, int version = 0) {
  const auto size = static_cast<uint32_t>(metadata.size());
  std::string bytes = "ECDC";
  bytes += static_cast<char>(version);
  for (int shift = 24; shift >= 0; shift -= 8) bytes += static_cast<char>(size >> shift);
  return bytes + metadata;
}

// The length of the header (fixed part plus metadata) at the start of `bytes`.
size_t header_size(const std::string& bytes) {
  uint32_t size = 0;
  for (int i = 5; i < 9; ++i) size = (size << 8) | static_cast<unsigned char>(bytes[i]);
  return 9 + size;
}

void expect_format_error(const std::string& bytes, const std::string& message_part) {
  std::istringstream in(bytes);
  try {
    read_ecdc_header(in);
    ADD_FAILURE() << "no EcdcFormatError for input expected to fail with '" << message_part
                  << "'";
  } catch (const EcdcFormatError& error) {
    EXPECT_NE(std::string(error.what()).find(message_part), std::string::npos)
        << "message '" << error.what() << "' lacks '" << message_part << "'";
  }
}

TEST(EcdcHeader, EveryGoldenHeaderParsesAndReserializesIdentically) {
  ENCODEC_REQUIRE_GOLDEN();
  int files_checked = 0;
  for (const auto& test_case : golden_manifest()["cases"]) {
    for (const char* key : {"ecdc", "lm_ecdc"}) {
      if (!test_case.contains(key)) continue;
      const std::string file = test_case[key];
      SCOPED_TRACE(file);
      const std::string bytes = read_file_bytes(golden_path(file));
      std::istringstream in(bytes);
      const EcdcHeader header = read_ecdc_header(in);
      EXPECT_EQ(header.model_name, test_case["model"].get<std::string>());
      EXPECT_EQ(header.audio_length, test_case["num_samples"].get<int64_t>());
      EXPECT_EQ(header.num_codebooks, test_case["num_codebooks"].get<int>());
      EXPECT_EQ(header.use_lm, std::string(key) == "lm_ecdc");
      EXPECT_EQ(static_cast<size_t>(in.tellg()), header_size(bytes));

      std::ostringstream out;
      write_ecdc_header(out, header);
      EXPECT_EQ(out.str(), bytes.substr(0, header_size(bytes)));
      ++files_checked;
    }
  }
  EXPECT_GE(files_checked, 40);
}

TEST(EcdcHeader, WritesPythonJsonDumpsForm) {
  std::ostringstream out;
  write_ecdc_header(out, {"encodec_24khz", 60000, 8, false});
  const std::string metadata = R"({"m": "encodec_24khz", "al": 60000, "nc": 8, "lm": false})";
  EXPECT_EQ(out.str(), std::string("ECDC\0\0\0\0\x39", 9) + metadata);
}

TEST(EcdcHeader, EscapesNamesAsPythonJsonDumps) {
  // json.dumps('a"b\\c\x01\x7f') == '"a\\"b\\\\c\\u0001\\u007f"'
  const EcdcHeader header{"a\"b\\c\x01\x7f", 5, 2, true};
  std::ostringstream out;
  write_ecdc_header(out, header);
  EXPECT_EQ(out.str().substr(9),
            R"({"m": "a\"b\\c\u0001\u007f", "al": 5, "nc": 2, "lm": true})");
  std::istringstream in(out.str());
  EXPECT_EQ(read_ecdc_header(in).model_name, header.model_name);

  std::ostringstream ignored;
  EXPECT_THROW(write_ecdc_header(ignored, {"mod\xc3\xa8le", 1, 1, false}),
               std::invalid_argument);
}

TEST(EcdcHeader, RejectsMalformedHeaders) {
  const std::string good = R"({"m": "encodec_24khz", "al": 60000, "nc": 8, "lm": false})";
  expect_format_error("", "truncated .ecdc header");
  expect_format_error(std::string("ECDC\0", 5), "truncated .ecdc header");
  expect_format_error("RIFF....WAVEfmt " + good, "bad magic");
  expect_format_error(std::string("\x89PNG\r\n\x1a\n\0\0\0\0", 12), "bad magic");
  expect_format_error(ecdc_with_metadata(good, 1), "unsupported .ecdc version 1");
  expect_format_error(ecdc_with_metadata(good, 255), "unsupported .ecdc version 255");
  expect_format_error(std::string("ECDC\0\x80\0\0\0", 9) + good, "implausible .ecdc metadata length");
  expect_format_error(ecdc_with_metadata(good).substr(0, 30), "truncated .ecdc metadata");
  expect_format_error(ecdc_with_metadata(R"({"m": "encodec_24khz", "al": 6)"), "not valid JSON");
  expect_format_error(ecdc_with_metadata("\xff\xfe garbage"), "not valid JSON");
  expect_format_error(ecdc_with_metadata("[1, 2]"), "must be a JSON object");
}

TEST(EcdcHeader, RejectsMissingOrMistypedFields) {
  const struct {
    const char* metadata;
    const char* message_part;
  } cases[] = {
      {R"({"al": 1, "nc": 8, "lm": false})", "lacks field 'm'"},
      {R"({"m": "x", "nc": 8, "lm": false})", "lacks field 'al'"},
      {R"({"m": "x", "al": 1, "lm": false})", "lacks field 'nc'"},
      {R"({"m": "x", "al": 1, "nc": 8})", "lacks field 'lm'"},
      {R"({"m": 24, "al": 1, "nc": 8, "lm": false})", "'m' must be a string"},
      {R"({"m": "x", "al": -1, "nc": 8, "lm": false})", "'al' must be a non-negative integer"},
      {R"({"m": "x", "al": 1.5, "nc": 8, "lm": false})", "'al' must be a non-negative integer"},
      {R"({"m": "x", "al": "60000", "nc": 8, "lm": false})", "'al' must be"},
      {R"({"m": "x", "al": 18446744073709551615, "nc": 8, "lm": false})", "'al' must be"},
      {R"({"m": "x", "al": 1, "nc": 0, "lm": false})", "'nc' must be an integer in 1..32"},
      {R"({"m": "x", "al": 1, "nc": 33, "lm": false})", "'nc' must be an integer in 1..32"},
      {R"({"m": "x", "al": 1, "nc": 8.0, "lm": false})", "'nc' must be"},
      {R"({"m": "x", "al": 1, "nc": 8, "lm": 0})", "'lm' must be true or false"},
      {R"({"m": "x", "al": 1, "nc": 8, "lm": "false"})", "'lm' must be true or false"},
  };
  for (const auto& test_case : cases) {
    SCOPED_TRACE(test_case.metadata);
    expect_format_error(ecdc_with_metadata(test_case.metadata), test_case.message_part);
  }
}

TEST(EcdcHeader, AcceptsBoundaryValues) {
  std::istringstream in(
      ecdc_with_metadata(R"({"m": "", "al": 0, "nc": 32, "lm": true, "extra": [1]})"));
  const EcdcHeader header = read_ecdc_header(in);
  EXPECT_EQ(header.model_name, "");
  EXPECT_EQ(header.audio_length, 0);
  EXPECT_EQ(header.num_codebooks, 32);
  EXPECT_TRUE(header.use_lm);
}

// The deterministic LM coder's mark: the last field, in json.dumps' form (so
// the Python package's json.loads reads the header), read back; no mark on
// other files (the golden test above: their bytes are unchanged).
TEST(EcdcHeader, MarksDeterministicLmFilesWithLmkLast) {
  EcdcHeader header{"encodec_24khz", 60000, 8, true};
  header.lm_coder = kLmCoderDeterministic;
  std::ostringstream out;
  write_ecdc_header(out, header);
  const std::string metadata = R"({"m": "encodec_24khz", "al": 60000, "nc": 8, "lm": true, "lmk": "det1"})";
  ASSERT_EQ(metadata.size(), 0x47u);
  EXPECT_EQ(out.str(), std::string("ECDC\0\0\0\0\x47", 9) + metadata);
  std::istringstream in(out.str());
  const EcdcHeader read = read_ecdc_header(in);
  EXPECT_EQ(read.lm_coder, "det1");
  EXPECT_TRUE(read.use_lm);
  EXPECT_EQ(read.num_codebooks, 8);
  // Key order does not matter to a JSON reader.
  std::istringstream reordered(ecdc_with_metadata(R"({"lmk": "det1", "lm": true, "m": "x", "al": 1, "nc": 2})"));
  EXPECT_EQ(read_ecdc_header(reordered).lm_coder, "det1");
}

TEST(EcdcHeader, RefusesUnknownOrMisplacedLmCoders) {
  const struct {
    const char* metadata;
    const char* message_part;
  } cases[] = {
      {R"({"m": "x", "al": 1, "nc": 8, "lm": true, "lmk": "det2"})", R"(unknown LM coder "lmk": "det2")"},
      {R"({"m": "x", "al": 1, "nc": 8, "lm": true, "lmk": ""})", R"(unknown LM coder "lmk": "")"},
      {R"({"m": "x", "al": 1, "nc": 8, "lm": true, "lmk": 1})", "'lmk' must be a string, got 1"},
      {R"({"m": "x", "al": 1, "nc": 8, "lm": false, "lmk": "det1"})", "the file is not LM-coded"},
  };
  for (const auto& test_case : cases) {
    SCOPED_TRACE(test_case.metadata);
    expect_format_error(ecdc_with_metadata(test_case.metadata), test_case.message_part);
  }
  EcdcHeader unknown{"encodec_24khz", 1, 8, true};
  unknown.lm_coder = "det2";
  std::ostringstream ignored;
  EXPECT_THROW(write_ecdc_header(ignored, unknown), std::invalid_argument);
  EcdcHeader raw{"encodec_24khz", 1, 8, false};
  raw.lm_coder = kLmCoderDeterministic;
  EXPECT_THROW(write_ecdc_header(ignored, raw), std::invalid_argument);
}

// The codes and chunk scales of a raw (non-LM) golden file, read with our unpacker.
struct RawStream {
  std::vector<std::vector<int64_t>> codes;  // [K][T], all chunks concatenated
  std::vector<float> scales;
};

RawStream read_raw_stream(std::istream& in, const EcdcHeader& header,
                          const std::vector<int64_t>& frames_per_chunk, bool has_scales) {
  RawStream stream;
  stream.codes.resize(header.num_codebooks);
  for (const int64_t frames : frames_per_chunk) {
    if (has_scales) stream.scales.push_back(read_be_float32(in));
    BitUnpacker unpacker(kBitsPerCodebook, in);
    for (int64_t t = 0; t < frames; ++t) {
      for (int k = 0; k < header.num_codebooks; ++k) {
        const auto code = unpacker.pull();
        if (!code) throw EcdcFormatError("stream ended early");
        stream.codes[k].push_back(*code);
      }
    }
  }
  return stream;
}

TEST(EcdcRawCodes, GoldenFilesUnpackToReferenceCodesAndRepackIdentically) {
  ENCODEC_REQUIRE_GOLDEN();
  int files_checked = 0;
  int files_with_scales = 0;
  for (const auto& test_case : golden_manifest()["cases"]) {
    const std::string file = test_case["ecdc"];
    SCOPED_TRACE(file);
    const std::string bytes = read_file_bytes(golden_path(file));
    const auto frames_per_chunk = test_case["frames_per_chunk"].get<std::vector<int64_t>>();
    const bool has_scales = test_case.contains("scales");

    std::istringstream in(bytes);
    const EcdcHeader header = read_ecdc_header(in);
    const RawStream stream = read_raw_stream(in, header, frames_per_chunk, has_scales);
    // Padding bits are fewer than one 10-bit value, so the file ends exactly here.
    EXPECT_EQ(in.peek(), std::char_traits<char>::eof());

    const torch::Tensor reference = load_npy(golden_path(test_case["codes"])).to(torch::kInt64);
    ASSERT_EQ(reference.size(0), header.num_codebooks);
    const auto reference_codes = reference.accessor<int64_t, 2>();
    for (int k = 0; k < header.num_codebooks; ++k) {
      ASSERT_EQ(static_cast<int64_t>(stream.codes[k].size()), reference.size(1));
      for (int64_t t = 0; t < reference.size(1); ++t) {
        ASSERT_EQ(stream.codes[k][t], reference_codes[k][t]) << "k=" << k << " t=" << t;
      }
    }
    if (has_scales) {
      const torch::Tensor scales = load_npy(golden_path(test_case["scales"]));
      ASSERT_EQ(static_cast<int64_t>(stream.scales.size()), scales.numel());
      for (size_t i = 0; i < stream.scales.size(); ++i) {
        EXPECT_EQ(stream.scales[i], scales[i].item<float>()) << "chunk " << i;
      }
      ++files_with_scales;
    }

    // Pack the reference codes back, chunk by chunk, as compress_to_file does.
    std::ostringstream out;
    write_ecdc_header(out, header);
    int64_t frame = 0;
    for (size_t chunk = 0; chunk < frames_per_chunk.size(); ++chunk) {
      if (has_scales) write_be_float32(out, stream.scales[chunk]);
      BitPacker packer(kBitsPerCodebook, out);
      for (int64_t t = 0; t < frames_per_chunk[chunk]; ++t, ++frame) {
        for (int k = 0; k < header.num_codebooks; ++k) {
          packer.push(static_cast<uint32_t>(reference_codes[k][frame]));
        }
      }
      packer.flush();
    }
    EXPECT_TRUE(out.str() == bytes) << "repacked file differs from the reference";
    ++files_checked;
  }
  EXPECT_EQ(files_checked, 32);
  EXPECT_GE(files_with_scales, 4);
}

TEST(BitPacking, MatchesHandComputedLayout) {
  // 1 | 1023 << 10 | 512 << 20 == 0x200ffc01, written LSB first.
  std::ostringstream out;
  BitPacker packer(10, out);
  for (const uint32_t value : {1u, 1023u, 512u}) packer.push(value);
  EXPECT_EQ(out.str(), std::string("\x01\xfc\x0f", 3));  // only complete bytes so far
  packer.flush();
  EXPECT_EQ(out.str(), std::string("\x01\xfc\x0f\x20", 4));
}

TEST(BitPacking, RandomValuesRoundTripForWidths1To16) {
  std::mt19937 random(1234);
  for (int bits = 1; bits <= 16; ++bits) {
    SCOPED_TRACE("bits=" + std::to_string(bits));
    const size_t count = std::uniform_int_distribution<size_t>(10, 2000)(random);
    std::uniform_int_distribution<uint32_t> value_of(0, (1u << bits) - 1);
    std::vector<uint32_t> values(count);
    for (auto& value : values) value = value_of(random);

    std::ostringstream out;
    BitPacker packer(bits, out);
    for (const uint32_t value : values) packer.push(value);
    packer.flush();
    const size_t total_bits = count * bits;
    ASSERT_EQ(out.str().size(), (total_bits + 7) / 8);

    std::istringstream in(out.str());
    BitUnpacker unpacker(bits, in);
    for (size_t i = 0; i < count; ++i) {
      const auto value = unpacker.pull();
      ASSERT_TRUE(value.has_value()) << "i=" << i;
      ASSERT_EQ(*value, values[i]) << "i=" << i;
    }
    // The zero padding of the last byte reads back as "ghost" zero values, as
    // in the reference, then the stream ends.
    const size_t ghosts = (out.str().size() * 8 - total_bits) / bits;
    for (size_t i = 0; i < ghosts; ++i) EXPECT_EQ(unpacker.pull(), std::optional<uint32_t>(0));
    EXPECT_EQ(unpacker.pull(), std::nullopt);
  }
}

TEST(BitPacking, RejectsBadWidthsAndOversizedValues) {
  std::ostringstream out;
  std::istringstream in;
  EXPECT_THROW(BitPacker(0, out), std::invalid_argument);
  EXPECT_THROW(BitPacker(33, out), std::invalid_argument);
  EXPECT_THROW(BitUnpacker(0, in), std::invalid_argument);
  BitPacker packer(10, out);
  EXPECT_THROW(packer.push(1024), std::invalid_argument);
  BitPacker wide(32, out);
  wide.push(0xffffffffu);
  wide.flush();
  EXPECT_EQ(out.str(), std::string(4, '\xff'));
}

TEST(BigEndianFloat, WritesAndReadsNetworkOrder) {
  std::ostringstream out;
  write_be_float32(out, 1.0f);
  write_be_float32(out, -2.5f);
  EXPECT_EQ(out.str(), std::string("\x3f\x80\x00\x00\xc0\x20\x00\x00", 8));
  std::istringstream in(out.str());
  EXPECT_EQ(read_be_float32(in), 1.0f);
  EXPECT_EQ(read_be_float32(in), -2.5f);
  try {
    std::istringstream short_input(std::string("\x3f\x80\x00", 3));
    read_be_float32(short_input);
    ADD_FAILURE() << "no EcdcFormatError on a 3-byte float";
  } catch (const EcdcFormatError& error) {
    EXPECT_NE(std::string(error.what()).find("truncated"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace encodec
