// The deterministic LM kernels ("det1", LmKernels::kDeterministic): every tier
// this CPU has (AVX-512, AVX2, portable C++) gives the same bits, kernel by
// kernel and for whole LM steps and coded bytes, whatever the thread count;
// each kernel computes what it claims (against double-precision or libm values);
// the network is the reference's (its probabilities near the reference
// stepper's); ENCODEC_CPU's values are parsed and refused as documented.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "encodec/lm.h"
#include "fast/cpu_tier.h"
#include "lm/det_kernels.h"
#include "lm/lm_stepper.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

using fast::VectorIsa;

std::vector<VectorIsa> tiers_of_this_cpu() {
  std::vector<VectorIsa> tiers{VectorIsa::kPortable};
  const VectorIsa best = fast::best_cpu_tier();
  if (best >= VectorIsa::kAvx2) tiers.push_back(VectorIsa::kAvx2);
  if (best >= VectorIsa::kAvx512) tiers.push_back(VectorIsa::kAvx512);
  return tiers;
}

// Runs the test body's LM work under `tier`, restoring the process's tier after.
class TierScope {
 public:
  explicit TierScope(VectorIsa tier) : saved_(fast::cpu_tier()) { fast::set_cpu_tier(tier); }
  ~TierScope() { fast::set_cpu_tier(saved_); }

 private:
  VectorIsa saved_;
};

