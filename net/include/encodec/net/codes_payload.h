// Media payloads of raw RVQ codes (PAYLOAD_KIND_RAW_CODES): one frame's codes,
// bits_per_code bits each (10 for 1024-entry codebooks), packed LSB first, codebook
// after codebook, as .ecdc packs them, the last byte zero-padded. Codebooks are
// layered (each refines the residual of the ones before), so the first n
// codebooks of a frame are that frame at a lower bandwidth: the server lowers a
// member's bandwidth by truncating, without decoding.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace encodec::net {

inline constexpr size_t raw_codes_bytes(int num_codebooks, int bits_per_code) {
  return (static_cast<size_t>(num_codebooks) * bits_per_code + 7) / 8;
}

// Writes raw_codes_bytes(...) bytes to out. Codes must fit in bits_per_code bits.
size_t pack_raw_codes(const int32_t* codes, int num_codebooks, int bits_per_code, uint8_t* out);

// Reads num_codebooks codes. False when `size` is not raw_codes_bytes(...) or the
// padding bits are not zero (a corrupt packet).
bool unpack_raw_codes(const uint8_t* payload, size_t size, int num_codebooks, int bits_per_code,
                      int32_t* codes);

// The first `to_codebooks` codebooks of a packed frame of `from_codebooks`
// (to_codebooks <= from_codebooks), packed again; returns the bytes written, 0
// when `size` does not match from_codebooks.
size_t truncate_raw_codes(const uint8_t* payload, size_t size, int from_codebooks,
                          int to_codebooks, int bits_per_code, uint8_t* out);

}  // namespace encodec::net
