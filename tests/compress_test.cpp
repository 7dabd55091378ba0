// compress / decompress against the reference's .ecdc files: byte-identical
// compression of every golden input at every bandwidth, decompression of the
// reference files to the reference audio, and clear errors (never a crash) for
// truncated, corrupt and unknown-model files. (LM-coded files: lm_golden_test.)
#include "encodec/compress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>

#include "encodec/audio_io.h"
#include "encodec/ecdc.h"
#include "golden_cases.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

using testing::GoldenCase;


// A provider that hands out the golden models and records the requests.
struct GoldenModels {
  std::vector<std::string> requested;
  ModelProvider provider() {
    return [this](const std::string& name) {
      requested.push_back(name);
      return testing::golden_model(name);
    };
  }
};

DecompressedAudio decompress_with_golden_models(const std::string& bytes) {
  GoldenModels models;
  return decompress(bytes, models.provider());
}

// The size of the header (fixed part plus JSON metadata) at the start of `bytes`.
size_t ecdc_header_size(const std::string& bytes) {
  uint32_t size = 0;
  for (int i = 5; i < 9; ++i) size = (size << 8) | static_cast<unsigned char>(bytes.at(i));
  return 9 + size;
}

std::string header_bytes(const EcdcHeader& header) {
  std::ostringstream out;
  write_ecdc_header(out, header);
  return out.str();
}

// Decompresses `bytes` expecting an EcdcFormatError whose message contains
// every one of `message_parts`.
void expect_decompress_format_error(const std::string& bytes,
                                    const std::vector<std::string>& message_parts,
                                    const std::string& context) {
  try {
    decompress_with_golden_models(bytes);
    ADD_FAILURE() << context << ": no EcdcFormatError";
  } catch (const EcdcFormatError& error) {
    for (const std::string& part : message_parts) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos)
          << context << ": message '" << error.what() << "' lacks '" << part << "'";
    }
  }
}

class GoldenCompressTest : public ::testing::TestWithParam<GoldenCase> {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
};

TEST_P(GoldenCompressTest, CompressIsByteIdenticalToTheReferenceFile) {
  const GoldenCase& golden = GetParam();
  // 24 kbps codes sit on near-ties that other kernels round the other way
  // (GoldenModelTest.EncodeMatchesReferenceCodes bounds how many).
  if (golden.bandwidth_kbps >= 24) ENCODEC_REQUIRE_REFERENCE_KERNELS();
  EncodecModel model = testing::golden_model(golden.model);
  model.set_target_bandwidth(golden.bandwidth_kbps);
  const Audio input = read_audio(testing::golden_path(golden.input));
  ASSERT_EQ(input.sample_rate_hz, model.sample_rate_hz());

  const std::string compressed = compress(model, input.samples);
  const std::string expected = testing::read_file_bytes(testing::golden_path(golden.ecdc));
  EXPECT_TRUE(compressed == expected) << golden.ecdc << ": "
                                      << testing::describe_byte_difference(compressed, expected);
}

TEST_P(GoldenCompressTest, DecompressOfTheReferenceFileGivesTheReferenceAudio) {
  const GoldenCase& golden = GetParam();
  const std::string bytes = testing::read_file_bytes(testing::golden_path(golden.ecdc));
  GoldenModels models;
  const DecompressedAudio audio = decompress(bytes, models.provider());
  EXPECT_EQ(models.requested, std::vector<std::string>{golden.model});

  const auto& model_info = testing::golden_manifest().at("models").at(golden.model);
  EXPECT_EQ(audio.sample_rate_hz, model_info.at("sample_rate").get<int>());
  EXPECT_EQ(audio.header.model_name, golden.model);
  EXPECT_EQ(audio.header.audio_length, golden.num_samples);
  EXPECT_EQ(audio.header.num_codebooks, golden.num_codebooks);
  EXPECT_FALSE(audio.header.use_lm);

  const torch::Tensor decoded = testing::load_npy(testing::golden_path(golden.decoded));
  const torch::Tensor expected = decoded.narrow(1, 0, golden.num_samples);
  ASSERT_EQ(audio.samples.dtype(), torch::kFloat32);
  ASSERT_EQ(audio.samples.sizes(),
            (std::vector<int64_t>{model_info.at("channels").get<int64_t>(), golden.num_samples}));
  const torch::Tensor error = audio.samples - expected;
  const double max_error = error.abs().max().item<double>();
  const double signal = expected.pow(2).sum().item<double>();
  const double noise = error.pow(2).sum().item<double>();
  const double snr_db = noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
  std::cout << "[ decode   ] " << golden.label << ": max abs error " << max_error << ", SNR "
            << snr_db << " dB\n";
  EXPECT_TRUE(max_error <= 1e-4 || snr_db >= 60)
      << "max abs error " << max_error << ", SNR " << snr_db << " dB";
}

