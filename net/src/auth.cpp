#include "encodec/net/auth.h"

#include <cstring>

// HMAC is built here from OpenSSL's SHA-256 with its two keyed states (K ^ ipad,
// K ^ opad) absorbed once per key and copied by value per message, exactly as
// RFC 2104 defines it (tested against OpenSSL's own HMAC). The EVP_MAC API would
// allocate on every message: in OpenSSL 3.0, EVP_MAC_init(ctx, NULL, 0, NULL)
// (reuse of the key) allocates 2 blocks per message (EVP_MD_CTX_copy_ex duplicates
// the provider's digest context) and EVP_MAC_CTX_dup 11. The SHA256_* functions
// are deprecated in 3.0 but kept, and a SHA256_CTX is a plain struct.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace encodec::net {

namespace {

constexpr size_t kShaBlockBytes = 64;
constexpr uint8_t kAuthFieldTag = (15 << 3) | 2;   // Envelope.auth, length-delimited
constexpr uint8_t kKeyIdFieldTag = (1 << 3) | 5;   // fixed32
constexpr uint8_t kCounterFieldTag = (2 << 3) | 1;  // fixed64
constexpr uint8_t kTagFieldTag = (3 << 3) | 2;      // bytes
// The trailer before the tag bytes: what the tag covers with the Envelope.
constexpr size_t kTrailerHeadBytes = kAuthTrailerBytes - kTagBytes;

void put_le(uint64_t value, size_t bytes, uint8_t* out) {
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}
uint64_t get_le(const uint8_t* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= uint64_t{in[i]} << (8 * i);
  return value;
}

void write_trailer_head(uint32_t key_id, uint64_t counter, uint8_t* out) {
  out[0] = kAuthFieldTag;
  out[1] = kAuthTrailerBytes - 2;
  out[2] = kKeyIdFieldTag;
  put_le(key_id, 4, out + 3);
  out[7] = kCounterFieldTag;
  put_le(counter, 8, out + 8);
  out[16] = kTagFieldTag;
  out[17] = kTagBytes;
}

}  // namespace

struct MessageKey::HmacState {
  SHA256_CTX inner;
  SHA256_CTX outer;
};

uint32_t key_id_of(std::string_view secret) {
  static constexpr char kContext[] = "encodec key id";
  SHA256_CTX sha;
  SHA256_Init(&sha);
  SHA256_Update(&sha, kContext, sizeof kContext - 1);
  SHA256_Update(&sha, secret.data(), secret.size());
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &sha);
  return static_cast<uint32_t>(get_le(digest, 4));
}

SignedMessage split_signed(const uint8_t* data, size_t size) {
  SignedMessage message;
  message.envelope_bytes = data;
  message.envelope_size = size;
  if (size < kAuthTrailerBytes) return message;
  const uint8_t* trailer = data + size - kAuthTrailerBytes;
  if (trailer[0] != kAuthFieldTag || trailer[1] != kAuthTrailerBytes - 2 ||
      trailer[2] != kKeyIdFieldTag || trailer[7] != kCounterFieldTag ||
      trailer[16] != kTagFieldTag || trailer[17] != kTagBytes) {
    return message;
  }
  message.envelope_size = size - kAuthTrailerBytes;
  message.has_trailer = true;
  message.key_id = static_cast<uint32_t>(get_le(trailer + 3, 4));
  message.counter = get_le(trailer + 8, 8);
  std::memcpy(message.tag.data(), trailer + kTrailerHeadBytes, kTagBytes);
  return message;
}

MessageKey::MessageKey(std::string_view secret)
    : state_(std::make_unique<HmacState>()), id_(key_id_of(secret)) {
  // RFC 2104: a key longer than the block is hashed first; then zero-padded.
  uint8_t block[kShaBlockBytes] = {};
  if (secret.size() > kShaBlockBytes) {
    SHA256(reinterpret_cast<const uint8_t*>(secret.data()), secret.size(), block);
  } else {
    std::memcpy(block, secret.data(), secret.size());
  }
  uint8_t pad[kShaBlockBytes];
  for (size_t i = 0; i < kShaBlockBytes; ++i) pad[i] = block[i] ^ 0x36;
  SHA256_Init(&state_->inner);
  SHA256_Update(&state_->inner, pad, sizeof pad);
  for (size_t i = 0; i < kShaBlockBytes; ++i) pad[i] = block[i] ^ 0x5c;
  SHA256_Init(&state_->outer);
  SHA256_Update(&state_->outer, pad, sizeof pad);
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
}

MessageKey::~MessageKey() { OPENSSL_cleanse(state_.get(), sizeof *state_); }

// HMAC-SHA256(secret, direction || session_id (8 bytes LE) || Envelope bytes ||
// trailer head (key id, counter)), first kTagBytes bytes.
void MessageKey::tag_of(Direction direction, uint64_t session_id, const uint8_t* envelope,
                        size_t size, const uint8_t* trailer_head, uint8_t* tag) const {
  uint8_t header[9];
  header[0] = static_cast<uint8_t>(direction);
  put_le(session_id, 8, header + 1);
  SHA256_CTX inner = state_->inner;
  SHA256_Update(&inner, header, sizeof header);
  SHA256_Update(&inner, envelope, size);
  SHA256_Update(&inner, trailer_head, kTrailerHeadBytes);
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &inner);
  SHA256_CTX outer = state_->outer;
  SHA256_Update(&outer, digest, sizeof digest);
  SHA256_Final(digest, &outer);
  std::memcpy(tag, digest, kTagBytes);
}

void MessageKey::sign(Direction direction, uint64_t session_id, uint64_t counter,
                      uint8_t* envelope, size_t size) const {
  uint8_t* trailer = envelope + size;
  write_trailer_head(id_, counter, trailer);
  tag_of(direction, session_id, envelope, size, trailer, trailer + kTrailerHeadBytes);
}

bool MessageKey::verify(Direction direction, uint64_t session_id,
                        const SignedMessage& message) const {
  if (!message.has_trailer || message.key_id != id_) return false;
  uint8_t trailer_head[kTrailerHeadBytes];
  write_trailer_head(message.key_id, message.counter, trailer_head);
  uint8_t tag[kTagBytes];
  tag_of(direction, session_id, message.envelope_bytes, message.envelope_size, trailer_head, tag);
  return CRYPTO_memcmp(tag, message.tag.data(), kTagBytes) == 0;
}

bool ReplayWindow::check(uint64_t counter) const {
  if (counter == 0) return false;
  if (counter > highest_) return true;
  const uint64_t behind = highest_ - counter;
  if (behind >= kSize) return false;
  return (seen_ & (uint64_t{1} << behind)) == 0;
}

void ReplayWindow::accept(uint64_t counter) {
  if (counter > highest_) {
    const uint64_t ahead = counter - highest_;
    seen_ = ahead >= kSize ? 0 : seen_ << ahead;
    seen_ |= 1;
    highest_ = counter;
  } else {
    seen_ |= uint64_t{1} << (highest_ - counter);
  }
}

}  // namespace encodec::net
