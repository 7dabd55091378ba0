// The opt-in bf16 precision (encodec/precision.h, model_precision.cpp): its
// layers against an independent computation on bf16-rounded weights and
// inputs, its decode against fp32's on the golden models, its files read by the
// fp32 decoder, and its refusal where bf16 is unavailable (forced here through
// ENCODEC_DISABLE_BF16, so that the refusal is tested on any CPU).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>

#include "encodec/audio_io.h"
#include "encodec/compress.h"
#include "encodec/encodec.h"
#include "fast/fast_layers.h"
#include "fast/ordered_matrix.h"
#include "golden_cases.h"
#include "model_weights.h"

namespace encodec {
namespace {

using testing::GoldenCase;

// The bf16-vs-fp32 decode SNR measured on the golden cases (same codes, both
// on the fast kernels): 43.3-46 dB for the 24 kHz model, 40.6-41.7 dB for the
// 48 kHz one (lowest: short_48k at 3 kbps); the bound sits just below. The
// issue's target is 30 dB.
constexpr double kMinDecodeSnrDb = 40.0;

#define REQUIRE_BF16()                                                                   \
  do {                                                                                   \
    if (!bf16_unavailable_reason().empty()) GTEST_SKIP() << bf16_unavailable_reason(); \
  } while (0)

double snr_db(const torch::Tensor& reference, const torch::Tensor& other) {
  const double signal = reference.pow(2).sum().item<double>();
  const double noise = (reference - other).pow(2).sum().item<double>();
  return noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
}

// fp32 values rounded to bf16 by LibTorch (independently of to_bf16), in double.
torch::Tensor bf16_rounded(const torch::Tensor& values) {
  return values.to(torch::kBFloat16).to(torch::kFloat64);
}

// ENCODEC_DISABLE_BF16 set for one scope.
class DisableBf16Scope {
 public:
  DisableBf16Scope() { ::setenv("ENCODEC_DISABLE_BF16", "1", 1); }
  ~DisableBf16Scope() { ::unsetenv("ENCODEC_DISABLE_BF16"); }
};

// The bulk conversion (AVX512-BF16's instructions where the CPU has them) and
// the portable loop round as to_bf16, special values included, at every length
// (the tail of a length that is not a multiple of 32 runs a masked path).
TEST(Bf16ConversionTest, ConvertsAsToBf16) {
  std::vector<float> values = testing::random_normal_values(1000, 7);
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN,
                            std::nextafter(FLT_MIN, 0.0f), -std::ldexp(1.0f, -140), FLT_MAX,
                            1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)};
  for (size_t i = 0; i < std::size(specials); ++i) values[37 * i + 5] = specials[i];
  for (const auto convert : {fast::convert_to_bf16, fast::convert_to_bf16_portably}) {
    for (const int64_t count : {1, 15, 16, 17, 31, 32, 33, 63, 1000}) {
      std::vector<uint16_t> converted(count + 1, 0xabcd);
      convert(values.data(), converted.data(), count);
      for (int64_t i = 0; i < count; ++i) ASSERT_EQ(converted[i], fast::to_bf16(values[i])) << count << " " << i;
      EXPECT_EQ(converted[count], 0xabcd) << "wrote past " << count << " values";
    }
  }
}

