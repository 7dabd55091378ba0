// The message authentication of the wire (net/auth.h): the tag is OpenSSL's
// HMAC-SHA256 over exactly what proto/README.md says, any changed byte or
// context fails it, the trailer is a real Envelope.auth field, and the replay
// window accepts and refuses as RFC 4303 section 3.4.3 says.
#include "encodec/net/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "encodec/net/wire.h"

namespace encodec::net {
namespace {

constexpr char kSecret[] = "a secret of the auth test";

std::vector<uint8_t> le_bytes(uint64_t value, size_t count) {
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < count; ++i) bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
  return bytes;
}

wire::Envelope media_envelope(uint64_t session_id) {
  wire::Envelope envelope;
  envelope.set_session_id(session_id);
  envelope.mutable_media()->set_sequence(42);
  envelope.mutable_media()->set_payload(std::string(10, '\x5a'));
  return envelope;
}

// Signed datagram bytes of `envelope`.
std::vector<uint8_t> signed_datagram(const wire::Envelope& envelope, const MessageSigner& signer) {
  std::vector<uint8_t> bytes(kMaxDatagramBytes);
  bytes.resize(serialize_datagram(envelope, bytes.data(), bytes.size(), &signer));
  return bytes;
}

TEST(AuthTest, TagIsOpenSslHmacSha256OverTheDocumentedBytes) {
  // Keys shorter than, as long as and longer than SHA-256's 64-byte block (hashed first).
  for (const std::string secret : {std::string(kSecret), std::string(64, 'k'), std::string(100, 'l')}) {
    SCOPED_TRACE(secret.size());
    const MessageKey key(secret);
    constexpr uint64_t kSession = 0x0123456789abcdefULL, kCounter = 7;
    const std::string envelope = media_envelope(kSession).SerializeAsString();
    std::vector<uint8_t> message(envelope.begin(), envelope.end());
    message.resize(envelope.size() + kAuthTrailerBytes);
    key.sign(Direction::kServerToClient, kSession, kCounter, message.data(), envelope.size());

    // direction || session id (LE) || every byte before the tag.
    std::vector<uint8_t> covered = {2};
    const std::vector<uint8_t> session = le_bytes(kSession, 8);
    covered.insert(covered.end(), session.begin(), session.end());
    covered.insert(covered.end(), message.begin(), message.end() - kTagBytes);
    uint8_t expected[EVP_MAX_MD_SIZE];
    unsigned int expected_size = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), covered.data(), covered.size(),
         expected, &expected_size);
    ASSERT_EQ(expected_size, 32u);
    EXPECT_EQ(std::vector<uint8_t>(message.end() - kTagBytes, message.end()),
              std::vector<uint8_t>(expected, expected + kTagBytes));

    // The trailer head: Envelope field 15 (32 bytes), key id, counter, tag field.
    const uint8_t* trailer = message.data() + envelope.size();
    EXPECT_EQ(trailer[0], 0x7a);
    EXPECT_EQ(trailer[1], 32);
    EXPECT_EQ(trailer[2], 0x0d);
    EXPECT_EQ(std::vector<uint8_t>(trailer + 3, trailer + 7), le_bytes(key.id(), 4));
    EXPECT_EQ(trailer[7], 0x11);
    EXPECT_EQ(std::vector<uint8_t>(trailer + 8, trailer + 16), le_bytes(kCounter, 8));
    EXPECT_EQ(trailer[16], 0x1a);
    EXPECT_EQ(trailer[17], 16);
  }
}

TEST(AuthTest, KeyIdIsTheFirstFourBytesOfTheContextHash) {
  const std::string input = std::string("encodec key id") + kSecret;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(input.data()), input.size(), digest);
  const uint32_t expected = digest[0] | digest[1] << 8 | digest[2] << 16 | uint32_t{digest[3]} << 24;
  EXPECT_EQ(key_id_of(kSecret), expected);
  EXPECT_EQ(MessageKey(kSecret).id(), expected);
  EXPECT_NE(key_id_of("another secret of the test"), expected);
}

TEST(AuthTest, SignedDatagramIsAnEnvelopeWithItsAuthField) {
  MessageSigner signer(std::make_shared<const MessageKey>(kSecret), Direction::kClientToServer);
  signer.set_session(99);
  const wire::Envelope envelope = media_envelope(99);
  const std::vector<uint8_t> first = signed_datagram(envelope, signer);
  const std::vector<uint8_t> second = signed_datagram(envelope, signer);
  ASSERT_EQ(first.size(), envelope.ByteSizeLong() + kAuthTrailerBytes);

  // Any protobuf parser reads the trailer as Envelope.auth.
  wire::Envelope parsed;
  ASSERT_TRUE(parsed.ParseFromArray(second.data(), static_cast<int>(second.size())));
  EXPECT_EQ(parsed.auth().key_id(), key_id_of(kSecret));
  EXPECT_EQ(parsed.auth().counter(), 2u);  // the counter goes up per message
  EXPECT_EQ(parsed.auth().tag().size(), kTagBytes);
  EXPECT_EQ(parsed.media().sequence(), 42u);

  const SignedMessage message = split_signed(second.data(), second.size());
  ASSERT_TRUE(message.has_trailer);
  EXPECT_EQ(message.envelope_size, envelope.ByteSizeLong());
  EXPECT_EQ(message.counter, 2u);
  EXPECT_EQ(message.key_id, key_id_of(kSecret));
  EXPECT_TRUE(MessageKey(kSecret).verify(Direction::kClientToServer, 99, message));
  EXPECT_EQ(split_signed(first.data(), first.size()).counter, 1u);
}