TEST_P(GoldenCompressTest, ReadingAndRewritingTheFramesReproducesTheReferenceFile) {
  const GoldenCase& golden = GetParam();
  const std::string bytes = testing::read_file_bytes(testing::golden_path(golden.ecdc));
  std::istringstream in(bytes);
  const EcdcHeader header = read_ecdc_header(in);
  const EncodecConfig& config = testing::golden_model(golden.model).config();
  const std::vector<EncodedFrame> frames = read_ecdc_frames(in, header, config);
  EXPECT_EQ(in.peek(), std::char_traits<char>::eof()) << "bytes left after the last chunk";

  ASSERT_EQ(frames.size(), golden.frames_per_chunk.size());
  const torch::Tensor expected_codes =
      testing::load_npy(testing::golden_path(golden.codes)).to(torch::kInt64);
  EXPECT_TRUE(testing::concatenated_codes(frames).equal(expected_codes));
  if (!golden.scales.empty()) {
    const torch::Tensor scales = testing::load_npy(testing::golden_path(golden.scales));
    for (size_t chunk = 0; chunk < frames.size(); ++chunk) {
      ASSERT_TRUE(frames[chunk].scale.has_value());
      EXPECT_EQ(frames[chunk].scale->item<float>(), scales[chunk].item<float>());
    }
  }

  std::ostringstream out;
  write_ecdc(out, header, frames, config.bits_per_codebook());
  EXPECT_TRUE(out.str() == bytes) << testing::describe_byte_difference(out.str(), bytes);
}

INSTANTIATE_TEST_SUITE_P(Reference, GoldenCompressTest,
                         ::testing::ValuesIn(testing::golden_cases()),
                         [](const auto& info) { return info.param.label; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenCompressTest);

class CompressCorruptEcdcTest : public ::testing::Test {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
};

TEST_F(CompressCorruptEcdcTest, OnlyLmCodedFilesAskForAnLmAndOnlyForTheirModel) {
  int lm_requests = 0;
  const LmProvider lms = [&](const std::string& name) {
    ++lm_requests;
    return testing::golden_lm(name);
  };
  GoldenModels models;
  decompress(testing::read_file_bytes(testing::golden_path("cases/short_48k_6kbps.ecdc")),
             models.provider(), lms);
  EXPECT_EQ(lm_requests, 0) << "a raw file asked for an LM";
  // An LM-coded file naming an unknown model: refused before either provider is asked.
  std::string bytes =
      testing::read_file_bytes(testing::golden_path("cases/short_48k_6kbps_lm.ecdc"));
  const size_t at = bytes.find("encodec_48khz");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 13, "encodec_96khz");
  expect_decompress_format_error(bytes, {"unsupported model", "encodec_96khz"}, "unknown model");
  EXPECT_EQ(lm_requests, 0);
}

