#include "lm/arithmetic_coder.h"

#include <immintrin.h>

#include <cmath>
#include <stdexcept>

#include "encodec/ecdc.h"

namespace encodec::lm {
namespace {

using u128 = unsigned __int128;
constexpr uint64_t kTotalRange = uint64_t{1} << kTotalRangeBits;

// The float32 scalars LibTorch makes of the reference's Python floats: 1e-8
// (a double, rounded to float) and (1 - alpha) * 2^24 with alpha = 2 * size / 2^24.
float roundoff_scalar() { return static_cast<float>(1e-8); }
float range_scale(int size) {
  const double alpha = static_cast<double>(kMinRange) * size / static_cast<double>(kTotalRange);
  return static_cast<float>((1 - alpha) * static_cast<double>(kTotalRange));
}

void build_cdf_scalar(const float* pdf, int size, uint32_t* cdf, int begin, uint32_t total) {
  const float roundoff = roundoff_scalar(), scale = range_scale(size);
  for (int i = begin; i < size; ++i) {
    const float floored = std::floor(pdf[i] / roundoff) * roundoff;
    total += static_cast<uint32_t>(static_cast<int64_t>(std::floor(scale * floored)) + kMinRange);
    cdf[i] = total;
  }
}

// The same operations, eight at a time (IEEE division, multiplication and floor
// are exact-rounded, so the order of elements does not matter).
__attribute__((target("avx2"))) void build_cdf_avx2(const float* pdf, int size, uint32_t* cdf) {
  const __m256 roundoff = _mm256_set1_ps(roundoff_scalar());
  const __m256 scale = _mm256_set1_ps(range_scale(size));
  const __m256i min_range = _mm256_set1_epi32(kMinRange);
  uint32_t total = 0;
  int i = 0;
  alignas(32) uint32_t ranges[8];
  for (; i + 8 <= size; i += 8) {
    __m256 p = _mm256_loadu_ps(pdf + i);
    p = _mm256_mul_ps(_mm256_floor_ps(_mm256_div_ps(p, roundoff)), roundoff);
    // Values are below 2^24 (probabilities <= 1), so int32 conversion is exact.
    const __m256i r = _mm256_add_epi32(
        _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_mul_ps(scale, p))), min_range);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ranges), r);
    for (int j = 0; j < 8; ++j) {
      total += ranges[j];
      cdf[i + j] = total;
    }
  }
  build_cdf_scalar(pdf, size, cdf, i, total);
}

bool has_avx2() {
  static const bool value = __builtin_cpu_supports("avx2");
  return value;
}

}  // namespace

void build_quantized_cdf(const float* pdf, int size, uint32_t* cdf) {
  if (has_avx2()) {
    build_cdf_avx2(pdf, size, cdf);
  } else {
    build_cdf_scalar(pdf, size, cdf, 0, 0);
  }
}

// ---------------------------------------------------------------- encoder

void ArithmeticEncoder::push_bit(unsigned bit) {
  current_byte_ |= bit << current_bits_;
  if (++current_bits_ == 8) {
    out_.push_back(static_cast<char>(current_byte_));
    current_byte_ = 0;
    current_bits_ = 0;
  }
}

void ArithmeticEncoder::push(uint32_t cdf_low, uint32_t cdf_high) {
  while (high_ - low_ + 1 < kTotalRange) {
    low_ *= 2;
    high_ = high_ * 2 + 1;
    ++max_bit_;
  }
  // delta / 2^24 as a Python float (delta < 2^26: exact), times the int bounds:
  // the products have at most 51 significant bits, so ceil and floor are exact.
  const double delta = static_cast<double>(static_cast<uint64_t>(high_ - low_ + 1));
  const double ratio = delta / static_cast<double>(kTotalRange);
  const auto effective_low = static_cast<uint64_t>(std::ceil(cdf_low * ratio));
  const auto effective_high = static_cast<uint64_t>(std::floor((cdf_high - 1.0) * ratio));
  high_ = low_ + effective_high;
  low_ = low_ + effective_low;
  if (low_ > high_ || high_ >> (max_bit_ + 1) != 0) {
    throw std::logic_error("arithmetic coder: invalid range (the quantized CDF is not increasing "
                           "or exceeds 2^24)");
  }
  while (max_bit_ >= 0) {
    const unsigned b1 = static_cast<unsigned>(low_ >> max_bit_);
    const unsigned b2 = static_cast<unsigned>(high_ >> max_bit_);
    if (b1 != b2) break;
    low_ -= static_cast<u128>(b1) << max_bit_;
    high_ -= static_cast<u128>(b1) << max_bit_;
    --max_bit_;
    push_bit(b1);
  }
  if (max_bit_ > kMaxBit) {
    // The reference fails its `assert self.max_bit <= 61` here.
    throw std::runtime_error(
        "arithmetic coder overflow: more than 61 pending bits (the reference fails here too)");
  }
}

