// Message authentication of the wire protocol (format in proto/README.md,
// "Authentication"): every Envelope ends in an Authenticator trailer (key id,
// per-session per-direction counter, HMAC-SHA256 tag truncated to 16 bytes),
// and a receiver keeps a 64-message replay window per session and direction.
//
// Usage:
//   const auto key = std::make_shared<const MessageKey>(secret);  // once per secret
//   MessageSigner signer(key, Direction::kClientToServer);         // one per session side
//   signer.set_session(session_id);
//   size_t n = serialize_datagram(envelope, buffer, sizeof buffer, &signer);
//
//   const SignedMessage message = split_signed(data, size);        // on receipt
//   parse_datagram(message.envelope_bytes, message.envelope_size, &envelope);
//   if (message.has_trailer && key->verify(Direction::kServerToClient, session_id, message) &&
//       window.check(message.counter)) { window.accept(message.counter); handle(envelope); }
//
// Nothing here allocates per message: the key's HMAC state is prebuilt.
//
// Thread safety: MessageKey is immutable and shared; MessageSigner::sign may be
// called from any thread (its counter is atomic); a ReplayWindow belongs to one
// thread at a time.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace encodec::net {

inline constexpr size_t kTagBytes = 16;
// Envelope.auth as the last field: tag 0x7a, length 32, then key_id (fixed32),
// counter (fixed64), tag (bytes, 16).
inline constexpr size_t kAuthTrailerBytes = 34;
// Secrets shorter than this are refused (config, client flags): a guessable key
// makes the tag worthless.
inline constexpr size_t kMinSecretBytes = 16;

// Who sent the message: part of what is MACed, so that with a shared secret a
// server's message cannot be passed back to it as a client's.
enum class Direction : uint8_t { kClientToServer = 1, kServerToClient = 2 };

// The key id of a secret: the first 4 bytes (little-endian) of
// SHA-256("encodec key id" || secret). Clients need only the secret; the server
// finds the key by its id.
uint32_t key_id_of(std::string_view secret);

// A received message split into the Envelope's bytes and its trailer.
struct SignedMessage {
  const uint8_t* envelope_bytes = nullptr;  // the Envelope without Envelope.auth
  size_t envelope_size = 0;
  bool has_trailer = false;                 // false: sent unsigned (or not by us)
  uint32_t key_id = 0;
  uint64_t counter = 0;
  std::array<uint8_t, kTagBytes> tag{};
};

// Splits the trailer off when the message ends in a well-formed one; otherwise
// the whole message is the Envelope and has_trailer is false.
SignedMessage split_signed(const uint8_t* data, size_t size);

// One secret with its HMAC-SHA256 inner and outer states prebuilt.
class MessageKey {
 public:
  explicit MessageKey(std::string_view secret);
  ~MessageKey();
  MessageKey(const MessageKey&) = delete;
  MessageKey& operator=(const MessageKey&) = delete;

  uint32_t id() const { return id_; }
  // Writes the kAuthTrailerBytes trailer for the Envelope bytes [envelope, envelope + size)
  // at envelope + size.
  void sign(Direction direction, uint64_t session_id, uint64_t counter, uint8_t* envelope,
            size_t size) const;
  // Whether the message's tag is this key's for its bytes (constant time).
  bool verify(Direction direction, uint64_t session_id, const SignedMessage& message) const;

 private:
  void tag_of(Direction direction, uint64_t session_id, const uint8_t* envelope, size_t size,
              const uint8_t* trailer_head, uint8_t* tag) const;
  struct HmacState;
  std::unique_ptr<HmacState> state_;
  uint32_t id_ = 0;
};

// What one side of a session signs with: the key, the direction, the session,
// and the counter of the last message signed (strictly increasing from 1).
class MessageSigner {
 public:
  MessageSigner(std::shared_ptr<const MessageKey> key, Direction direction)
      : key_(std::move(key)), direction_(direction) {}
  void set_session(uint64_t session_id) { session_id_.store(session_id); }
  // Appends the trailer after the Envelope bytes (the buffer has room for it).
  void sign(uint8_t* envelope, size_t size) const {
    key_->sign(direction_, session_id_.load(), counter_.fetch_add(1) + 1, envelope, size);
  }

 private:
  std::shared_ptr<const MessageKey> key_;
  Direction direction_;
  std::atomic<uint64_t> session_id_{0};
  mutable std::atomic<uint64_t> counter_{0};
};

// The anti-replay window of RFC 4303 section 3.4.3 (IPsec ESP) over 64
// counters: a counter above the highest seen is new; one within the 64 below
// it is new unless its bit is set; anything older is refused.
class ReplayWindow {
 public:
  static constexpr uint64_t kSize = 64;
  // Whether `counter` would be accepted (0 never is: counters start at 1).
  bool check(uint64_t counter) const;
  // Marks `counter` seen (call after check, once the message is authentic).
  void accept(uint64_t counter);
  uint64_t highest() const { return highest_; }

 private:
  uint64_t highest_ = 0;
  uint64_t seen_ = 0;  // bit i: highest_ - i was seen
};

}  // namespace encodec::net