// The header names the LM coder, both ways: an LM on the deterministic kernels
// writes "lmk": "det1" and the raw file's header otherwise; whatever kernels
// the decoder's LM is set to, each file decodes to the codes of the raw
// golden file. Without its mark a det1 file is read with the Python package's
// coder and does not decode to those codes: the mark is what keeps a decoder
// from the wrong coder.
TEST_F(CompressCorruptEcdcTest, TheHeaderNamesTheLmCoderBothWays) {
  for (const char* model_name : {"encodec_24khz", "encodec_48khz"}) {
    SCOPED_TRACE(model_name);
    const bool hq = std::string(model_name) == "encodec_48khz";
    const std::string raw =
        testing::read_file_bytes(testing::golden_path(hq ? "cases/short_48k_6kbps.ecdc" : "cases/speech_24k_6kbps.ecdc"));
    const DecompressedAudio expected = decompress_with_golden_models(raw);
    const std::vector<EncodedFrame> frames = [&] {
      std::istringstream in(raw);
      const EcdcHeader header = read_ecdc_header(in);
      return read_ecdc_frames(in, header, testing::golden_model(model_name).config());
    }();
    std::istringstream raw_in(raw);
    EcdcHeader header = read_ecdc_header(raw_in);
    header.use_lm = true;
    const EncodecConfig& config = testing::golden_model(model_name).config();
    auto write = [&](const LmModel& lm, const std::string& lm_coder) {
      EcdcHeader marked = header;
      marked.lm_coder = lm_coder;
      std::ostringstream out;
      write_ecdc(out, marked, frames, config.bits_per_codebook(), &lm);
      return out.str();
    };
    const LmModel det = testing::golden_lm(model_name, LmKernels::kDeterministic);
    const LmModel python = testing::golden_lm(model_name, LmKernels::kReference);
    const std::string det_file = write(det, kLmCoderDeterministic);
    const std::string python_file = write(python, "");
    // The deterministic LM with no mark writes the Python package's coding.
    EXPECT_TRUE(write(det, "") == python_file);
    EXPECT_TRUE(write(python, kLmCoderDeterministic) == det_file);
    EXPECT_NE(det_file.substr(ecdc_header_size(det_file)), python_file.substr(ecdc_header_size(python_file)));
    for (const LmKernels kernels : {LmKernels::kAuto, LmKernels::kReference, LmKernels::kDeterministic}) {
      const LmProvider lms = [&](const std::string& name) { return testing::golden_lm(name, kernels); };
      GoldenModels models;
      for (const std::string* file : {&det_file, &python_file}) {
        const DecompressedAudio audio = decompress(*file, models.provider(), lms);
        EXPECT_EQ(audio.header.lm_coder, file == &det_file ? "det1" : "");
        EXPECT_TRUE(torch::equal(audio.samples, expected.samples));
      }
    }
    // det1's bytes read as the Python package's coding: other codes (or an error).
    const std::string unmarked = header_bytes(header) + det_file.substr(ecdc_header_size(det_file));
    std::istringstream in(unmarked);
    const EcdcHeader read = read_ecdc_header(in);
    try {
      const std::vector<EncodedFrame> misread = read_ecdc_frames(in, read, config, &python);
      bool same = misread.size() == frames.size();
      for (size_t i = 0; same && i < frames.size(); ++i) same = torch::equal(misread[i].codes, frames[i].codes);
      EXPECT_FALSE(same) << "det1 bytes decoded to the same codes with the Python package's coder";
    } catch (const EcdcFormatError&) {
      // The wrong coder may also run out of bytes: refused either way.
    }
  }
}

TEST_F(CompressCorruptEcdcTest, AnLmThatDoesNotFitTheFileIsRefused) {
  // 24 kbps at 24 kHz uses 32 codebooks; the golden 48 kHz LM predicts 16.
  const std::string bytes =
      testing::read_file_bytes(testing::golden_path("cases/speech_24k_24kbps_lm.ecdc"));
  GoldenModels models;
  try {
    decompress(bytes, models.provider(),
               [](const std::string&) { return testing::golden_lm("encodec_48khz"); });
    ADD_FAILURE() << "decoded with an LM of 16 codebooks";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("16 codebooks"), std::string::npos) << error.what();
  }
}

TEST_F(CompressCorruptEcdcTest, TruncatedFilesNameWhereTheyEnd) {
  // 24 kHz: one chunk of 188 frames, 8 codebooks.
  const std::string speech =
      testing::read_file_bytes(testing::golden_path("cases/speech_24k_6kbps.ecdc"));
  const size_t speech_header = ecdc_header_size(speech);
  expect_decompress_format_error(speech.substr(0, 5), {"truncated .ecdc header"},
                                 "cut inside the fixed header");
  expect_decompress_format_error(speech.substr(0, speech_header - 3), {"truncated .ecdc metadata"},
                                 "cut inside the metadata");
  // 10 bytes of 10-bit codes are 8 values: frame 0 of 8 codebooks, nothing of frame 1.
  expect_decompress_format_error(speech.substr(0, speech_header + 10),
                                 {"truncated .ecdc file", "codes of chunk 1 of 1", "after 1 of",
                                  "188 frames"},
                                 "cut inside the codes");
  expect_decompress_format_error(speech.substr(0, speech.size() - 1),
                                 {"codes of chunk 1 of 1", "after 187 of"},
                                 "last byte missing");

  // 48 kHz at 6 kbps: chunks of 150, 150 and 48 frames with 4 codebooks, so
  // each full chunk is a 4-byte scale and 750 bytes of codes.
  const std::string music =
      testing::read_file_bytes(testing::golden_path("cases/music_stereo_48k_6kbps.ecdc"));
  const size_t music_header = ecdc_header_size(music);
  ASSERT_EQ(music.size(), music_header + 2 * (4 + 750) + 4 + 240);
  expect_decompress_format_error(music.substr(0, music_header + 2),
                                 {"truncated .ecdc file", "scale of chunk 1 of 3"},
                                 "cut inside the first scale");
  expect_decompress_format_error(music.substr(0, music_header + 4 + 750 + 3),
                                 {"truncated .ecdc file", "scale of chunk 2 of 3"},
                                 "cut inside the second scale");
  expect_decompress_format_error(music.substr(0, music_header + 2 * (4 + 750)),
                                 {"scale of chunk 3 of 3"}, "cut before the last scale");
  expect_decompress_format_error(music.substr(0, music_header + 2 * (4 + 750) + 4 + 100),
                                 {"codes of chunk 3 of 3", "of its 48 frames"},
                                 "cut inside the last chunk's codes");
}

