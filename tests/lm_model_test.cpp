// The LM model: loading (names, shapes, inferred widths, strict errors), each
// exact kernel against the LibTorch operation it reproduces, and the fast
// stepper against the reference's operations, probability for probability,
// at the official size and at widths that take the other kernel paths.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "encodec/lm.h"
#include "lm/exact_kernels.h"
#include "lm/fast_lm.h"
#include "lm/lm_stepper.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------- loading

TEST(LmConfigTest, OfficialConfigurationHasTheOfficialTensorNamesAndShapes) {
  ENCODEC_REQUIRE_GOLDEN();
  const nlohmann::json shapes =
      nlohmann::json::parse(testing::read_file_bytes(testing::golden_path("official_shapes.json")));
  for (const auto& [codec, lm_name] : {std::pair<EncodecConfig, std::string>{
                                           EncodecConfig::official_24khz(), "encodec_lm_24khz"},
                                       {EncodecConfig::official_48khz(), "encodec_lm_48khz"}}) {
    const auto expected = shapes.at(lm_name);
    const auto actual = LmModel::tensor_shapes(LmConfig::for_codec(codec));
    ASSERT_EQ(actual.size(), expected.size()) << lm_name;
    for (const auto& [name, shape] : actual) {
      ASSERT_TRUE(expected.contains(name)) << lm_name << ": unexpected " << name;
      EXPECT_EQ(shape, expected.at(name).get<std::vector<int64_t>>()) << name;
    }
  }
  EXPECT_EQ(LmConfig::for_codec(EncodecConfig::official_24khz()).past_context, 262);
  EXPECT_EQ(LmConfig::for_codec(EncodecConfig::official_48khz()).past_context, 525);
  EXPECT_EQ(LmModel::official_checkpoint_name("encodec_24khz"), "encodec_lm_24khz-1608e3c0.th");
  EXPECT_EQ(LmModel::official_checkpoint_name("encodec_48khz"), "encodec_lm_48khz-7add9fc3.th");
  EXPECT_THROW(LmModel::official_checkpoint_name("encodec_96khz"), std::invalid_argument);
}

TEST(LmConfigTest, GoldenCheckpointsGiveTheManifestArchitecture) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const std::string model : {"encodec_24khz", "encodec_48khz"}) {
    const auto& info = testing::golden_manifest().at("lm_models").at(model);
    const LmConfig& config = testing::golden_lm(model).config();
    EXPECT_EQ(config.dim, info.at("dim").get<int>());
    EXPECT_EQ(config.n_q, info.at("n_q").get<int>());
    EXPECT_EQ(config.card, info.at("card").get<int>());
    EXPECT_EQ(config.num_layers, info.at("num_layers").get<int>());
    EXPECT_EQ(config.num_heads, info.at("num_heads").get<int>());
    EXPECT_EQ(config.past_context, info.at("past_context").get<int>());
    EXPECT_EQ(config.max_period, info.at("max_period").get<int>());
  }
}

class LmLoadingErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    state_ = load_checkpoint(testing::golden_path("encodec_lm_24khz-random.th"));
    config_ = LmConfig::infer_from_state_dict(testing::golden_model("encodec_24khz").config(), state_);
  }
  void expect_error(const StateDict& state, const std::string& part) {
    try {
      LmModel::from_state_dict(config_, state, "lm.th");
      ADD_FAILURE() << "no error; expected one naming '" << part << "'";
    } catch (const CheckpointError& error) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("lm.th"), std::string::npos) << error.what();
    }
  }
  StateDict state_;
  LmConfig config_;
};

TEST_F(LmLoadingErrorTest, MissingWrongShapeAndExtraTensorsAreNamed) {
  StateDict missing = state_;
  missing.erase("transformer.layers.3.linear2.bias");
  expect_error(missing, "transformer.layers.3.linear2.bias");
  StateDict reshaped = state_;
  reshaped["linears.5.weight"] = torch::zeros({1024, 17});
  expect_error(reshaped, "linears.5.weight");
  StateDict extra = state_;
  extra["transformer.layers.0.self_attn.bias_k"] = torch::zeros({1, 1, 16});
  expect_error(extra, "bias_k");
}

TEST_F(LmLoadingErrorTest, InferenceNamesWhatIsMissingOrDoesNotFit) {
  StateDict no_norm = state_;
  no_norm.erase("transformer.norm_in.weight");
  EXPECT_THROW(LmConfig::infer_from_state_dict(testing::golden_model("encodec_24khz").config(), no_norm),
               CheckpointError);
  // The 48 kHz LM predicts 16 codebooks; the 24 kHz codec has 32.
  const StateDict lm_48 = load_checkpoint(testing::golden_path("encodec_lm_48khz-random.th"));
  try {
    LmConfig::infer_from_state_dict(testing::golden_model("encodec_24khz").config(), lm_48);
    ADD_FAILURE() << "a 16-codebook LM was accepted for 32 codebooks";
  } catch (const CheckpointError& error) {
    EXPECT_NE(std::string(error.what()).find("16 codebooks"), std::string::npos) << error.what();
  }
}