std::vector<float> random_floats(size_t count, float spread, uint32_t seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(count);
  for (float& value : values) value = normal(random);
  return values;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ------------------------------------------------------------------ ENCODEC_CPU

TEST(CpuTierTest, EnvironmentValuesNameTheTiers) {
  const auto everything = [](const char*) { return true; };
  EXPECT_EQ(fast::cpu_tier_for_environment("avx512", everything), VectorIsa::kAvx512);
  EXPECT_EQ(fast::cpu_tier_for_environment("avx2", everything), VectorIsa::kAvx2);
  EXPECT_EQ(fast::cpu_tier_for_environment("portable", everything), VectorIsa::kPortable);
  EXPECT_EQ(fast::cpu_tier_for_environment(nullptr, everything), VectorIsa::kAvx512);
  EXPECT_EQ(fast::cpu_tier_for_environment("", everything), VectorIsa::kAvx512);
  try {
    fast::cpu_tier_for_environment("sse4", everything);
    ADD_FAILURE() << "an unknown tier was accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("ENCODEC_CPU=sse4"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("avx512, avx2 or portable"), std::string::npos) << error.what();
  }
  EXPECT_THROW(fast::cpu_tier_for_environment("AVX2", everything), std::runtime_error);
}

TEST(CpuTierTest, ATierTheCpuLacksIsRefusedSayingWhatIsMissing) {
  const auto avx2_only = [](const char* feature) { return std::string(feature) != "avx512f"; };
  const auto nothing = [](const char*) { return false; };
  try {
    fast::cpu_tier_for_environment("avx512", avx2_only);
    ADD_FAILURE() << "avx512 was accepted on a CPU without AVX-512";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("ENCODEC_CPU=avx512"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("avx512f"), std::string::npos) << error.what();
  }
  EXPECT_EQ(fast::cpu_tier_for_environment(nullptr, avx2_only), VectorIsa::kAvx2);
  EXPECT_THROW(fast::cpu_tier_for_environment("avx2", nothing), std::runtime_error);
  EXPECT_EQ(fast::cpu_tier_for_environment("portable", nothing), VectorIsa::kPortable);
  EXPECT_EQ(fast::cpu_tier_for_environment(nullptr, nothing), VectorIsa::kPortable);
  if (fast::best_cpu_tier() != VectorIsa::kAvx512) {
    EXPECT_THROW(fast::set_cpu_tier(VectorIsa::kAvx512), std::invalid_argument);
  }
}

// ------------------------------------------------------------------ kernels

TEST(DetKernelsTest, EveryKernelGivesTheSameBitsOnEveryTier) {
  const auto tiers = tiers_of_this_cpu();
  if (tiers.size() == 1) GTEST_SKIP() << "this CPU has only the portable tier";
  const lm::det::TierKernels& portable = lm::det::tier_kernels(VectorIsa::kPortable);
  for (const int n : {1, 7, 15, 16, 17, 200, 263, 1024, 1031}) {
    const std::vector<float> x = random_floats(n, 3.0f, 1u + n);
    // Linear, with a depth of 200 and n outputs (partial panels included).
    const int depth = 200;
    const std::vector<float> w = random_floats(static_cast<size_t>(n) * depth, 0.1f, 2u + n);
    const std::vector<float> packed = lm::det::pack_columns(w.data(), n, depth);
    const std::vector<float> input = random_floats(depth, 1.0f, 3u + n);
    // Attention: 8 heads of 25 (a partial vector per head) over n keys.
    const int heads = 8, head_dim = 25, dim = heads * head_dim;
    const std::vector<float> keys_t = random_floats(static_cast<size_t>(head_dim) * n, 1.0f, 4u + n);
    const std::vector<float> values = random_floats(static_cast<size_t>(n) * dim, 1.0f, 5u + n);
    const std::vector<float> weights = random_floats(static_cast<size_t>(heads) * n, 0.1f, 6u + n);
    auto run = [&](const lm::det::TierKernels& k) {
      std::vector<std::vector<float>> out;
      std::vector<float> y(n);
      k.linear(input.data(), packed.data(), x.data(), n, depth, y.data());
      out.push_back(y);
      k.attention_scores(input.data(), keys_t.data(), n, n, head_dim, y.data());
      out.push_back(y);
      std::vector<float> attention(dim);
      k.attention_values(weights.data(), n, values.data(), n, heads, head_dim, false, attention.data());
      k.attention_values(weights.data(), n, values.data(), n, heads, head_dim, true, attention.data());
      out.push_back(attention);
      y = x;
      k.softmax(y.data(), n);
      out.push_back(y);
      k.gelu(x.data(), y.data(), n);
      out.push_back(y);
      k.exp(x.data(), y.data(), n);
      out.push_back(y);
      return out;
    };
    const auto expected = run(portable);
    for (const VectorIsa tier : tiers) {
      const auto got = run(lm::det::tier_kernels(tier));
      const char* names[] = {"linear", "attention_scores", "attention_values", "softmax", "gelu", "exp"};
      for (size_t i = 0; i < expected.size(); ++i) {
        EXPECT_TRUE(same_bits(got[i], expected[i]))
            << names[i] << " on " << fast::vector_isa_name(tier) << ", n = " << n;
      }
    }
  }
}

TEST(DetKernelsTest, KernelsComputeWhatTheyClaim) {
  const lm::det::TierKernels& k = lm::det::tier_kernels(fast::best_cpu_tier());
  // exp: about 1 ulp of libm's (here) on the range the softmaxes use; 0 below -86.
  std::vector<float> x, y;
  for (float v = -90.0f; v <= 10.0f; v += 0.0137f) x.push_back(v);
  y.resize(x.size());
  k.exp(x.data(), y.data(), static_cast<int>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] < -86.0f) {
      EXPECT_EQ(y[i], 0.0f) << x[i];
      continue;
    }
    const double expected = std::exp(static_cast<double>(x[i]));
    ASSERT_NEAR(y[i], expected, 2.5e-7 * expected) << "exp(" << x[i] << ")";
  }
  // GELU: x Phi(x) within 2e-7 (times |x| beyond 1).
  x.clear();
  for (float v = -15.0f; v <= 15.0f; v += 0.00731f) x.push_back(v);
  y.resize(x.size());
  k.gelu(x.data(), y.data(), static_cast<int>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double expected = 0.5 * v * std::erfc(-v / std::sqrt(2.0));
    ASSERT_NEAR(y[i], expected, 2e-7 * std::max(1.0, std::abs(v))) << "gelu(" << v << ")";
  }
  // Softmax: sums to 1, ratios as exp of the differences.
  std::vector<float> logits = random_floats(1024, 4.0f, 9);
  std::vector<float> p = logits;
  k.softmax(p.data(), 1024);
  double total = 0, max_logit = logits[0];
  for (float v : logits) max_logit = std::max<double>(max_logit, v);
  double denominator = 0;
  for (float v : logits) denominator += std::exp(v - max_logit);
  for (size_t i = 0; i < p.size(); ++i) {
    total += p[i];
    const double expected = std::exp(logits[i] - max_logit) / denominator;
    ASSERT_NEAR(p[i], expected, 1e-6 * expected + 1e-12) << i;
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
  // Linear and layer norm against double precision.
  const int n = 300, depth = 200;
  const std::vector<float> w = random_floats(static_cast<size_t>(n) * depth, 0.1f, 10);
  const std::vector<float> bias = random_floats(n, 1.0f, 11), input = random_floats(depth, 1.0f, 12);
  const std::vector<float> packed = lm::det::pack_columns(w.data(), n, depth);
  std::vector<float> out(n);
  k.linear(input.data(), packed.data(), bias.data(), n, depth, out.data());
  for (int c = 0; c < n; ++c) {
    double expected = bias[c];
    for (int d = 0; d < depth; ++d) expected += static_cast<double>(w[c * depth + d]) * input[d];
    ASSERT_NEAR(out[c], expected, 1e-5) << c;
  }
  const std::vector<float> gamma = random_floats(depth, 1.0f, 13), beta = random_floats(depth, 1.0f, 14);
  lm::det::layer_norm(input.data(), gamma.data(), beta.data(), 1e-5f, depth, out.data());
  double mean = 0, var = 0;
  for (float v : input) mean += v / depth;
  for (float v : input) var += (v - mean) * (v - mean) / depth;
  for (int i = 0; i < depth; ++i) {
    ASSERT_NEAR(out[i], (input[i] - mean) / std::sqrt(var + 1e-5) * gamma[i] + beta[i], 1e-5) << i;
  }
}

