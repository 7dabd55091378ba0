#include "encodec/net/wire.h"

#include <cstring>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

namespace encodec::net {

const char* describe(ParseError error) {
  switch (error) {
    case ParseError::kNone: return "ok";
    case ParseError::kEmpty: return "empty message";
    case ParseError::kTooLarge: return "message over the size limit";
    case ParseError::kMalformed: return "not a valid Envelope protobuf";
    case ParseError::kNoBody: return "Envelope with no message in it";
  }
  return "unknown parse error";
}

namespace {

// Whether the serialized Envelope has an Envelope.media field (number 7,
// length-delimited), scanning its top-level fields.
bool has_media_field(const void* data, size_t size) {
  google::protobuf::io::CodedInputStream input(static_cast<const uint8_t*>(data), static_cast<int>(size));
  for (uint32_t tag = input.ReadTag(); tag != 0; tag = input.ReadTag()) {
    if (tag == ((7u << 3) | 2u)) return true;
    if (!google::protobuf::internal::WireFormatLite::SkipField(&input, tag)) return false;
  }
  return false;
}

ParseError parse_bounded(const void* data, size_t size, size_t limit, wire::Envelope* envelope) {
  if (size == 0) return ParseError::kEmpty;
  if (size > limit) return ParseError::kTooLarge;
  // ParseFromArray would Clear() the envelope, which frees a Media in the body
  // oneof: instead the Media is cleared in place (strings keep their capacity)
  // and the bytes merged into it.
  envelope->set_session_id(0);
  if (envelope->body_case() == wire::Envelope::kMedia) {
    envelope->mutable_media()->Clear();
  } else {
    envelope->Clear();
  }
  google::protobuf::io::CodedInputStream input(static_cast<const uint8_t*>(data), static_cast<int>(size));
  if (!envelope->MergePartialFromCodedStream(&input) || !input.ConsumedEntireMessage()) {
    return ParseError::kMalformed;
  }
  // A Media cleared above and not in these bytes is not the message's body.
  if (envelope->body_case() == wire::Envelope::kMedia && envelope->media().ByteSizeLong() == 0 &&
      !has_media_field(data, size)) {
    envelope->clear_body();
  }
  if (envelope->body_case() == wire::Envelope::BODY_NOT_SET) return ParseError::kNoBody;
  return ParseError::kNone;
}

}  // namespace

ParseError parse_datagram(const void* data, size_t size, wire::Envelope* envelope) {
  return parse_bounded(data, size, kMaxDatagramBytes, envelope);
}

size_t serialize_datagram(const wire::Envelope& envelope, uint8_t* buffer, size_t capacity,
                          const MessageSigner* signer) {
  const size_t size = envelope.ByteSizeLong();
  const size_t total = size + (signer != nullptr ? kAuthTrailerBytes : 0);
  if (total > capacity || total > kMaxDatagramBytes) return 0;
  if (!envelope.SerializeToArray(buffer, static_cast<int>(size))) return 0;
  if (signer != nullptr) signer->sign(buffer, size);
  return total;
}

bool append_tcp_frame(const wire::Envelope& envelope, std::string* out,
                      const MessageSigner* signer) {
  const size_t envelope_size = envelope.ByteSizeLong();
  const size_t size = envelope_size + (signer != nullptr ? kAuthTrailerBytes : 0);
  if (size > kMaxTcpMessageBytes) return false;
  const size_t start = out->size();
  out->resize(start + kTcpLengthPrefixBytes + size);
  auto* bytes = reinterpret_cast<uint8_t*>(out->data() + start);
  for (size_t i = 0; i < kTcpLengthPrefixBytes; ++i) bytes[i] = static_cast<uint8_t>(size >> (8 * i));
  if (!envelope.SerializeToArray(bytes + kTcpLengthPrefixBytes, static_cast<int>(envelope_size))) {
    out->resize(start);
    return false;
  }
  if (signer != nullptr) signer->sign(bytes + kTcpLengthPrefixBytes, envelope_size);
  return true;
}

TcpFrameReader::TcpFrameReader(size_t max_message_bytes) : max_message_bytes_(max_message_bytes) {
  buffer_.reserve(kTcpLengthPrefixBytes + max_message_bytes_);
}

void TcpFrameReader::append(const void* data, size_t size) {
  // Compact before growing, so a long-lived connection keeps one buffer.
  if (read_offset_ > 0 && read_offset_ == buffer_.size()) {
    buffer_.clear();
    read_offset_ = 0;
  } else if (read_offset_ > 0 && buffer_.size() + size > buffer_.capacity()) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(read_offset_));
    read_offset_ = 0;
  }
  const auto* bytes = static_cast<const uint8_t*>(data);
  buffer_.insert(buffer_.end(), bytes, bytes + size);
}

TcpFrameReader::Result TcpFrameReader::next(wire::Envelope* envelope) {
  if (!error_.empty()) return kError;
  const size_t available = buffer_.size() - read_offset_;
  if (available < kTcpLengthPrefixBytes) return kNeedMore;
  const uint8_t* prefix = buffer_.data() + read_offset_;
  size_t length = 0;
  for (size_t i = 0; i < kTcpLengthPrefixBytes; ++i) length |= static_cast<size_t>(prefix[i]) << (8 * i);
  if (length > max_message_bytes_) {
    error_ = "message length " + std::to_string(length) + " over the limit of " +
             std::to_string(max_message_bytes_) + " bytes";
    return kError;
  }
  if (available < kTcpLengthPrefixBytes + length) return kNeedMore;
  last_message_ = split_signed(prefix + kTcpLengthPrefixBytes, length);
  const ParseError parsed = parse_bounded(last_message_.envelope_bytes, last_message_.envelope_size,
                                          max_message_bytes_, envelope);
  read_offset_ += kTcpLengthPrefixBytes + length;
  if (parsed != ParseError::kNone) {
    error_ = std::string("message of ") + std::to_string(length) + " bytes: " + describe(parsed);
    return kError;
  }
  return kMessage;
}

wire::Media* reuse_media(wire::Envelope* envelope) {
  envelope->set_session_id(0);
  wire::Media* media = envelope->mutable_media();  // the same Media when it is one already
  media->Clear();                                   // keeps the payload's capacity
  return media;
}

}  // namespace encodec::net