TEST(LmKernelsTest, HeadDimensionsTheKernelsDoNotCoverFallBackToTheReference) {
  LmConfig config;
  config.dim = 256;  // head_dim 32: OpenBLAS would run the attention scores differently
  config.n_q = 2;
  config.num_layers = 1;
  config.past_context = 8;
  LmModel lm = LmModel::with_random_weights(config);
  EXPECT_EQ(lm.kernels(), LmKernels::kReference);
  EXPECT_NE(lm.fast_kernels_unavailable_reason(), "");
  EXPECT_THROW(lm.set_kernels(LmKernels::kFast), std::runtime_error);
  // The reference operations still code and decode.
  const torch::Tensor codes = torch::randint(0, 1024, {2, 12}, torch::kInt64);
  std::istringstream in(lm_encode_chunk(lm, codes));
  EXPECT_TRUE(lm_decode_chunk(lm, in, 2, 12).equal(codes));
}

// ---------------------------------------------------------------- exact kernels

class ExactKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!lm::exact::cpu_supported()) GTEST_SKIP() << lm::exact::cpu_unsupported_reason();
  }
};

bool same_floats(const float* a, const float* b, size_t count) {
  return std::memcmp(a, b, count * sizeof(float)) == 0;
}

TEST_F(ExactKernelTest, LinearsRoundAsLibTorchOnOneRow) {
  // (in, out) of every Linear of the official and golden LMs, and a few more.
  torch::manual_seed(11);
  for (const auto& [in, out] : std::vector<std::pair<int, int>>{
           {200, 200}, {200, 800}, {800, 200}, {200, 1024}, {200, 400}, {16, 16}, {16, 64},
           {64, 16}, {16, 1024}, {16, 32}, {64, 1024}, {48, 36}, {33, 7}}) {
    const torch::Tensor w = torch::randn({out, in}) / std::sqrt(static_cast<double>(in));
    const torch::Tensor b = torch::randn({out});
    const lm::FastLinear linear(w, b, 1);
    std::vector<float> y(out);
    for (int trial = 0; trial < 20; ++trial) {
      const torch::Tensor x = torch::randn({1, in}) * (trial % 2 ? 10.0 : 1.0);
      const torch::Tensor expected = F::linear(x, w, b).contiguous();
      linear.apply(x.data_ptr<float>(), y.data());
      ASSERT_TRUE(same_floats(y.data(), expected.data_ptr<float>(), out))
          << in << " -> " << out << (linear.small_tn ? " (small TN)" : " (chain)") << ", trial " << trial;
    }
  }
}

TEST_F(ExactKernelTest, KeyValueRowsRoundAsLibTorchInProductsOfManyAndFewRows) {
  // The reference projects every key row at every step: the product has
  // 2..past_context + 1 rows, and the row count picks OpenBLAS's kernel.
  torch::manual_seed(12);
  for (const int dim : {16, 64, 200}) {
    const torch::Tensor w = torch::randn({2 * dim, dim}) / std::sqrt(static_cast<double>(dim));
    const torch::Tensor b = torch::randn({2 * dim});
    const lm::FastLinear chain(w, b, 1000000), small(w, b, 1);
    std::vector<float> y(2 * dim);
    for (const int rows : {1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 100, 263, 526}) {
      const torch::Tensor x = torch::randn({rows, dim});
      const torch::Tensor expected = F::linear(x, w, b).contiguous();
      const bool small_kernel = lm::exact::small_tn_permitted(2 * dim, rows, dim);
      for (int r = 0; r < rows; ++r) {
        (small_kernel ? small : chain).apply(x[r].data_ptr<float>(), y.data());
        ASSERT_TRUE(same_floats(y.data(), expected[r].data_ptr<float>(), 2 * dim))
            << "dim " << dim << ", " << rows << " rows, row " << r;
      }
    }
  }
}

