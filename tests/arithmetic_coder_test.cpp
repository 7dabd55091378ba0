// The arithmetic coder and quantized CDF of LM entropy coding: the CDF against
// LibTorch evaluating the reference's expression, bytes against the Python
// package's for fixed inputs, round trips on random distributions of many sizes,
// segments, incremental feeding, corrupt input and the reference's overflow limit.
#include "lm/arithmetic_coder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>
#include <string>
#include <vector>

#include "encodec/ecdc.h"

namespace encodec::lm {
namespace {

// build_stable_quantized_cdf written with LibTorch operations, as the reference
// writes it in Python (the Python floats become float32 scalars).
std::vector<uint32_t> reference_cdf(const torch::Tensor& pdf) {
  const int64_t size = pdf.numel();
  const double total_range = static_cast<double>(1 << 24);
  const double alpha = 2.0 * static_cast<double>(size) / total_range;
  torch::Tensor p = (pdf / 1e-8).floor() * 1e-8;
  torch::Tensor ranges = (((1 - alpha) * total_range) * p).floor().to(torch::kLong);
  ranges += 2;
  const torch::Tensor cdf = torch::cumsum(ranges, -1);
  std::vector<uint32_t> out(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) out[i] = static_cast<uint32_t>(cdf[i].item<int64_t>());
  return out;
}

std::vector<uint32_t> cdf_of(const torch::Tensor& pdf) {
  const torch::Tensor contiguous = pdf.contiguous();
  std::vector<uint32_t> cdf(static_cast<size_t>(pdf.numel()));
  build_quantized_cdf(contiguous.data_ptr<float>(), static_cast<int>(pdf.numel()), cdf.data());
  return cdf;
}

std::string bytes_of(const std::vector<int>& values) {
  std::string bytes;
  for (int value : values) bytes.push_back(static_cast<char>(value));
  return bytes;
}

std::string encode(const std::vector<std::vector<uint32_t>>& cdfs, const std::vector<int>& symbols) {
  ArithmeticEncoder encoder;
  for (size_t i = 0; i < symbols.size(); ++i) {
    const std::vector<uint32_t>& cdf = cdfs[i % cdfs.size()];
    encoder.push(symbols[i] == 0 ? 0 : cdf[symbols[i] - 1], cdf[symbols[i]]);
  }
  encoder.flush();
  return encoder.take_bytes();
}

TEST(QuantizedCdfTest, EqualsTheReferenceExpressionForRandomPdfsOfManySizes) {
  torch::manual_seed(7);
  for (int size : {1, 2, 3, 7, 8, 9, 15, 16, 17, 100, 1023, 1024, 1025, 4000}) {
    for (double scale : {0.1, 1.0, 4.0, 20.0}) {
      const torch::Tensor pdf = torch::softmax(torch::randn({size}) * scale, 0);
      EXPECT_EQ(cdf_of(pdf), reference_cdf(pdf)) << "size " << size << ", scale " << scale;
    }
  }
}

TEST(QuantizedCdfTest, EqualsTheReferenceExpressionAtEdges) {
  // One-hot, uniform, values on and next to multiples of 1e-8, and a strided view.
  std::vector<torch::Tensor> pdfs = {torch::zeros({1024}), torch::full({1024}, 1.0f / 1024)};
  pdfs[0][17] = 1.0f;
  torch::Tensor on_grid = torch::arange(1, 1025, torch::kFloat32) * 1e-8;
  pdfs.push_back(on_grid);
  pdfs.push_back(torch::nextafter(on_grid, torch::zeros_like(on_grid)));
  pdfs.push_back(torch::nextafter(on_grid, torch::ones_like(on_grid)));
  for (const torch::Tensor& pdf : pdfs) EXPECT_EQ(cdf_of(pdf), reference_cdf(pdf));
  // The reference's own example sizes: every range is at least 2 wide.
  const std::vector<uint32_t> cdf = cdf_of(torch::tensor({0.5f, 0.25f, 0.125f, 0.125f}));
  EXPECT_EQ(cdf, (std::vector<uint32_t>{8388606, 12582910, 14680063, 16777216}));
}

TEST(ArithmeticCoderTest, WritesThePythonPackagesBytes) {
  // Bytes printed by encodec.quantization.ac with the same pdfs and symbols.
  const std::vector<uint32_t> cdf = cdf_of(torch::tensor({0.5f, 0.25f, 0.125f, 0.125f}));
  EXPECT_EQ(encode({cdf}, {0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 3, 1, 2, 0, 1, 3, 3, 3, 0, 2}),
            bytes_of({218, 191, 48, 201, 93, 13, 71, 247, 3}));

  torch::manual_seed(0);
  const torch::Tensor pdf = torch::softmax(torch::randn({1024}) * 4, 0);
  const std::vector<uint32_t> skewed = cdf_of(pdf);
  EXPECT_EQ(std::vector<uint32_t>(skewed.begin(), skewed.begin() + 5),
            (std::vector<uint32_t>{2, 4, 6, 8, 31}));
  EXPECT_EQ(skewed.back(), 16776857u);
  const int top = static_cast<int>(pdf.argmax().item<int64_t>());
  EXPECT_EQ(encode({skewed}, {top, 0, 1023, 512, top}),
            bytes_of({202, 95, 9, 255, 127, 25, 251, 117, 209, 242, 87, 2}));
}

// Random pdfs and symbols, as the reference's own test: cardinality up to 4000,
// 100 to 500 steps, symbols drawn from the pdf or (to force rare codes) uniformly.
TEST(ArithmeticCoderTest, RoundTripsRandomPdfsOfManySizes) {
  std::mt19937 random(1234);
  torch::manual_seed(1234);
  for (int trial = 0; trial < 40; ++trial) {
    const int size = 1 + static_cast<int>(random() % 4000);
    const int steps = 100 + static_cast<int>(random() % 400);
    const double sharpness = trial % 4 == 0 ? 0.1 : (trial % 4) * 3.0;
    const bool uniform_symbols = trial % 3 == 0;
    std::vector<std::vector<uint32_t>> cdfs;
    std::vector<int> symbols;
    for (int step = 0; step < steps; ++step) {
      const torch::Tensor pdf = torch::softmax(torch::randn({size}) * sharpness, 0);
      cdfs.push_back(cdf_of(pdf));
      symbols.push_back(uniform_symbols ? static_cast<int>(random() % size)
                                        : static_cast<int>(torch::multinomial(pdf, 1).item<int64_t>()));
    }
    const std::string bytes = encode(cdfs, symbols);
    ArithmeticDecoder decoder;
    decoder.feed(bytes.data(), bytes.size());
    for (int step = 0; step < steps; ++step) {
      const std::optional<int> symbol = decoder.pull(cdfs[step].data(), size);
      ASSERT_TRUE(symbol.has_value()) << "trial " << trial << " step " << step;
      ASSERT_EQ(*symbol, symbols[step]) << "trial " << trial << " step " << step;
    }
    // The decoder reads exactly the encoder's bytes.
    EXPECT_EQ(decoder.unread_bytes(), 0u) << "trial " << trial;
  }
}

TEST(ArithmeticCoderTest, ByteAtATimeFeedingDecodesTheSameAndNeverConsumesPartially) {
  torch::manual_seed(3);
  const int size = 300, steps = 400;
  std::vector<std::vector<uint32_t>> cdfs;
  std::vector<int> symbols;
  for (int step = 0; step < steps; ++step) {
    const torch::Tensor pdf = torch::softmax(torch::randn({size}) * 3, 0);
    cdfs.push_back(cdf_of(pdf));
    symbols.push_back(static_cast<int>(torch::multinomial(pdf, 1).item<int64_t>()));
  }
  const std::string bytes = encode(cdfs, symbols);
  ArithmeticDecoder decoder;
  size_t fed = 0;
  for (int step = 0; step < steps; ++step) {
    std::optional<int> symbol;
    while (!(symbol = decoder.pull(cdfs[step].data(), size))) {
      ASSERT_LT(fed, bytes.size()) << "ran out of bytes at step " << step;
      // A refused pull asked for more bits than were there.
      EXPECT_GT(static_cast<size_t>(decoder.bits_needed()), 8 * decoder.unread_bytes());
      decoder.feed(bytes.data() + fed++, 1);
    }
    ASSERT_EQ(*symbol, symbols[step]) << "step " << step;
  }
  EXPECT_EQ(fed, bytes.size());
}

TEST(ArithmeticCoderTest, SegmentsDecodeOneAfterTheOther) {
  torch::manual_seed(5);
  const int size = 50;
  ArithmeticEncoder encoder;
  std::vector<std::vector<uint32_t>> cdfs;
  std::vector<int> symbols;
  std::vector<int> segment_ends;
  for (int segment = 0; segment < 6; ++segment) {
    for (int i = 0; i < 1 + segment * 7; ++i) {
      const torch::Tensor pdf = torch::softmax(torch::randn({size}) * 2, 0);
      cdfs.push_back(cdf_of(pdf));
      symbols.push_back(static_cast<int>(torch::multinomial(pdf, 1).item<int64_t>()));
      const std::vector<uint32_t>& cdf = cdfs.back();
      encoder.push(symbols.back() == 0 ? 0 : cdf[symbols.back() - 1], cdf[symbols.back()]);
    }
    encoder.flush();
    segment_ends.push_back(static_cast<int>(symbols.size()));
  }
  const std::string bytes = encoder.take_bytes();
  ArithmeticDecoder decoder;
  decoder.feed(bytes.data(), bytes.size());
  size_t next_end = 0;
  for (size_t i = 0; i < symbols.size(); ++i) {
    ASSERT_EQ(decoder.pull(cdfs[i].data(), size), symbols[i]) << "symbol " << i;
    if (static_cast<int>(i + 1) == segment_ends[next_end]) {
      decoder.end_segment();
      ++next_end;
    }
  }
  EXPECT_EQ(decoder.unread_bytes(), 0u);
}

TEST(ArithmeticCoderTest, CorruptBytesDecodeOrFailCleanly) {
  torch::manual_seed(9);
  std::mt19937 random(9);
  const int size = 1024;
  const torch::Tensor pdf = torch::softmax(torch::randn({size}) * 6, 0);
  const std::vector<uint32_t> cdf = cdf_of(pdf);
  int failures = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(64, '\0');
    for (char& byte : bytes) byte = static_cast<char>(random());
    ArithmeticDecoder decoder;
    decoder.feed(bytes.data(), bytes.size());
    try {
      int decoded = 0;
      while (decoder.pull(cdf.data(), size)) ++decoded;  // ends when the bytes do
      EXPECT_GT(decoded, 0);
    } catch (const EcdcFormatError&) {
      ++failures;  // bits that fall between two symbols' ranges
    }
  }
  std::cout << "[ corrupt  ] " << failures << " of 200 random streams detected as corrupt\n";
}

TEST(ArithmeticCoderTest, MoreThan61PendingBitsFailAsTheReferenceAsserts) {
  // Bits that put the decoder exactly on the midpoint of its range (a 1, then
  // zeros) make it pick, again and again, the symbol that straddles that
  // power of two: no leading bit can be settled, the pending bits pile up.
  const std::vector<uint32_t> cdf = cdf_of(torch::full({1024}, 1.0f / 1024));
  ArithmeticDecoder decoder;
  std::string bytes(64, '\0');
  bytes[0] = 1;
  decoder.feed(bytes.data(), bytes.size());
  std::vector<int> symbols;
  try {
    for (int i = 0; i < 100; ++i) {
      const std::optional<int> symbol = decoder.pull(cdf.data(), 1024);
      ASSERT_TRUE(symbol.has_value());
      symbols.push_back(*symbol);
    }
    FAIL() << "the decoder never exceeded 61 pending bits";
  } catch (const EcdcFormatError& error) {
    EXPECT_NE(std::string(error.what()).find("61 pending bits"), std::string::npos) << error.what();
  }
  // The encoder given those symbols fails on the next straddling one, as the
  // reference's `assert self.max_bit <= 61` does.
  ArithmeticEncoder encoder;
  for (int symbol : symbols) encoder.push(symbol == 0 ? 0 : cdf[symbol - 1], cdf[symbol]);
  int last = -1;
  for (int candidate = 0; candidate < 1024 && last < 0; ++candidate) {
    ArithmeticEncoder copy = encoder;
    try {
      copy.push(candidate == 0 ? 0 : cdf[candidate - 1], cdf[candidate]);
    } catch (const std::runtime_error&) {
      last = candidate;
    }
  }
  EXPECT_GE(last, 0) << "no symbol makes the encoder exceed 61 pending bits";
}

}  // namespace
}  // namespace encodec::lm