TEST_F(CompressCorruptEcdcTest, EveryStrictPrefixOfAFileIsAFormatError) {
  // The last byte of every file holds bits of its last code, so no prefix can
  // decode; each one must be a clean EcdcFormatError, never a crash.
  for (const char* file : {"cases/short_48k_6kbps.ecdc", "cases/tiny_24k_24kbps.ecdc"}) {
    const std::string bytes = testing::read_file_bytes(testing::golden_path(file));
    for (size_t length = 0; length < bytes.size(); ++length) {
      EXPECT_THROW(decompress_with_golden_models(bytes.substr(0, length)), EcdcFormatError)
          << file << " cut to " << length << " of " << bytes.size() << " bytes";
    }
  }
}

TEST_F(CompressCorruptEcdcTest, UnknownModelNameIsAnErrorAndNoModelIsRequested) {
  EcdcHeader header;
  header.model_name = "encodec_96khz";
  header.audio_length = 320;
  header.num_codebooks = 2;
  GoldenModels models;
  try {
    decompress(header_bytes(header) + std::string(3, '\0'), models.provider());
    ADD_FAILURE() << "no error for an unknown model";
  } catch (const EcdcFormatError& error) {
    EXPECT_NE(std::string(error.what()).find("unsupported model 'encodec_96khz'"),
              std::string::npos)
        << error.what();
  }
  EXPECT_TRUE(models.requested.empty());
}

TEST_F(CompressCorruptEcdcTest, HugeAudioLengthInAShortFileIsATruncationErrorNotAnAllocation) {
  // A corrupt "al" must not make the reader allocate for the claimed length.
  for (const char* model : {"encodec_24khz", "encodec_48khz"}) {
    for (const int64_t audio_length :
         {int64_t{1} << 40, std::numeric_limits<int64_t>::max() - 1,
          std::numeric_limits<int64_t>::max()}) {
      EcdcHeader header;
      header.model_name = model;
      header.audio_length = audio_length;
      header.num_codebooks = 2;
      expect_decompress_format_error(header_bytes(header) + std::string(64, '\x55'),
                                     {"truncated .ecdc file", "chunk 1 of"},
                                     std::string(model) + " al=" + std::to_string(audio_length));
    }
  }
}

TEST_F(CompressCorruptEcdcTest, MoreCodebooksThanTheModelHasIsAnError) {
  EcdcHeader header;
  header.model_name = "encodec_48khz";  // 16 codebooks
  header.audio_length = 960;
  header.num_codebooks = 17;
  expect_decompress_format_error(header_bytes(header) + std::string(200, '\0'),
                                 {"17 codebooks", "encodec_48khz has 16"}, "nc 17 for 48 kHz");
}

TEST_F(CompressCorruptEcdcTest, ZeroLengthAudioDecodesToEmptyAudio) {
  for (const char* model : {"encodec_24khz", "encodec_48khz"}) {
    EcdcHeader header;
    header.model_name = model;
    header.audio_length = 0;
    header.num_codebooks = 4;
    const DecompressedAudio audio = decompress_with_golden_models(header_bytes(header));
    const auto& info = testing::golden_manifest().at("models").at(model);
    EXPECT_EQ(audio.samples.sizes(),
              (std::vector<int64_t>{info.at("channels").get<int64_t>(), 0}))
        << model;
    EXPECT_EQ(audio.sample_rate_hz, info.at("sample_rate").get<int>()) << model;
    EXPECT_EQ(audio.header.audio_length, 0);
  }
}