TEST(DetKernelsTest, DoublePrecisionFunctionsMatchLibm) {
  for (double v = -700; v < 700; v += 0.713) {
    ASSERT_NEAR(lm::det::exp_double(v), std::exp(v), 4e-16 * std::exp(v)) << v;
  }
  for (double v = 1e-300; v < 1e300; v *= 3.7) {
    ASSERT_NEAR(lm::det::log_double(v), std::log(v), 4e-16 * std::abs(std::log(v)) + 1e-16) << v;
  }
  EXPECT_THROW(lm::det::log_double(0.0), std::invalid_argument);
  for (double v = -2e6; v < 2e6; v += 977.31) {
    double sine = 0, cosine = 0;
    lm::det::sin_cos_double(v, &sine, &cosine);
    ASSERT_NEAR(sine, std::sin(v), 1e-15) << v;
    ASSERT_NEAR(cosine, std::cos(v), 1e-15) << v;
  }
  // The positions' divisors: max_period ** (i / (half - 1)), within one float ulp.
  const std::vector<float> divisors = lm::det::position_divisors(100, 10000);
  for (int i = 0; i < 100; ++i) {
    const double expected = std::pow(10000.0, i / 99.0);
    ASSERT_NEAR(divisors[i], expected, 6e-8 * expected) << i;
  }
  EXPECT_EQ(divisors[0], 1.0f);
  EXPECT_EQ(divisors[99], 10000.0f);
}

// ------------------------------------------------------------------ LM steps

// The probabilities of `steps` LM steps on pseudo-random codes, under `tier`.
std::vector<float> step_probabilities(const LmModel& lm, int num_codebooks, int steps, VectorIsa tier) {
  TierScope scope(tier);
  auto stepper = make_lm_stepper(lm, num_codebooks);
  std::mt19937 random(77);
  std::vector<int64_t> codes(num_codebooks);
  std::vector<float> all;
  const size_t count = static_cast<size_t>(num_codebooks) * lm.config().card;
  for (int t = 0; t < steps; ++t) {
    const float* p = stepper->step(t == 0 ? nullptr : codes.data());
    all.insert(all.end(), p, p + count);
    for (int64_t& code : codes) code = static_cast<int64_t>(random() % lm.config().card);
  }
  return all;
}

