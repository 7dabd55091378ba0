#include "encodec/net/codes_payload.h"

namespace encodec::net {

size_t pack_raw_codes(const int32_t* codes, int num_codebooks, int bits_per_code, uint8_t* out) {
  uint64_t pending = 0;
  int pending_bits = 0;
  size_t written = 0;
  const uint64_t mask = (uint64_t{1} << bits_per_code) - 1;
  for (int k = 0; k < num_codebooks; ++k) {
    pending |= (static_cast<uint64_t>(codes[k]) & mask) << pending_bits;
    pending_bits += bits_per_code;
    while (pending_bits >= 8) {
      out[written++] = static_cast<uint8_t>(pending);
      pending >>= 8;
      pending_bits -= 8;
    }
  }
  if (pending_bits > 0) out[written++] = static_cast<uint8_t>(pending);
  return written;
}

bool unpack_raw_codes(const uint8_t* payload, size_t size, int num_codebooks, int bits_per_code,
                      int32_t* codes) {
  if (num_codebooks <= 0 || size != raw_codes_bytes(num_codebooks, bits_per_code)) return false;
  uint64_t pending = 0;
  int pending_bits = 0;
  size_t read = 0;
  const uint64_t mask = (uint64_t{1} << bits_per_code) - 1;
  for (int k = 0; k < num_codebooks; ++k) {
    while (pending_bits < bits_per_code) {
      pending |= static_cast<uint64_t>(payload[read++]) << pending_bits;
      pending_bits += 8;
    }
    codes[k] = static_cast<int32_t>(pending & mask);
    pending >>= bits_per_code;
    pending_bits -= bits_per_code;
  }
  // Whatever is left of the last byte is padding, which the packer writes as zeros.
  return pending == 0;
}

size_t truncate_raw_codes(const uint8_t* payload, size_t size, int from_codebooks,
                          int to_codebooks, int bits_per_code, uint8_t* out) {
  if (to_codebooks <= 0 || to_codebooks > from_codebooks ||
      size != raw_codes_bytes(from_codebooks, bits_per_code)) {
    return 0;
  }
  const size_t kept_bits = static_cast<size_t>(to_codebooks) * bits_per_code;
  const size_t whole_bytes = kept_bits / 8;
  for (size_t i = 0; i < whole_bytes; ++i) out[i] = payload[i];
  const size_t rest_bits = kept_bits % 8;
  if (rest_bits == 0) return whole_bytes;
  out[whole_bytes] = static_cast<uint8_t>(payload[whole_bytes] & ((1u << rest_bits) - 1));
  return whole_bytes + 1;
}

}  // namespace encodec::net
