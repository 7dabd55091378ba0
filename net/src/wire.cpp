#include "encodec/net/wire.h"

#include <cstring>

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

ParseError parse_bounded(const void* data, size_t size, size_t limit, wire::Envelope* envelope) {
  if (size == 0) return ParseError::kEmpty;
  if (size > limit) return ParseError::kTooLarge;
  if (!envelope->ParseFromArray(data, static_cast<int>(size))) return ParseError::kMalformed;
  if (envelope->body_case() == wire::Envelope::BODY_NOT_SET) return ParseError::kNoBody;
  return ParseError::kNone;
}

}  // namespace

ParseError parse_datagram(const void* data, size_t size, wire::Envelope* envelope) {
  return parse_bounded(data, size, kMaxDatagramBytes, envelope);
}

size_t serialize_datagram(const wire::Envelope& envelope, uint8_t* buffer, size_t capacity) {
  const size_t size = envelope.ByteSizeLong();
  if (size > capacity || size > kMaxDatagramBytes) return 0;
  if (!envelope.SerializeToArray(buffer, static_cast<int>(size))) return 0;
  return size;
}

bool append_tcp_frame(const wire::Envelope& envelope, std::string* out) {
  const size_t size = envelope.ByteSizeLong();
  if (size > kMaxTcpMessageBytes) return false;
  const size_t start = out->size();
  out->resize(start + kTcpLengthPrefixBytes + size);
  auto* bytes = reinterpret_cast<uint8_t*>(out->data() + start);
  for (size_t i = 0; i < kTcpLengthPrefixBytes; ++i) bytes[i] = static_cast<uint8_t>(size >> (8 * i));
  if (!envelope.SerializeToArray(bytes + kTcpLengthPrefixBytes, static_cast<int>(size))) {
    out->resize(start);
    return false;
  }
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
  const ParseError parsed =
      parse_bounded(prefix + kTcpLengthPrefixBytes, length, max_message_bytes_, envelope);
  read_offset_ += kTcpLengthPrefixBytes + length;
  if (parsed != ParseError::kNone) {
    error_ = std::string("message of ") + std::to_string(length) + " bytes: " + describe(parsed);
    return kError;
  }
  return kMessage;
}

EnvelopeArena::EnvelopeArena(size_t block_bytes) : block_(block_bytes) {
  google::protobuf::ArenaOptions options;
  options.initial_block = block_.data();
  options.initial_block_size = block_.size();
  arena_ = std::make_unique<google::protobuf::Arena>(options);
}

wire::Envelope* EnvelopeArena::fresh() {
  arena_->Reset();
  return google::protobuf::Arena::CreateMessage<wire::Envelope>(arena_.get());
}

}  // namespace encodec::net
