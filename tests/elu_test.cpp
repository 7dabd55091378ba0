// The fast paths' ELU: the same bits from every vector version, and exp(x) - 1
// to within float rounding.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "fast/fast_layers.h"
#include "golden.h"

namespace encodec::fast {
namespace {

std::vector<float> test_inputs() {
  std::vector<float> values;
  for (const float scale : {0.01f, 1.0f, 5.0f, 30.0f}) {
    for (const float value : testing::random_normal_values(997, 11)) values.push_back(scale * value);
  }
  for (const float value : {0.0f, -0.0f, NAN, INFINITY, -INFINITY, -20.0f, std::nextafter(-20.0f, 0.0f),
                            -19.999f, -17.0f, -87.5f, -1000.0f, -FLT_MIN, -std::ldexp(1.0f, -140),
                            -1e-8f, 1e-8f, FLT_MAX, -FLT_MAX, 0.5f * std::log(2.0f), -0.5f * std::log(2.0f)}) {
    values.push_back(value);
  }
  return values;
}

std::vector<VectorIsa> isas_of_this_cpu() {
  std::vector<VectorIsa> isas{VectorIsa::kPortable};
  if (best_vector_isa() >= VectorIsa::kAvx2) isas.push_back(VectorIsa::kAvx2);
  if (best_vector_isa() >= VectorIsa::kAvx512) isas.push_back(VectorIsa::kAvx512);
  return isas;
}

// A million inputs evenly over [-21, 1]: every reduction step n the clamp
// allows, and within each the rounding cases of the reduction and the polynomial.
std::vector<float> dense_inputs() {
  constexpr int kCount = 1 << 20;
  std::vector<float> values(kCount);
  for (int i = 0; i < kCount; ++i) values[i] = -21.0f + 22.0f * static_cast<float>(i) / kCount;
  return values;
}

TEST(EluTest, EveryVectorVersionGivesThePortableBits) {
  const std::vector<float> dense = dense_inputs();
  std::vector<float> dense_expected(dense.size());
  copy_elu(dense.data(), dense_expected.data(), static_cast<int64_t>(dense.size()), VectorIsa::kPortable);
  for (const VectorIsa isa : isas_of_this_cpu()) {
    std::vector<float> out(dense.size());
    copy_elu(dense.data(), out.data(), static_cast<int64_t>(dense.size()), isa);
    for (size_t i = 0; i < dense.size(); ++i) {
      ASSERT_EQ(std::memcmp(&out[i], &dense_expected[i], sizeof(float)), 0)
          << "isa " << static_cast<int>(isa) << " input " << dense[i];
    }
  }

  const std::vector<float> inputs = test_inputs();
  std::vector<float> expected(inputs.size());
  copy_elu(inputs.data(), expected.data(), static_cast<int64_t>(inputs.size()), VectorIsa::kPortable);
  for (const VectorIsa isa : isas_of_this_cpu()) {
    // Every length up to 40 from every offset of the first 17: the vector
    // bodies, their tails and unaligned starts.
    for (int64_t offset = 0; offset < 17; ++offset) {
      for (int64_t count = 1; count <= 40; ++count) {
        std::vector<float> out(count + 1, 123.0f);
        copy_elu(inputs.data() + offset, out.data(), count, isa);
        for (int64_t i = 0; i < count; ++i) {
          ASSERT_EQ(std::memcmp(&out[i], &expected[offset + i], sizeof(float)), 0)
              << "isa " << static_cast<int>(isa) << " input " << inputs[offset + i];
        }
        ASSERT_EQ(out[count], 123.0f) << "wrote past " << count << " values";
      }
    }
    std::vector<float> in_place = inputs;
    copy_elu(in_place.data(), in_place.data(), static_cast<int64_t>(in_place.size()), isa);
    ASSERT_EQ(std::memcmp(in_place.data(), expected.data(), inputs.size() * sizeof(float)), 0);
  }
}

TEST(EluTest, IsExpMinusOneWithinRounding) {
  const std::vector<float> inputs = test_inputs();
  std::vector<float> out(inputs.size());
  copy_elu(inputs.data(), out.data(), static_cast<int64_t>(inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const float x = inputs[i];
    if (std::isnan(x)) {
      EXPECT_EQ(out[i], 0.0f);
    } else if (x > 0) {
      EXPECT_EQ(out[i], x);
    } else {
      // exp(x) is within an ulp or so of 1 near 0, so after subtracting 1 the
      // error is about an ulp of 1 whatever the result's size.
      const double exact = std::expm1(static_cast<double>(x));
      EXPECT_NEAR(out[i], exact, 2 * FLT_EPSILON) << "x = " << x;
    }
  }
  // The far tail is exactly -1, as fp32 exp(x) - 1 is from x < -17.33.
  const float far[] = {-17.5f, -20.0f, -1000.0f, -INFINITY};
  float far_out[4];
  copy_elu(far, far_out, 4);
  for (const float value : far_out) EXPECT_EQ(value, -1.0f);
}

}  // namespace
}  // namespace encodec::fast