// The bf16 product of rows given as overlapping windows (converted once per
// span) and as separate rows (converted one by one) is the same, with bias and
// accumulation, and is the pair chain of the rounded values.
TEST(OrderedMatrixTest, Bf16ProductIsThePairChainOfRoundedRows) {
  REQUIRE_BF16();
  for (const int64_t depth : {6, 7, 96}) {
    const int64_t columns = 40, rows = 30, step = 2;
    const std::vector<float> weight = testing::random_normal_values(columns * depth, 1);
    const std::vector<float> bias = testing::random_normal_values(columns, 2);
    const std::vector<float> signal = testing::random_normal_values(rows * step + depth, 3);
    const fast::OrderedMatrix matrix(weight.data(), columns, depth, Precision::kBf16);
    ASSERT_EQ(matrix.precision(), Precision::kBf16);
    std::vector<float> windows(rows * columns), separate(rows * columns);
    fast::ordered_gemm(signal.data(), step, rows, matrix, windows.data(), columns, {bias.data()});
    std::vector<std::vector<float>> copies(rows);
    std::vector<const float*> row_pointers(rows);
    std::vector<float*> out_rows(rows);
    for (int64_t m = 0; m < rows; ++m) {
      copies[m].assign(signal.begin() + m * step, signal.begin() + m * step + depth);
      row_pointers[m] = copies[m].data();
      out_rows[m] = &separate[m * columns];
    }
    std::fill(separate.begin(), separate.end(), 1.0f);  // accumulate adds onto 1
    fast::ordered_gemm(row_pointers.data(), rows, matrix, out_rows.data(), {bias.data(), true});
    for (int64_t m = 0; m < rows; ++m) {
      std::vector<uint16_t> rounded(depth + 1, 0);
      for (int64_t k = 0; k < depth; ++k) rounded[k] = fast::to_bf16(copies[m][k]);
      for (int64_t n = 0; n < columns; ++n) {
        const float chain = fast::ordered_chain_bf16(rounded.data(), *matrix.bf16(), n, bias[n]);
        ASSERT_EQ(windows[m * columns + n], chain) << "depth " << depth << " row " << m;
        ASSERT_EQ(separate[m * columns + n], 1.0f + chain) << "depth " << depth << " row " << m;
      }
    }
  }
}

class Bf16LayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    REQUIRE_BF16();
  }
  // [1, length, channels] time-major input.
  static torch::Tensor input(int64_t length, int64_t channels) {
    torch::manual_seed(11);
    return torch::randn({1, length, channels});
  }
  // |actual - expected| within fp32 summation error of the exact sums.
  static void expect_close(const torch::Tensor& actual, const torch::Tensor& expected,
                           const torch::Tensor& magnitude) {
    ASSERT_EQ(actual.sizes(), expected.sizes());
    const torch::Tensor excess =
        (actual.to(torch::kFloat64) - expected).abs() - (magnitude * 1e-5 + 1e-6);
    EXPECT_LE(excess.max().item<double>(), 0.0);
  }
};