TEST_F(ExactKernelTest, AttentionProductsRoundAsBaddbmmAndBmm) {
  torch::manual_seed(13);
  for (const int head_dim : {2, 5, 6, 8, 25}) {
    const int heads = 8, dim = heads * head_dim;
    for (const int S : {2, 3, 15, 16, 17, 31, 32, 33, 50, 79, 80, 100, 199, 200, 201, 263, 526}) {
      // The reference's layouts: q [heads, 1, hd] and k, v [heads, S, hd] views of [S, heads * hd].
      const torch::Tensor q = torch::randn({1, heads, head_dim}).transpose(0, 1);
      const torch::Tensor keys = torch::randn({S, dim});
      const torch::Tensor values = torch::randn({S, dim});
      const torch::Tensor k = keys.view({S, heads, head_dim}).transpose(0, 1);
      const torch::Tensor v = values.view({S, heads, head_dim}).transpose(0, 1);
      const torch::Tensor mask = torch::zeros({1, 1, S});
      const torch::Tensor scores = torch::baddbmm(mask, q, k.transpose(-2, -1)).contiguous();
      const torch::Tensor weights = torch::softmax(scores, -1);
      const torch::Tensor out = torch::bmm(weights, v).contiguous();
      // Ours: keys transposed and rotated in a ring (slot = (j + 5) % S).
      const torch::Tensor keys_t = torch::roll(keys, 5, 0).t().contiguous();
      const torch::Tensor values_ring = torch::roll(values, 5, 0).contiguous();
      std::vector<int> slot(S);
      for (int j = 0; j < S; ++j) slot[j] = (j + 5) % S;
      std::vector<float> our_scores(S), our_out(head_dim);
      for (int h = 0; h < heads; ++h) {
        const torch::Tensor qh = q[h][0].contiguous();
        lm::exact::attention_scores(qh.data_ptr<float>(), keys_t.data_ptr<float>() + h * head_dim * S,
                                    S, slot.data(), S, head_dim, our_scores.data());
        ASSERT_TRUE(same_floats(our_scores.data(), scores[h][0].data_ptr<float>(), S))
            << "scores: head_dim " << head_dim << ", S " << S << ", head " << h;
        const torch::Tensor wh = weights[h][0].contiguous();
        lm::exact::attention_values(wh.data_ptr<float>(), values_ring.data_ptr<float>() + h * head_dim,
                                    dim, slot.data(), S, head_dim, our_out.data());
        ASSERT_TRUE(same_floats(our_out.data(), out[h][0].data_ptr<float>(), head_dim))
            << "values: head_dim " << head_dim << ", S " << S << ", head " << h;
      }
      if (lm::exact::attention_values_are_chains(S, head_dim)) {
        // All heads at once, from key-major weights.
        const torch::Tensor weights_t = weights.select(1, 0).t().contiguous();  // [S, heads]
        std::vector<float> all(dim);
        lm::exact::attention_values_all_heads(weights_t.data_ptr<float>(), values_ring.data_ptr<float>(),
                                              dim, slot.data(), S, heads, head_dim, all.data());
        const torch::Tensor expected = out.select(1, 0).contiguous();  // [heads, hd]
        ASSERT_TRUE(same_floats(all.data(), expected.data_ptr<float>(), dim))
            << "all heads: head_dim " << head_dim << ", S " << S;
      }
    }
  }
}

TEST_F(ExactKernelTest, SoftmaxOverCodebooksRoundsAsTorchSoftmax) {
  torch::manual_seed(14);
  for (const int K : {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 32}) {
    for (const int card : {1024, 1000, 5}) {
      const torch::Tensor logits = torch::randn({1, K, 1, card}) * 5;
      const torch::Tensor expected =
          torch::softmax(logits.permute({0, 3, 1, 2}), 1)[0].select(2, 0).t().contiguous();
      torch::Tensor ours = logits.reshape({K, card}).clone();
      lm::exact::softmax_over_codebooks(ours.data_ptr<float>(), K, card);
      ASSERT_TRUE(same_floats(ours.data_ptr<float>(), expected.data_ptr<float>(), K * card))
          << K << " codebooks of " << card;
    }
  }
}

TEST_F(ExactKernelTest, LayerNormAndAttentionSoftmaxRoundAsLibTorch) {
  torch::manual_seed(15);
  for (const int n : {16, 200, 40, 48, 64, 8, 5, 13, 24, 256, 300, 800, 2049}) {
    for (int trial = 0; trial < 300; ++trial) {
      const double scale = 1 + trial % 7 * 3.0;
      const torch::Tensor x = torch::randn({1, 1, n}) * scale + (trial % 5) - 2;
      const torch::Tensor gamma = torch::randn({n}), beta = torch::randn({n});
      const torch::Tensor expected_norm =
          F::layer_norm(x, F::LayerNormFuncOptions({n}).weight(gamma).bias(beta).eps(1e-5)).contiguous();
      std::vector<float> y(n);
      lm::exact::layer_norm(x.data_ptr<float>(), gamma.data_ptr<float>(), beta.data_ptr<float>(),
                            1e-5f, n, y.data());
      ASSERT_TRUE(same_floats(y.data(), expected_norm.data_ptr<float>(), n)) << "layer_norm " << n << ", trial " << trial;

      const torch::Tensor expected_softmax = torch::softmax(x.view({1, 1, n}), -1).contiguous();
      std::vector<float> p(x.data_ptr<float>(), x.data_ptr<float>() + n);
      lm::exact::softmax_last_dim(p.data(), n);
      ASSERT_TRUE(same_floats(p.data(), expected_softmax.data_ptr<float>(), n)) << "softmax " << n << ", trial " << trial;
    }
  }
}

