// LM entropy coding against the reference's LM-coded files (`cases/*_lm.ecdc`,
// made by the Python package with the golden LM checkpoints): compressing the
// golden inputs gives the same bytes, the LM coding of the golden codes gives
// the same bytes chunk by chunk, and decompressing the reference files gives the
// reference codes and audio. Both kernel sets (the reference's LibTorch
// operations and the exact fast kernels) are checked.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <sstream>

#include "encodec/audio_io.h"
#include "encodec/compress.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

using testing::GoldenCase;

struct LmCase {
  GoldenCase golden;
  LmKernels kernels;
};

void PrintTo(const LmCase& c, std::ostream* out) {
  *out << c.golden.label << (c.kernels == LmKernels::kFast ? "_fast" : "_reference");
}

std::vector<LmCase> lm_cases() {
  std::vector<LmCase> cases;
  for (const GoldenCase& golden : testing::golden_lm_cases()) {
    cases.push_back({golden, LmKernels::kFast});
    cases.push_back({golden, LmKernels::kReference});
  }
  return cases;
}

class LmGoldenTest : public ::testing::TestWithParam<LmCase> {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    ENCODEC_REQUIRE_REFERENCE_KERNELS();
    if (GetParam().kernels == LmKernels::kFast) {
      const LmModel lm = testing::golden_lm(GetParam().golden.model);
      if (lm.kernels() != LmKernels::kFast) {
        GTEST_SKIP() << "exact fast kernels unavailable here: "
                     << lm.fast_kernels_unavailable_reason();
      }
    }
  }
  LmModel lm() const { return testing::golden_lm(GetParam().golden.model, GetParam().kernels); }
};

TEST_P(LmGoldenTest, CompressWithTheLmIsByteIdenticalToTheReferenceFile) {
  const GoldenCase& golden = GetParam().golden;
  EncodecModel model = testing::golden_model(golden.model);
  model.set_target_bandwidth(golden.bandwidth_kbps);
  const Audio input = read_audio(testing::golden_path(golden.input));
  const std::string compressed = compress(model, input.samples, lm());
  const std::string expected = testing::read_file_bytes(testing::golden_path(golden.lm_ecdc));
  EXPECT_TRUE(compressed == expected)
      << golden.lm_ecdc << ": " << testing::describe_byte_difference(compressed, expected);
}

TEST_P(LmGoldenTest, LmCodingOfTheGoldenCodesGivesTheReferenceChunks) {
  // Independent of the codec: the golden codes, chunk by chunk, through the LM
  // coder, against the bytes that follow the header (and each chunk's scale).
  const GoldenCase& golden = GetParam().golden;
  const std::string file = testing::read_file_bytes(testing::golden_path(golden.lm_ecdc));
  std::istringstream in(file);
  const EcdcHeader header = read_ecdc_header(in);
  EXPECT_TRUE(header.use_lm);
  size_t offset = static_cast<size_t>(in.tellg());
  const bool scaled = golden.model == "encodec_48khz";
  const LmModel model = lm();
  for (size_t chunk = 0; chunk < golden.frames_per_chunk.size(); ++chunk) {
    if (scaled) offset += 4;
    const std::string bytes = lm_encode_chunk(model, testing::golden_chunk_codes(golden, chunk));
    ASSERT_LE(offset + bytes.size(), file.size()) << "chunk " << chunk;
    EXPECT_TRUE(file.compare(offset, bytes.size(), bytes) == 0)
        << golden.lm_ecdc << " chunk " << chunk << ": "
        << testing::describe_byte_difference(bytes, file.substr(offset, bytes.size()));
    offset += bytes.size();
  }
  EXPECT_EQ(offset, file.size()) << "the chunks do not end where the file does";
}

TEST_P(LmGoldenTest, DecompressOfTheReferenceFileGivesTheReferenceCodesAndAudio) {
  const GoldenCase& golden = GetParam().golden;
  const std::string bytes = testing::read_file_bytes(testing::golden_path(golden.lm_ecdc));
  // The codes, exactly.
  {
    std::istringstream in(bytes);
    const EcdcHeader header = read_ecdc_header(in);
    const LmModel model = lm();
    const std::vector<EncodedFrame> frames =
        read_ecdc_frames(in, header, testing::golden_model(golden.model).config(), &model);
    EXPECT_EQ(in.peek(), std::char_traits<char>::eof()) << "bytes left after the last chunk";
    const torch::Tensor expected =
        testing::load_npy(testing::golden_path(golden.codes)).to(torch::kInt64);
    EXPECT_TRUE(testing::concatenated_codes(frames).equal(expected));
  }
  // The audio, through decompress.
  std::vector<std::string> lm_requests;
  const DecompressedAudio audio = decompress(
      bytes, [](const std::string& name) { return testing::golden_model(name); },
      [&](const std::string& name) {
        lm_requests.push_back(name);
        return testing::golden_lm(name, GetParam().kernels);
      });
  EXPECT_EQ(lm_requests, std::vector<std::string>{golden.model});
  EXPECT_TRUE(audio.header.use_lm);
  EXPECT_EQ(audio.header.num_codebooks, golden.num_codebooks);
  const torch::Tensor expected =
      testing::load_npy(testing::golden_path(golden.decoded)).narrow(1, 0, golden.num_samples);
  ASSERT_EQ(audio.samples.sizes(), expected.sizes());
  const torch::Tensor error = audio.samples - expected;
  const double max_error = error.abs().max().item<double>();
  const double signal = expected.pow(2).sum().item<double>();
  const double noise = error.pow(2).sum().item<double>();
  const double snr_db = noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
  EXPECT_TRUE(max_error <= 1e-4 || snr_db >= 60)
      << "max abs error " << max_error << ", SNR " << snr_db << " dB";
}

INSTANTIATE_TEST_SUITE_P(Reference, LmGoldenTest, ::testing::ValuesIn(lm_cases()),
                         [](const auto& info) {
                           return info.param.golden.label +
                                  (info.param.kernels == LmKernels::kFast ? "_fast" : "_reference");
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LmGoldenTest);

}  // namespace
}  // namespace encodec
