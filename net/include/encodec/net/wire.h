// The framing of the wire messages (proto/encodec_net.proto; format in
// proto/README.md): one Envelope per UDP datagram of at most 1200 bytes; on
// TCP, each Envelope preceded by its length as a 4-byte little-endian uint32,
// at most 64 KiB.
//
// Usage:
//   wire::Envelope envelope;                      // one per receiving thread, reused
//   if (parse_datagram(data, size, &envelope) == ParseError::kNone) handle(envelope);
//   size_t n = serialize_datagram(reply, buffer, sizeof buffer);  // 0: too large
//
//   TcpFrameReader reader;                        // one per connection
//   reader.append(bytes, count);
//   while (reader.next(&envelope) == TcpFrameReader::kMessage) handle(envelope);
//
// Parsing reuses the envelope's memory: parsed into the same envelope, a stream
// of Media allocates nothing after the first (the Media and its payload string
// are kept and refilled; only a change of message kind frees and allocates).
//
// Thread safety: no shared state; a reused envelope or reader belongs to one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "encodec/net/auth.h"
#include "encodec_net.pb.h"

namespace encodec::net {

// 2: LM-coded packets (PAYLOAD_KIND_LM_CODES) are coded with the deterministic
// LM coder ("det1", LmKernels::kDeterministic), the same bytes on every CPU;
// version 1 used the BLAS-dependent one. See proto/README.md, "Version".
inline constexpr uint32_t kProtocolVersion = 2;
// What changed in kProtocolVersion, for the error an older peer gets.
inline constexpr const char* kProtocolVersionChange =
    "since version 2 LM-coded packets use the deterministic LM coder det1, the same bytes on every CPU";
inline constexpr size_t kMaxDatagramBytes = 1200;
inline constexpr size_t kTcpLengthPrefixBytes = 4;
inline constexpr size_t kMaxTcpMessageBytes = 64 * 1024;

enum class ParseError {
  kNone,
  kEmpty,      // zero bytes
  kTooLarge,   // over the transport's limit
  kMalformed,  // not a valid Envelope
  kNoBody,     // a valid Envelope with no message in it
};
const char* describe(ParseError error);

// Parses one datagram (kTooLarge over kMaxDatagramBytes). An authenticated
// datagram is parsed without its trailer: split_signed (auth.h) first.
ParseError parse_datagram(const void* data, size_t size, wire::Envelope* envelope);
// Serializes into buffer, followed by the signer's authenticator trailer when
// there is a signer (auth.h); returns the bytes written, or 0 when the message
// does not fit in min(capacity, kMaxDatagramBytes).
size_t serialize_datagram(const wire::Envelope& envelope, uint8_t* buffer, size_t capacity,
                          const MessageSigner* signer = nullptr);

// Appends the length prefix and the message (signed when there is a signer) to
// `out`. Returns false (and leaves `out` unchanged) when the message is over
// kMaxTcpMessageBytes.
bool append_tcp_frame(const wire::Envelope& envelope, std::string* out,
                      const MessageSigner* signer = nullptr);

// Reassembles length-prefixed messages from a TCP byte stream.
class TcpFrameReader {
 public:
  enum Result { kMessage, kNeedMore, kError };
  explicit TcpFrameReader(size_t max_message_bytes = kMaxTcpMessageBytes);
  void append(const void* data, size_t size);
  // kError is final: the stream cannot be resynchronized (error() says why).
  // An authenticated message is parsed without its trailer (split_signed).
  Result next(wire::Envelope* envelope);
  // The message next() returned last, split from its trailer: valid until the next append.
  const SignedMessage& last_message() const { return last_message_; }
  const std::string& error() const { return error_; }
  size_t buffered_bytes() const { return buffer_.size() - read_offset_; }

 private:
  size_t max_message_bytes_;
  std::vector<uint8_t> buffer_;
  size_t read_offset_ = 0;
  SignedMessage last_message_;
  std::string error_;
};

// A Media to fill in for sending, reusing the envelope's previous Media and
// its strings' capacity (the envelope keeps only it): a long-lived envelope
// filled this way allocates nothing once its payload has reached its size.
wire::Media* reuse_media(wire::Envelope* envelope);

}  // namespace encodec::net
