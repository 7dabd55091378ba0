// The reference's arithmetic coder (encodec/quantization/ac.py) and its
// quantized CDF, bit for bit: 24-bit total range, every symbol at least 2 steps
// wide, probabilities floored to multiples of 1e-8 first, bits written LSB first
// into bytes (a 1-bit BitPacker), and a flush that writes the remaining bits of
// `low` then pads the byte with zeros.
//
// The coder has no carry handling: while `low` and `high` straddle a power of
// two, bits pile up (max_bit grows). The reference asserts max_bit <= 61 after
// each symbol; so do we, with 128-bit state so that the bits of a symbol's own
// rescaling (up to ~25 more) never overflow.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace encodec::lm {

inline constexpr int kTotalRangeBits = 24;
inline constexpr int kMinRange = 2;
// The largest max_bit the reference's encoder accepts after a symbol.
inline constexpr int kMaxBit = 61;

// build_stable_quantized_cdf(pdf, 24, roundoff=1e-8, min_range=2, check=False):
// ranges[i] = floor(((1 - alpha) * 2^24) * (floor(pdf[i] / 1e-8) * 1e-8)) + 2 in
// float32 arithmetic as LibTorch evaluates it (the Python floats become float32
// scalars), cdf = cumsum(ranges). `cdf` gets `size` values.
void build_quantized_cdf(const float* pdf, int size, uint32_t* cdf);

class ArithmeticEncoder {
 public:
  // Codes the symbol whose range is [cdf_low, cdf_high) of the quantized CDF
  // (cdf_low = cdf[symbol - 1] or 0, cdf_high = cdf[symbol]).
  void push(uint32_t cdf_low, uint32_t cdf_high);
  // Writes the remaining bits of `low` and pads the last byte; the coder starts
  // over (a new segment) afterwards.
  void flush();
  // The bytes completed so far (each returned once).
  std::string take_bytes();
  // The same, appended to `out` (no allocation once `out` and the coder's own
  // buffer have grown to a frame's bytes).
  void append_bytes(std::string* out);

 private:
  void push_bit(unsigned bit);
  unsigned __int128 low_ = 0, high_ = 0;
  int max_bit_ = -1;
  unsigned current_byte_ = 0;
  int current_bits_ = 0;
  std::string out_;
};

class ArithmeticDecoder {
 public:
  void feed(const char* data, size_t size);
  // The next symbol given the same CDF as the encoder's (`size` entries), or
  // nullopt when the bytes fed so far do not hold the bits it needs (nothing is
  // consumed then: call again after feeding more). Throws EcdcFormatError when
  // no symbol matches (the bytes cannot come from the encoder).
  std::optional<int> pull(const uint32_t* cdf, int size);
  // Drops the unread bits of the current byte and starts a new segment.
  void end_segment();
  // Whole bytes fed but not read yet.
  size_t unread_bytes() const { return data_.size() - position_; }
  // Bits the next pull needs beyond those already read (0..25).
  int bits_needed() const;

 private:
  size_t available_bits() const { return current_bits_ + 8 * unread_bytes(); }
  unsigned read_bit();
  unsigned __int128 low_ = 0, high_ = 0, current_ = 0;
  int max_bit_ = -1;
  std::string data_;
  size_t position_ = 0;
  unsigned current_value_ = 0;
  int current_bits_ = 0;
};

}  // namespace encodec::lm