TEST_F(CompressCorruptEcdcTest, AProviderGivingAnotherModelIsRefused) {
  const std::string bytes =
      testing::read_file_bytes(testing::golden_path("cases/short_48k_6kbps.ecdc"));
  EXPECT_THROW(decompress(bytes,
                          [](const std::string&) {
                            return testing::golden_model("encodec_24khz");
                          }),
               std::invalid_argument);
}

class CompressArgumentsTest : public ::testing::Test {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
};

TEST_F(CompressArgumentsTest, RejectsAudioTheModelCannotTake) {
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_target_bandwidth(6.0);
  EXPECT_THROW(compress(model, torch::zeros({2, 800})), std::invalid_argument);  // stereo
  EXPECT_THROW(compress(model, torch::zeros({800})), std::invalid_argument);     // no channel dim
  EXPECT_THROW(compress(model, torch::zeros({1, 0})), std::invalid_argument);    // empty
  // With --lm the audio is checked before the LM is loaded (or downloaded).
  EXPECT_THROW(compress(model, torch::zeros({2, 800}), /*use_lm=*/true), std::invalid_argument);
  EXPECT_THROW(compress(model, torch::zeros({1, 0}), testing::golden_lm("encodec_24khz")),
               std::invalid_argument);
  // An LM predicting fewer codebooks than the bandwidth uses.
  model.set_target_bandwidth(24.0);
  EXPECT_THROW(compress(model, torch::zeros({1, 800}), testing::golden_lm("encodec_48khz")),
               std::invalid_argument);
}

TEST_F(CompressArgumentsTest, WithoutABandwidthEveryCodebookIsWritten) {
  // The reference model's bandwidth defaults to None: all n_q codebooks.
  const EncodecModel& model = testing::golden_model("encodec_24khz");
  ASSERT_FALSE(model.bandwidth().has_value());
  const std::string bytes = compress(model, torch::rand({1, 640}) - 0.5);
  std::istringstream in(bytes);
  const EcdcHeader header = read_ecdc_header(in);
  EXPECT_EQ(header.num_codebooks, 32);
  EXPECT_EQ(header.audio_length, 640);
  EXPECT_EQ(bytes.size(), ecdc_header_size(bytes) + 2 * 32 * 10 / 8);  // 2 frames
}

// A 24 kHz file is a single chunk: its codes must reach the sink in bounded
// pieces as they are read, not after the whole chunk (minutes of audio).
TEST(ReadEcdcChunksTest, LongChunksReachTheSinkInBoundedPieces) {
  class Recorder : public CodesSink {
   public:
    void begin_chunk(std::optional<float> scale) override {
      ++chunks;
      EXPECT_FALSE(scale.has_value());
    }
    void push_codes(const torch::Tensor& codes) override {
      piece_frames.push_back(codes.size(1));
      pieces.push_back(codes);
    }
    void end_chunk() override { ++ended; }
    int chunks = 0, ended = 0;
    std::vector<int64_t> piece_frames;
    std::vector<torch::Tensor> pieces;
  };
  const EncodecConfig config = EncodecConfig::official_24khz();
  constexpr int64_t kFrames = 4000;  // 53 s
  EcdcHeader header;
  header.model_name = config.name;
  header.audio_length = kFrames * 320 - 17;
  header.num_codebooks = 8;
  torch::manual_seed(3);
  const torch::Tensor codes = torch::randint(0, config.bins, {1, 8, kFrames}, torch::kInt64);
  std::stringstream file;
  write_ecdc(file, header, {EncodedFrame{codes, std::nullopt}}, config.bits_per_codebook());
  read_ecdc_header(file);
  Recorder recorder;
  read_ecdc_chunks(file, header, config, nullptr, recorder);
  EXPECT_EQ(recorder.chunks, 1);
  EXPECT_EQ(recorder.ended, 1);
  ASSERT_GT(recorder.pieces.size(), 1u);
  for (const int64_t frames : recorder.piece_frames) EXPECT_LE(frames, 1500);
  EXPECT_TRUE(torch::equal(torch::cat(recorder.pieces, 1), codes[0]));
}

}  // namespace
}  // namespace encodec