TEST(AuthTest, AnyChangedByteOrContextFailsVerification) {
  const MessageKey key(kSecret);
  MessageSigner signer(std::make_shared<const MessageKey>(kSecret), Direction::kClientToServer);
  signer.set_session(5);
  const std::vector<uint8_t> datagram = signed_datagram(media_envelope(5), signer);
  ASSERT_TRUE(key.verify(Direction::kClientToServer, 5, split_signed(datagram.data(), datagram.size())));
  for (size_t i = 0; i < datagram.size(); ++i) {
    std::vector<uint8_t> tampered = datagram;
    tampered[i] ^= 0x01;
    EXPECT_FALSE(key.verify(Direction::kClientToServer, 5, split_signed(tampered.data(), tampered.size())))
        << "byte " << i << " of " << datagram.size() << " flipped";
  }
  const SignedMessage message = split_signed(datagram.data(), datagram.size());
  EXPECT_FALSE(key.verify(Direction::kServerToClient, 5, message));  // reflected back
  EXPECT_FALSE(key.verify(Direction::kClientToServer, 6, message));  // another session
  EXPECT_FALSE(MessageKey("another secret of the test").verify(Direction::kClientToServer, 5, message));
  // Unsigned: no trailer, the whole message is the Envelope.
  const std::string unsigned_bytes = media_envelope(5).SerializeAsString();
  const SignedMessage plain =
      split_signed(reinterpret_cast<const uint8_t*>(unsigned_bytes.data()), unsigned_bytes.size());
  EXPECT_FALSE(plain.has_trailer);
  EXPECT_EQ(plain.envelope_size, unsigned_bytes.size());
  EXPECT_FALSE(key.verify(Direction::kClientToServer, 5, plain));
}

TEST(AuthTest, TrailerCountsAgainstTheDatagramLimit) {
  MessageSigner signer(std::make_shared<const MessageKey>(kSecret), Direction::kClientToServer);
  wire::Envelope envelope;
  envelope.mutable_media()->set_payload(std::string(1180, 'p'));
  const size_t size = envelope.ByteSizeLong();
  ASSERT_LE(size, kMaxDatagramBytes);
  ASSERT_GT(size + kAuthTrailerBytes, kMaxDatagramBytes);
  uint8_t buffer[kMaxDatagramBytes];
  EXPECT_EQ(serialize_datagram(envelope, buffer, sizeof buffer), size);
  EXPECT_EQ(serialize_datagram(envelope, buffer, sizeof buffer, &signer), 0u);
}

TEST(AuthTest, TcpReaderSplitsTheTrailerOfEachMessage) {
  MessageSigner signer(std::make_shared<const MessageKey>(kSecret), Direction::kServerToClient);
  signer.set_session(3);
  std::string stream;
  ASSERT_TRUE(append_tcp_frame(media_envelope(3), &stream, &signer));
  ASSERT_TRUE(append_tcp_frame(media_envelope(3), &stream));  // unsigned
  TcpFrameReader reader;
  reader.append(stream.data(), stream.size());
  wire::Envelope envelope;
  ASSERT_EQ(reader.next(&envelope), TcpFrameReader::kMessage);
  EXPECT_FALSE(envelope.has_auth());  // parsed without the trailer
  EXPECT_EQ(envelope.media().sequence(), 42u);
  EXPECT_TRUE(reader.last_message().has_trailer);
  EXPECT_EQ(reader.last_message().counter, 1u);
  EXPECT_TRUE(MessageKey(kSecret).verify(Direction::kServerToClient, 3, reader.last_message()));
  ASSERT_EQ(reader.next(&envelope), TcpFrameReader::kMessage);
  EXPECT_FALSE(reader.last_message().has_trailer);
}

TEST(ReplayWindowTest, InOrderCountersAreAcceptedOnce) {
  ReplayWindow window;
  EXPECT_FALSE(window.check(0));  // counters start at 1
  for (uint64_t counter = 1; counter <= 200; ++counter) {
    ASSERT_TRUE(window.check(counter)) << counter;
    window.accept(counter);
    ASSERT_FALSE(window.check(counter)) << counter << " twice";
  }
  EXPECT_EQ(window.highest(), 200u);
}

TEST(ReplayWindowTest, OutOfOrderWithinTheWindowIsAcceptedDuplicatesAreNot) {
  ReplayWindow window;
  window.accept(100);
  for (const uint64_t counter : {90, 99, 37, 64}) {  // 37 = 100 - 63: the window's oldest
    EXPECT_TRUE(window.check(counter)) << counter;
    window.accept(counter);
  }
  for (const uint64_t counter : {90, 99, 37, 64, 100}) EXPECT_FALSE(window.check(counter)) << counter;
  EXPECT_TRUE(window.check(91));  // never seen
  EXPECT_EQ(window.highest(), 100u);
}

TEST(ReplayWindowTest, CountersOlderThanTheWindowAreRefused) {
  ReplayWindow window;
  window.accept(100);
  EXPECT_FALSE(window.check(36));  // 100 - 64
  EXPECT_FALSE(window.check(1));
  EXPECT_TRUE(window.check(37));
  // A jump ahead moves the window: what it leaves behind is refused, what it
  // still covers keeps its bits.
  window.accept(90);
  window.accept(150);
  EXPECT_FALSE(window.check(86));   // 150 - 64
  EXPECT_FALSE(window.check(90));   // seen, still inside
  EXPECT_FALSE(window.check(100));  // seen, still inside
  EXPECT_TRUE(window.check(95));
  window.accept(1000);              // far ahead: the bitmap starts over
  EXPECT_FALSE(window.check(150));
  EXPECT_TRUE(window.check(999));
  EXPECT_TRUE(window.check(937));
  EXPECT_FALSE(window.check(936));
}

}  // namespace
}  // namespace encodec::net