void ArithmeticEncoder::flush() {
  while (max_bit_ >= 0) {
    push_bit(static_cast<unsigned>(low_ >> max_bit_) & 1);
    --max_bit_;
  }
  if (current_bits_ > 0) {
    out_.push_back(static_cast<char>(current_byte_));
    current_byte_ = 0;
    current_bits_ = 0;
  }
  low_ = high_ = 0;
  max_bit_ = -1;
}

std::string ArithmeticEncoder::take_bytes() {
  std::string bytes;
  bytes.swap(out_);
  return bytes;
}

void ArithmeticEncoder::append_bytes(std::string* out) {
  out->append(out_);
  out_.clear();
}

// ---------------------------------------------------------------- decoder

void ArithmeticDecoder::feed(const char* data, size_t size) {
  // Bytes read are dropped: at once when everything fed was read (a live
  // packet: then the buffer never grows, nothing allocates), else once they are
  // most of a large buffer.
  if (position_ == data_.size() || (position_ > 4096 && position_ * 2 > data_.size())) {
    data_.erase(0, position_);
    position_ = 0;
  }
  data_.append(data, size);
}

unsigned ArithmeticDecoder::read_bit() {
  if (current_bits_ == 0) {
    current_value_ = static_cast<unsigned char>(data_[position_++]);
    current_bits_ = 8;
  }
  const unsigned bit = current_value_ & 1;
  current_value_ >>= 1;
  --current_bits_;
  return bit;
}

int ArithmeticDecoder::bits_needed() const {
  // Each rescaling doubles delta exactly.
  uint64_t delta = static_cast<uint64_t>(high_ - low_ + 1);
  int needed = 0;
  while (delta < kTotalRange) {
    delta *= 2;
    ++needed;
  }
  return needed;
}

std::optional<int> ArithmeticDecoder::pull(const uint32_t* cdf, int size) {
  const int needed = bits_needed();
  if (available_bits() < static_cast<size_t>(needed)) return std::nullopt;
  for (int i = 0; i < needed; ++i) {
    low_ *= 2;
    high_ = high_ * 2 + 1;
    current_ = current_ * 2 + read_bit();
    ++max_bit_;
  }
  const double delta = static_cast<double>(static_cast<uint64_t>(high_ - low_ + 1));
  const double ratio = delta / static_cast<double>(kTotalRange);
  // The reference's binary search (same midpoints, same comparisons).
  int low_index = 0, high_index = size - 1;
  int symbol = -1;
  u128 new_low = 0, new_high = 0;
  while (low_index <= high_index) {
    const int mid = (low_index + high_index) / 2;
    const uint32_t range_low = mid > 0 ? cdf[mid - 1] : 0;
    const double range_high = cdf[mid] - 1.0;
    const u128 low = low_ + static_cast<uint64_t>(std::ceil(range_low * ratio));
    const u128 high = low_ + static_cast<uint64_t>(std::floor(range_high * ratio));
    if (current_ >= low) {
      if (current_ <= high) {
        symbol = mid;
        new_low = low;
        new_high = high;
        break;
      }
      low_index = mid + 1;
    } else {
      high_index = mid - 1;
    }
  }
  if (symbol < 0) {
    throw EcdcFormatError("corrupt LM-coded data: the arithmetic decoder found no code for the "
                          "bits read");
  }
  low_ = new_low;
  high_ = new_high;
  while (max_bit_ >= 0) {
    const unsigned b1 = static_cast<unsigned>(low_ >> max_bit_);
    const unsigned b2 = static_cast<unsigned>(high_ >> max_bit_);
    if (b1 != b2) break;
    low_ -= static_cast<u128>(b1) << max_bit_;
    high_ -= static_cast<u128>(b1) << max_bit_;
    current_ -= static_cast<u128>(b1) << max_bit_;
    --max_bit_;
  }
  if (max_bit_ > kMaxBit) {
    // Never the case for a stream the reference's encoder wrote (it asserts this).
    throw EcdcFormatError("corrupt LM-coded data: more than 61 pending bits in the arithmetic "
                          "decoder");
  }
  return symbol;
}

void ArithmeticDecoder::end_segment() {
  current_bits_ = 0;
  current_value_ = 0;
  low_ = high_ = current_ = 0;
  max_bit_ = -1;
}

}  // namespace encodec::lm
