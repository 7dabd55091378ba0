// libFuzzer target: every parser of network input (a datagram, a TCP byte
// stream cut anywhere, a raw codes payload) must turn any bytes into a message
// or a refusal, never a crash, a hang or an unbounded allocation.
#include <cstddef>
#include <algorithm>
#include <cstdint>

#include "encodec/net/codes_payload.h"
#include "encodec/net/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One envelope reused, as the server's lanes reuse theirs.
  static encodec::wire::Envelope reused;
  encodec::net::parse_datagram(data, size, &reused);

  // The same bytes as a TCP stream, fed in pieces whose sizes the first byte picks.
  encodec::net::TcpFrameReader reader(4096);
  const size_t piece = size > 0 ? 1 + data[0] % 64 : 1;
  for (size_t at = 0; at < size; at += piece) {
    reader.append(data + at, std::min(piece, size - at));
    while (reader.next(&reused) == encodec::net::TcpFrameReader::kMessage) {
    }
  }

  // As a payload of every codebook count.
  int32_t codes[32];
  for (int codebooks = 1; codebooks <= 32; ++codebooks) {
    if (encodec::net::unpack_raw_codes(data, size, codebooks, 10, codes)) {
      uint8_t repacked[64];
      encodec::net::truncate_raw_codes(data, size, codebooks, 1 + codebooks / 2, 10, repacked);
    }
  }
  return 0;
}