TEST_F(ExactKernelTest, SinusoidalEmbeddingRoundsAsTheReferenceOperations) {
  for (const int dim : {16, 200, 64, 34}) {
    const int64_t half = dim / 2;
    const torch::Tensor divisors = torch::pow(torch::scalar_tensor(10000, torch::kFloat32),
                                              torch::arange(half, torch::kInt64).view({1, 1, -1}) / (half - 1));
    std::vector<float> ours(dim);
    for (const int64_t position : {0, 1, 2, 7, 261, 262, 1000, 33333, 1 << 20}) {
      const torch::Tensor phase = (torch::arange(1, torch::kInt64).view({1, -1, 1}) + position) / divisors;
      const torch::Tensor expected = torch::cat({torch::cos(phase), torch::sin(phase)}, -1).contiguous();
      lm::exact::sin_embedding(position, divisors.data_ptr<float>(), static_cast<int>(half), ours.data());
      ASSERT_TRUE(same_floats(ours.data(), expected.data_ptr<float>(), dim))
          << "dim " << dim << ", position " << position;
    }
  }
}

// ---------------------------------------------------------------- fast vs reference

// Runs both steppers on the same codes (drawn from the reference's own
// probabilities, so that the LM sees the sequences it would code) and compares
// every probability bit for bit.
void expect_fast_equals_reference(const LmModel& lm, int num_codebooks, int steps) {
  ASSERT_EQ(lm.kernels(), LmKernels::kFast) << lm.fast_kernels_unavailable_reason();
  auto fast = lm::make_fast_lm_stepper(lm.shared_weights(), num_codebooks);
  auto reference = make_reference_lm_stepper(lm.shared_weights(), num_codebooks);
  const int card = lm.config().card;
  std::mt19937 random(42);
  std::vector<int64_t> codes(num_codebooks);
  for (int t = 0; t < steps; ++t) {
    const float* a = fast->step(t == 0 ? nullptr : codes.data());
    const float* b = reference->step(t == 0 ? nullptr : codes.data());
    ASSERT_TRUE(same_floats(a, b, static_cast<size_t>(num_codebooks) * card))
        << "step " << t << " of " << steps << ", " << num_codebooks << " codebooks";
    for (int k = 0; k < num_codebooks; ++k) {
      std::discrete_distribution<int> draw(b + static_cast<size_t>(k) * card,
                                           b + static_cast<size_t>(k + 1) * card);
      codes[k] = draw(random);
    }
  }
}

class FastLmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!lm::exact::cpu_supported()) GTEST_SKIP() << lm::exact::cpu_unsupported_reason();
  }
};

TEST_F(FastLmTest, OfficialSizeEqualsTheReferenceBeyondThePastContext) {
  // dim 200, 5 layers, 8 heads, 262 frames of context: past the point where the
  // oldest state leaves (and the initial zero state with it).
  const LmModel lm = LmModel::with_random_weights(LmConfig::for_codec(EncodecConfig::official_24khz()), 3);
  expect_fast_equals_reference(lm, 2, 275);
  expect_fast_equals_reference(lm, 8, 40);
}

TEST_F(FastLmTest, WidthsThatTakeTheOtherKernelPathsEqualTheReference) {
  // head_dim 8, 6, 5 and 2: the value product's dot-style rows (groups of four,
  // pairs, singles), few-row key projections by the small kernel up to 9 rows
  // (dim 64), and a short past context that wraps the cache ring often.
  for (const auto& [dim, past] : std::vector<std::pair<int, int>>{{64, 60}, {48, 70}, {40, 50}, {16, 230}}) {
    LmConfig config;
    config.dim = dim;
    config.n_q = 9;
    config.past_context = past;
    const LmModel lm = LmModel::with_random_weights(config, static_cast<uint64_t>(dim));
    SCOPED_TRACE("dim " + std::to_string(dim));
    expect_fast_equals_reference(lm, 9, past + 20);
  }
}

}  // namespace
}  // namespace encodec
