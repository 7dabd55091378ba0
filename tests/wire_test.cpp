// The wire framing (net/wire.h) and the raw codes payload (net/codes_payload.h).
#include <cstring>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "encodec/ecdc.h"
#include "encodec/net/codes_payload.h"
#include "encodec/net/wire.h"

namespace encodec::net {
namespace {

wire::Envelope media_envelope(uint32_t sequence, size_t payload_bytes) {
  wire::Envelope envelope;
  envelope.set_session_id(0x1234567890abcdefULL);
  wire::Media* media = envelope.mutable_media();
  media->set_sequence(sequence);
  media->set_timestamp_samples(uint64_t{sequence} * 320);
  media->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
  media->set_num_codebooks(8);
  media->set_payload(std::string(payload_bytes, static_cast<char>(sequence & 0xff)));
  return envelope;
}

TEST(Datagram, RoundTripsAndRefusesWhatDoesNotFit) {
  const wire::Envelope sent = media_envelope(7, 10);
  uint8_t buffer[kMaxDatagramBytes];
  const size_t size = serialize_datagram(sent, buffer, sizeof buffer);
  ASSERT_EQ(size, sent.ByteSizeLong());
  wire::Envelope received;
  ASSERT_EQ(parse_datagram(buffer, size, &received), ParseError::kNone);
  EXPECT_EQ(received.SerializeAsString(), sent.SerializeAsString());

  // A payload that makes the datagram exceed 1200 bytes is refused on both sides.
  const wire::Envelope big = media_envelope(1, kMaxDatagramBytes);
  EXPECT_EQ(serialize_datagram(big, buffer, sizeof buffer), 0u);
  const std::string big_bytes = big.SerializeAsString();
  EXPECT_EQ(parse_datagram(big_bytes.data(), big_bytes.size(), &received), ParseError::kTooLarge);
}

TEST(Datagram, ClassifiesBadInput) {
  wire::Envelope envelope;
  EXPECT_EQ(parse_datagram("", 0, &envelope), ParseError::kEmpty);
  // 0xff is a field number 31, wire type 7: not valid protobuf.
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  EXPECT_EQ(parse_datagram(garbage, sizeof garbage, &envelope), ParseError::kMalformed);
  // A valid Envelope with only a session id says nothing.
  wire::Envelope empty;
  empty.set_session_id(3);
  const std::string bytes = empty.SerializeAsString();
  EXPECT_EQ(parse_datagram(bytes.data(), bytes.size(), &envelope), ParseError::kNoBody);
  // A truncated message is malformed, never a crash.
  const std::string media = media_envelope(3, 40).SerializeAsString();
  for (size_t cut = 1; cut < media.size(); ++cut) {
    EXPECT_NE(parse_datagram(media.data(), cut, &envelope), ParseError::kNone) << cut;
  }
}

TEST(TcpFraming, LittleEndianPrefixAndReassemblyAcrossAnySplit) {
  std::string stream;
  std::vector<std::string> sent;
  for (uint32_t i = 0; i < 20; ++i) {
    const wire::Envelope envelope = media_envelope(i, 3 + 50 * i);
    sent.push_back(envelope.SerializeAsString());
    ASSERT_TRUE(append_tcp_frame(envelope, &stream));
  }
  // The first prefix is the first message's length, least significant byte first.
  const size_t first_length = sent[0].size();
  EXPECT_EQ(static_cast<uint8_t>(stream[0]), first_length & 0xff);
  EXPECT_EQ(static_cast<uint8_t>(stream[1]), (first_length >> 8) & 0xff);
  EXPECT_EQ(stream[2], 0);
  EXPECT_EQ(stream[3], 0);

  std::mt19937 random(5);
  for (int trial = 0; trial < 20; ++trial) {
    TcpFrameReader reader;
    std::vector<std::string> received;
    size_t offset = 0;
    while (offset < stream.size()) {
      const size_t piece = std::min<size_t>(stream.size() - offset, 1 + random() % 97);
      reader.append(stream.data() + offset, piece);
      offset += piece;
      wire::Envelope envelope;
      while (reader.next(&envelope) == TcpFrameReader::kMessage) {
        received.push_back(envelope.SerializeAsString());
      }
    }
    EXPECT_EQ(received, sent);
    EXPECT_EQ(reader.buffered_bytes(), 0u);
  }
}

TEST(TcpFraming, OversizedLengthAndGarbageAreFinalErrors) {
  TcpFrameReader reader(1000);
  const uint8_t prefix[] = {0xe9, 0x03, 0, 0};  // 1001
  reader.append(prefix, sizeof prefix);
  wire::Envelope envelope;
  EXPECT_EQ(reader.next(&envelope), TcpFrameReader::kError);
  EXPECT_NE(reader.error().find("1001"), std::string::npos) << reader.error();
  EXPECT_EQ(reader.next(&envelope), TcpFrameReader::kError);

  TcpFrameReader garbage_reader;
  const uint8_t garbage[] = {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
  garbage_reader.append(garbage, sizeof garbage);
  EXPECT_EQ(garbage_reader.next(&envelope), TcpFrameReader::kError);
  EXPECT_NE(garbage_reader.error().find("not a valid"), std::string::npos) << garbage_reader.error();
}

// One envelope reused for a stream of messages: each parse gives exactly the
// message sent, whatever came before it (fields of earlier ones never leak).
TEST(ReusedEnvelope, EachParseIsExactlyTheMessageSent) {
  std::vector<wire::Envelope> messages;
  messages.push_back(media_envelope(9, 100));
  messages.push_back(media_envelope(10, 3));  // shorter payload after a longer one
  wire::Envelope end_mark;
  end_mark.mutable_media()->set_end_of_stream(true);
  messages.push_back(end_mark);                // no session id: the earlier one must not stay
  wire::Envelope keep_alive;
  keep_alive.mutable_keep_alive()->set_sent_time_us(5);
  messages.push_back(keep_alive);
  messages.push_back(media_envelope(11, 40));
  wire::Envelope empty_media;
  empty_media.mutable_media();                 // a Media with every field at its default
  messages.push_back(empty_media);
  wire::Envelope body_less;
  body_less.set_session_id(4);
  wire::Envelope reused;
  for (int round = 0; round < 2; ++round) {
    for (const wire::Envelope& message : messages) {
      const std::string bytes = message.SerializeAsString();
      ASSERT_EQ(parse_datagram(bytes.data(), bytes.size(), &reused), ParseError::kNone);
      EXPECT_EQ(reused.SerializeAsString(), bytes);
      EXPECT_EQ(reused.body_case(), message.body_case());
    }
    const std::string bytes = body_less.SerializeAsString();
    EXPECT_EQ(parse_datagram(bytes.data(), bytes.size(), &reused), ParseError::kNoBody);
  }
}

TEST(ReusedEnvelope, ReuseMediaStartsFromAnEmptyMedia) {
  wire::Envelope envelope = media_envelope(3, 30);
  wire::Media* media = reuse_media(&envelope);
  EXPECT_EQ(envelope.session_id(), 0u);
  EXPECT_EQ(media->ByteSizeLong(), 0u);
  envelope.mutable_keep_alive();
  media = reuse_media(&envelope);
  EXPECT_TRUE(envelope.has_media());
  EXPECT_EQ(media->ByteSizeLong(), 0u);
}

// The payload packs a frame exactly as the .ecdc BitPacker packs one frame.
TEST(RawCodes, SameBitsAsEcdcPackerAndRoundTrip) {
  std::mt19937 random(11);
  for (int codebooks = 1; codebooks <= 32; ++codebooks) {
    int32_t codes[32];
    for (int k = 0; k < codebooks; ++k) codes[k] = static_cast<int32_t>(random() % 1024);
    std::ostringstream expected;
    BitPacker packer(10, expected);
    for (int k = 0; k < codebooks; ++k) packer.push(static_cast<uint32_t>(codes[k]));
    packer.flush();
    uint8_t packed[64];
    const size_t size = pack_raw_codes(codes, codebooks, 10, packed);
    ASSERT_EQ(size, raw_codes_bytes(codebooks, 10));
    ASSERT_EQ(std::string(reinterpret_cast<char*>(packed), size), expected.str()) << codebooks;
    int32_t unpacked[32];
    ASSERT_TRUE(unpack_raw_codes(packed, size, codebooks, 10, unpacked));
    for (int k = 0; k < codebooks; ++k) ASSERT_EQ(unpacked[k], codes[k]);
    // The wrong size or a set padding bit is a corrupt packet.
    EXPECT_FALSE(unpack_raw_codes(packed, size + 1, codebooks, 10, unpacked));
    if ((codebooks * 10) % 8 != 0) {
      packed[size - 1] |= 0x80;
      EXPECT_FALSE(unpack_raw_codes(packed, size, codebooks, 10, unpacked));
    }
  }
}

// Dropping codebooks from a packed frame equals packing the first codebooks.
TEST(RawCodes, TruncationEqualsPackingThePrefix) {
  std::mt19937 random(13);
  int32_t codes[32];
  for (int& code : codes) code = static_cast<int32_t>(random() % 1024);
  uint8_t full[64];
  const size_t full_size = pack_raw_codes(codes, 32, 10, full);
  for (int keep = 1; keep <= 32; ++keep) {
    uint8_t truncated[64], expected[64];
    const size_t size = truncate_raw_codes(full, full_size, 32, keep, 10, truncated);
    const size_t expected_size = pack_raw_codes(codes, keep, 10, expected);
    ASSERT_EQ(size, expected_size);
    ASSERT_EQ(std::memcmp(truncated, expected, size), 0) << keep;
  }
  uint8_t out[64];
  EXPECT_EQ(truncate_raw_codes(full, full_size, 32, 33, 10, out), 0u);
  EXPECT_EQ(truncate_raw_codes(full, full_size - 1, 32, 8, 10, out), 0u);
}

}  // namespace
}  // namespace encodec::net