// Every conv of the golden encoder in bf16 against LibTorch's double conv of
// the rounded weights and rounded, reflect-padded input.
TEST_F(Bf16LayerTest, ConvsAreTheProductsOfRoundedWeightsAndInputs) {
  const EncodecModel& model = testing::golden_model("encodec_24khz");
  int checked = 0;
  for (const SEANetLayer& layer : model.weights().encoder.layers()) {
    const auto* reference = std::get_if<SConv1d>(&layer);
    if (!reference) continue;
    const fast::Conv1d conv(*reference, Precision::kBf16);
    const int64_t length = 50, kernel = reference->effective_kernel_size();
    const torch::Tensor x = input(length, reference->weight().size(1));
    const torch::Tensor y = conv.forward(x);
    const int64_t extra = extra_padding_for_conv1d(length, kernel, reference->stride(),
                                                   reference->padding_total());
    const torch::Tensor padded = torch::nn::functional::pad(
        bf16_rounded(x.transpose(1, 2)),
        torch::nn::functional::PadFuncOptions({reference->padding_total(), extra})
            .mode(torch::kReflect));
    const auto conv_double = [&](const torch::Tensor& in, const torch::Tensor& weight,
                                 const torch::Tensor& bias) {
      const std::vector<int64_t> stride = {reference->stride()}, padding = {0},
                                 dilation = {reference->dilation()};
      return torch::conv1d(in, weight, bias, stride, padding, dilation)
          .transpose(1, 2);
    };
    const torch::Tensor weight = bf16_rounded(reference->weight());
    const torch::Tensor expected =
        conv_double(padded, weight, reference->bias().to(torch::kFloat64));
    const torch::Tensor magnitude = conv_double(padded.abs(), weight.abs(), {});
    expect_close(y, expected, magnitude);
    // Without rounding the inputs the difference is far larger: the layer does round them.
    const torch::Tensor unrounded_input = torch::nn::functional::pad(
        x.transpose(1, 2).to(torch::kFloat64),
        torch::nn::functional::PadFuncOptions({reference->padding_total(), extra})
            .mode(torch::kReflect));
    const torch::Tensor unrounded =
        conv_double(unrounded_input, weight, reference->bias().to(torch::kFloat64));
    EXPECT_GT((unrounded - y.to(torch::kFloat64)).abs().max().item<double>(),
              100 * (expected - y.to(torch::kFloat64)).abs().max().item<double>());
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST_F(Bf16LayerTest, TransposedConvsAreTheProductsOfRoundedWeightsAndInputs) {
  const EncodecModel& model = testing::golden_model("encodec_24khz");
  int checked = 0;
  for (const SEANetLayer& layer : model.weights().decoder.layers()) {
    const auto* reference = std::get_if<SConvTranspose1d>(&layer);
    if (!reference) continue;
    const fast::ConvTranspose1d conv(*reference, Precision::kBf16);
    const torch::Tensor x = input(20, reference->weight().size(0));
    const torch::Tensor y = conv.forward(x);
    const torch::Tensor rounded = bf16_rounded(x.transpose(1, 2));
    const torch::Tensor weight = bf16_rounded(reference->weight());
    // The causal model trims kernel - stride samples on the right.
    const int64_t trim = reference->kernel_size() - reference->stride();
    const auto transposed = [&](const torch::Tensor& in, const torch::Tensor& w,
                                const torch::Tensor& bias) {
      const torch::Tensor full = torch::conv_transpose1d(in, w, bias, reference->stride());
      return full.narrow(2, 0, full.size(2) - trim).transpose(1, 2);
    };
    expect_close(y, transposed(rounded, weight, reference->bias().to(torch::kFloat64)),
                 transposed(rounded.abs(), weight.abs(), {}));
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

// The bf16 decode of the same codes against the fp32 decode (both fast).
class Bf16ModelTest : public ::testing::TestWithParam<GoldenCase> {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    REQUIRE_BF16();
  }
};

TEST_P(Bf16ModelTest, DecodeOfTheSameCodesIsWithinTheMeasuredSnrOfFp32) {
  const GoldenCase& golden = GetParam();
  EncodecModel fp32 = testing::golden_model(golden.model);
  fp32.set_kernels(Kernels::kFast);
  fp32.set_target_bandwidth(golden.bandwidth_kbps);
  EncodecModel bf16 = fp32;
  bf16.set_precision(Precision::kBf16);
  const torch::Tensor wav = read_audio(testing::golden_path(golden.input)).samples.unsqueeze(0);
  const std::vector<EncodedFrame> frames = fp32.encode(wav);
  const double snr = snr_db(fp32.decode(frames), bf16.decode(frames));
  const torch::Tensor fp32_codes = testing::concatenated_codes(frames);
  const torch::Tensor bf16_codes = testing::concatenated_codes(bf16.encode(wav));
  const double first_level_equal =
      fp32_codes[0].eq(bf16_codes[0]).to(torch::kFloat64).mean().item<double>();
  std::cout << "[ bf16     ] " << golden.label << ": decode SNR vs fp32 " << snr
            << " dB, first-level codes equal " << 100 * first_level_equal << "%\n";
  EXPECT_GE(snr, kMinDecodeSnrDb);
  ASSERT_EQ(bf16_codes.sizes(), fp32_codes.sizes());
}

// Files: one bandwidth per input suffices.
class Bf16FileTest : public Bf16ModelTest {};

std::vector<GoldenCase> golden_cases_at_6kbps() {
  std::vector<GoldenCase> cases;
  for (const GoldenCase& golden : testing::golden_cases()) {
    if (golden.bandwidth_kbps == 6.0) cases.push_back(golden);
  }
  return cases;
}

// A bf16 .ecdc file is an ordinary one: the fp32 decoder (reference kernels)
// reads it and decodes the bf16 encoder's codes.
TEST_P(Bf16FileTest, FilesAreReadByTheFp32Decoder) {
  const GoldenCase& golden = GetParam();
  EncodecModel bf16 = testing::golden_model(golden.model);
  bf16.set_target_bandwidth(golden.bandwidth_kbps);
  bf16.set_precision(Precision::kBf16);
  const torch::Tensor samples = read_audio(testing::golden_path(golden.input)).samples;
  const std::string bytes = compress(bf16, samples);
  const EncodecModel& fp32 = testing::golden_model(golden.model);
  ASSERT_EQ(fp32.precision(), Precision::kFp32);
  const DecompressedAudio decoded = decompress(bytes, [&](const std::string&) { return fp32; });
  EXPECT_EQ(decoded.header.model_name, golden.model);
  EXPECT_EQ(decoded.header.audio_length, samples.size(1));
  EXPECT_EQ(decoded.header.num_codebooks, golden.num_codebooks);
  const torch::Tensor expected =
      fp32.decode(bf16.encode(samples.unsqueeze(0)))[0].narrow(1, 0, samples.size(1));
  ASSERT_EQ(decoded.samples.sizes(), expected.sizes());
  EXPECT_LE((decoded.samples - expected).abs().max().item<double>(), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Golden, Bf16ModelTest, ::testing::ValuesIn(testing::golden_cases()),
                         [](const auto& info) { return info.param.label; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Bf16ModelTest);
INSTANTIATE_TEST_SUITE_P(Golden, Bf16FileTest, ::testing::ValuesIn(golden_cases_at_6kbps()),
                         [](const auto& info) { return info.param.label; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Bf16FileTest);

TEST(PrecisionTest, Bf16IsRefusedWhereUnavailableNamingTheFeature) {
  ENCODEC_REQUIRE_GOLDEN();
  EncodecModel model = testing::golden_model("encodec_24khz");
  {
    const DisableBf16Scope disabled;
    EXPECT_NE(bf16_unavailable_reason().find("AVX512-BF16"), std::string::npos);
    try {
      model.set_precision(Precision::kBf16);
      FAIL() << "bf16 accepted while unavailable";
    } catch (const std::runtime_error& error) {
      EXPECT_NE(std::string(error.what()).find("AVX512-BF16"), std::string::npos) << error.what();
    }
    EXPECT_EQ(model.precision(), Precision::kFp32);
    EXPECT_EQ(model.kernels(), Kernels::kReference);
    model.set_precision(Precision::kFp32);  // fp32 is always there
  }
  ::setenv("ENCODEC_DISABLE_BF16", "0", 1);  // "0" disables nothing
  EXPECT_EQ(bf16_unavailable_reason().empty(), fast::cpu_has_avx512_bf16());
  ::unsetenv("ENCODEC_DISABLE_BF16");
}

TEST(PrecisionTest, Bf16SelectsTheFastKernelsAndSharesItsLayersBetweenCopies) {
  ENCODEC_REQUIRE_GOLDEN();
  REQUIRE_BF16();
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_precision(Precision::kBf16);
  EXPECT_EQ(model.kernels(), Kernels::kFast);
  EXPECT_THROW(model.set_kernels(Kernels::kReference), std::logic_error);
  const EncodecModel copy = model;
  EXPECT_EQ(&fast_layers(copy).encoder, &fast_layers(model).encoder);
  EXPECT_NE(&fast_layers(model).encoder, model.weights().fast_encoder.get());
  model.set_precision(Precision::kFp32);
  EXPECT_EQ(&fast_layers(model).encoder, model.weights().fast_encoder.get());
  model.set_kernels(Kernels::kReference);
}

// bf16 builds its layers from the reference weights: a reference-only model
// (no fp32 fast copies) runs it, a fast-only one (reference kernels released)
// refuses it.
TEST(PrecisionTest, Bf16NeedsTheReferenceWeightsNotTheFp32FastCopies) {
  ENCODEC_REQUIRE_GOLDEN();
  REQUIRE_BF16();
  const std::string checkpoint = testing::golden_path("encodec_24khz-random.th");
  EncodecModel fast_only = EncodecModel::from_checkpoint(checkpoint, "encodec_24khz", KernelSet::kFastOnly);
  EXPECT_THROW(fast_only.set_precision(Precision::kBf16), std::logic_error);
  EXPECT_EQ(fast_only.precision(), Precision::kFp32);

  EncodecModel reference_only =
      EncodecModel::from_checkpoint(checkpoint, "encodec_24khz", KernelSet::kReferenceOnly);
  reference_only.set_precision(Precision::kBf16);
  EXPECT_EQ(reference_only.kernels(), Kernels::kFast);
  EncodecModel both = EncodecModel::from_checkpoint(checkpoint, "encodec_24khz");
  both.set_precision(Precision::kBf16);
  const torch::Tensor wav = read_audio(testing::golden_path("inputs/speech_24k.wav")).samples.unsqueeze(0);
  for (EncodecModel* model : {&reference_only, &both}) model->set_target_bandwidth(6.0);
  EXPECT_TRUE(torch::equal(reference_only.encode(wav)[0].codes, both.encode(wav)[0].codes));
  // Back in fp32, a reference-only model has only its reference kernels.
  reference_only.set_precision(Precision::kFp32);
  EXPECT_EQ(reference_only.kernels(), Kernels::kReference);
}

}  // namespace
}  // namespace encodec