// The official width (dim 200, 8 heads of 25) with a short past, so that the
// key ring wraps within the test.
LmModel official_width_lm() {
  LmConfig config;
  config.n_q = 4;
  config.card = 1024;
  config.past_context = 20;
  return LmModel::with_random_weights(config, 5).with_kernels(LmKernels::kDeterministic);
}

TEST(DetLmTest, StepsGiveTheSameProbabilitiesOnEveryTierAndThreadCount) {
  const LmModel lm = official_width_lm();
  const int steps = 30;  // past the ring's 21 slots
  const std::vector<float> expected = step_probabilities(lm, 4, steps, VectorIsa::kPortable);
  for (const VectorIsa tier : tiers_of_this_cpu()) {
    EXPECT_TRUE(same_bits(step_probabilities(lm, 4, steps, tier), expected)) << fast::vector_isa_name(tier);
  }
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_TRUE(same_bits(step_probabilities(lm, 4, steps, fast::best_cpu_tier()), expected));
  at::set_num_threads(threads);
}

TEST(DetLmTest, ProbabilitiesAreTheReferenceNetworksToFloatRounding) {
  // Not the same bits (other sums and functions), but the same network: every
  // probability within 2e-5 of the reference stepper's, past the ring's wrap.
  const LmModel lm = official_width_lm();
  const int steps = 30;
  const std::vector<float> det = step_probabilities(lm, 4, steps, fast::best_cpu_tier());
  const std::vector<float> reference =
      step_probabilities(lm.with_kernels(LmKernels::kReference), 4, steps, fast::best_cpu_tier());
  ASSERT_EQ(det.size(), reference.size());
  double worst = 0;
  size_t differing = 0;
  for (size_t i = 0; i < det.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(det[i]) - reference[i]));
    differing += det[i] != reference[i];
  }
  EXPECT_LT(worst, 2e-5);
  EXPECT_GT(differing, 0u) << "det1 was expected to round differently from the reference";
}

// ------------------------------------------------------------------ coding

class DetLmCodingTest : public ::testing::Test {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
};

TEST_F(DetLmCodingTest, BytesCodedOnOneTierDecodeOnEveryOtherToTheSameCodes) {
  int cases = 0;
  for (const testing::GoldenCase& golden : testing::golden_lm_cases()) {
    const LmModel lm = testing::golden_lm(golden.model, LmKernels::kDeterministic);
    const torch::Tensor codes = testing::golden_chunk_codes(golden, 0);
    std::string expected;
    {
      TierScope scope(VectorIsa::kPortable);
      expected = lm_encode_chunk(lm, codes);
    }
    for (const VectorIsa encoder_tier : tiers_of_this_cpu()) {
      std::string bytes;
      {
        TierScope scope(encoder_tier);
        bytes = lm_encode_chunk(lm, codes);
      }
      EXPECT_TRUE(bytes == expected) << golden.label << ": bytes on " << fast::vector_isa_name(encoder_tier);
      for (const VectorIsa decoder_tier : tiers_of_this_cpu()) {
        TierScope scope(decoder_tier);
        std::istringstream in(bytes);
        const torch::Tensor decoded = lm_decode_chunk(lm, in, golden.num_codebooks, codes.size(1));
        EXPECT_TRUE(torch::equal(decoded, codes))
            << golden.label << ": coded on " << fast::vector_isa_name(encoder_tier) << ", decoded on "
            << fast::vector_isa_name(decoder_tier);
      }
    }
    // The reference coder cannot read det1 bytes: they are another code.
    EXPECT_FALSE(expected == lm_encode_chunk(testing::golden_lm(golden.model), codes)) << golden.label;
    ++cases;
  }
  EXPECT_GT(cases, 0);
}

}  // namespace
}  // namespace encodec
