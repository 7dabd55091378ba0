// encodecd against bad peers on 127.0.0.1: malformed and oversized messages,
// wrong protocol versions and models, unknown rooms, floods, peers that vanish,
// and server-side encoding. Each bad input is refused and counted, and the
// sessions beside it are unaffected.
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "encodec/net/codes_payload.h"
#include "golden.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

class ServerRobustnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    dir_ = make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, loopback_server_options());
    server_->start();
  }

  static wire::Envelope join(const std::string& room, wire::Role role, bool create) {
    wire::Envelope envelope;
    envelope.mutable_join()->set_room(room);
    envelope.mutable_join()->set_role(role);
    envelope.mutable_join()->set_create(create);
    return envelope;
  }

  static bool is_error(const wire::Envelope& envelope) { return envelope.has_error(); }

  // Waits until `predicate` holds for the server's counters (they are updated on its threads).
  bool eventually(const std::function<bool(const server::ServerStats&)>& predicate,
                  milliseconds timeout = milliseconds(3000)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (predicate(server_->stats())) return true;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return predicate(server_->stats());
  }

  void expect_clean_call(const std::function<void()>& meanwhile, int members = 2) {
    testing::expect_clean_call(server_->udp_port(), dir_, meanwhile, members);
  }

  const LiveModel* live_ = nullptr;
  std::string dir_;
  std::unique_ptr<server::Server> server_;
};

TEST_F(ServerRobustnessTest, MalformedEmptyAndOversizedDatagramsAreDroppedAndCounted) {
  RawPeer peer(server_->udp_port(), /*tcp=*/false);
  peer.send_bytes(std::string("\xff\xff\xff\xff\x0f", 5));   // not protobuf
  peer.send_bytes(std::string("\x08\x03", 2));               // an Envelope with no body
  peer.send_bytes(std::string(1500, '\x01'));                // over 1200 bytes
  peer.send_bytes(std::string(60000, '\x02'));               // far over
  ASSERT_TRUE(eventually([](const server::ServerStats& s) { return s.malformed == 2 && s.oversized == 2; }))
      << "malformed " << server_->stats().malformed << ", oversized " << server_->stats().oversized;
  // No answer to any of them (the server must not reflect), and the address still works.
  EXPECT_FALSE(peer.receive(milliseconds(100)).has_value());
  EXPECT_NE(peer.hello(), 0u);
}

TEST_F(ServerRobustnessTest, WrongProtocolVersionGetsAnErrorNamingBothVersions) {
  for (const bool tcp : {false, true}) {
    RawPeer peer(tcp ? server_->tcp_port() : server_->udp_port(), tcp);
    EXPECT_EQ(peer.hello(/*protocol_version=*/7), 0u);
  }
  RawPeer peer(server_->udp_port(), false);
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol_version(7);
  peer.send(hello);
  const auto reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), wire::ERROR_PROTOCOL_VERSION);
  EXPECT_TRUE(reply->error().fatal());
  EXPECT_NE(reply->error().text().find("version 7"), std::string::npos) << reply->error().text();
  EXPECT_NE(reply->error().text().find("this server speaks version 2"), std::string::npos) << reply->error().text();
  EXPECT_NE(reply->error().text().find("upgrade the server"), std::string::npos) << reply->error().text();
  EXPECT_EQ(server_->stats().bad_protocol_version, 3u);
  EXPECT_EQ(server_->stats().sessions, 0u);
}

// A version-1 client (LM packets on the BLAS-dependent coder) is told what
// changed, over both transports.
TEST_F(ServerRobustnessTest, VersionOneClientIsToldThatLmPacketsChanged) {
  ASSERT_EQ(net::kProtocolVersion, 2u);
  for (const bool tcp : {false, true}) {
    RawPeer peer(tcp ? server_->tcp_port() : server_->udp_port(), tcp);
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol_version(1);
    peer.send(hello);
    const auto reply = peer.receive_until(is_error, milliseconds(2000));
    ASSERT_TRUE(reply) << (tcp ? "tcp" : "udp");
    EXPECT_EQ(reply->error().code(), wire::ERROR_PROTOCOL_VERSION);
    EXPECT_TRUE(reply->error().fatal());
    const std::string& text = reply->error().text();
    EXPECT_NE(text.find("protocol version 1 is not supported: this server speaks version 2"), std::string::npos) << text;
    EXPECT_NE(text.find("deterministic LM coder det1"), std::string::npos) << text;
    EXPECT_NE(text.find("upgrade the client"), std::string::npos) << text;
  }
  EXPECT_EQ(server_->stats().bad_protocol_version, 2u);
  EXPECT_EQ(server_->stats().sessions, 0u);
}

TEST_F(ServerRobustnessTest, ModelWithOtherWeightsIsRefusedNamingBothChecksums) {
  RawPeer peer(server_->udp_port(), false);
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol_version(net::kProtocolVersion);
  hello.mutable_hello()->mutable_model()->set_name("encodec_24khz");
  hello.mutable_hello()->mutable_model()->set_checksum("0123abcd");
  peer.send(hello);
  const auto reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), wire::ERROR_UNSUPPORTED);
  EXPECT_NE(reply->error().text().find("0123abcd"), std::string::npos);
  EXPECT_NE(reply->error().text().find(live_->checksum), std::string::npos);
  EXPECT_EQ(server_->stats().sessions, 0u);
}

TEST_F(ServerRobustnessTest, UnknownRoomsBadNamesAndBadRequestsAreRefusedAndCounted) {
  RawPeer peer(server_->udp_port(), false);
  ASSERT_NE(peer.hello(), 0u);
  peer.send(join("nowhere", wire::ROLE_LISTEN, /*create=*/false));
  auto reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), wire::ERROR_UNKNOWN_ROOM);
  EXPECT_NE(reply->error().text().find("'nowhere'"), std::string::npos);
  EXPECT_EQ(server_->stats().unknown_room, 1u);

  peer.send(join("no spaces allowed", wire::ROLE_CALL, true));
  reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->error().text().find("Join.room"), std::string::npos);

  wire::Envelope bad_bandwidth = join("room", wire::ROLE_CALL, true);
  bad_bandwidth.mutable_join()->mutable_receive()->set_bandwidth_kbps(7.0);
  peer.send(bad_bandwidth);
  reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->error().text().find("Join.receive.bandwidth_kbps"), std::string::npos);

  // Media outside a room, and a second sender for a broadcast.
  wire::Envelope media;
  media.mutable_media()->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
  media.mutable_media()->set_num_codebooks(8);
  media.mutable_media()->set_payload(std::string(10, '\0'));
  peer.send(media);
  reply = peer.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), wire::ERROR_NOT_JOINED);

  peer.send(join("radio", wire::ROLE_SEND, true));
  ASSERT_TRUE(peer.receive_until([](const wire::Envelope& e) { return e.has_joined(); }, milliseconds(2000)));
  RawPeer second(server_->udp_port(), false);
  ASSERT_NE(second.hello(), 0u);
  second.send(join("radio", wire::ROLE_SEND, true));
  reply = second.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), wire::ERROR_ROOM_HAS_SENDER);

  // A payload that does not match its codebook count is dropped and counted.
  media.mutable_media()->set_payload(std::string(9, '\0'));
  peer.send(media);
  EXPECT_TRUE(eventually([](const server::ServerStats& s) { return s.invalid_media == 2; }));
  EXPECT_GE(server_->stats().rejected, 4u);
}

TEST_F(ServerRobustnessTest, TcpFramingErrorsEndTheConnectionWithAnError) {
  {
    RawPeer peer(server_->tcp_port(), /*tcp=*/true);
    peer.send_bytes(std::string("\xff\xff\xff\x7f", 4));  // a 2 GiB length
    const auto reply = peer.receive_until(is_error, milliseconds(2000));
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), wire::ERROR_TOO_LARGE);
    EXPECT_FALSE(peer.receive(milliseconds(500)).has_value());
    EXPECT_TRUE(peer.tcp_closed());
  }
  {
    RawPeer peer(server_->tcp_port(), true);
    peer.send_bytes(std::string("\x05\0\0\0\xff\xff\xff\xff\xff", 9));
    const auto reply = peer.receive_until(is_error, milliseconds(2000));
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), wire::ERROR_MALFORMED);
  }
  EXPECT_TRUE(eventually([](const server::ServerStats& s) { return s.oversized == 1 && s.malformed == 1; }));
}

// Thousands of datagrams from one address while a call goes on: the flood is
// cut by the rate limit, the call comes out bit for bit.
TEST_F(ServerRobustnessTest, FloodFromOneAddressIsRateLimitedAndTheCallIsUnaffected) {
  expect_clean_call([&] {
    RawPeer flooder(server_->udp_port(), false);
    wire::Envelope keep_alive;
    keep_alive.set_session_id(12345);
    keep_alive.mutable_keep_alive()->set_sent_time_us(1);
    const std::string bytes = keep_alive.SerializeAsString();
    for (int i = 0; i < 5000; ++i) {
      flooder.send_bytes(bytes);
      if (i % 500 == 0) std::this_thread::sleep_for(milliseconds(1));
    }
  });
  const server::ServerStats stats = server_->stats();
  EXPECT_GT(stats.rate_limited, 1000u);
  EXPECT_LE(stats.unknown_session, 5000u - stats.rate_limited);
}

// A member that vanishes mid-call (its socket closed, no goodbye) costs the
// others nothing: the server forwards to it until its keep-alives are missed,
// then ends its session.
TEST_F(ServerRobustnessTest, VanishedMemberTimesOutWithoutDisturbingTheCall) {
  expect_clean_call(
      [&] {
        ASSERT_TRUE(eventually([](const server::ServerStats& s) { return s.rooms == 1; }));
        RawPeer vanishing(server_->udp_port(), false);
        ASSERT_NE(vanishing.hello(), 0u);
        vanishing.send(join("call", wire::ROLE_LISTEN, false));
        // It hears the start of the call, then is gone (the socket closes here).
        EXPECT_TRUE(vanishing.receive_until([](const wire::Envelope& e) { return e.has_media(); },
                                            milliseconds(3000)));
      },
      /*members=*/3);
  EXPECT_TRUE(eventually([](const server::ServerStats& s) { return s.sessions_timed_out == 1; },
                         milliseconds(4000)));
}

// ROLE_ENCODE over TCP: 16-bit PCM in, the codes a local StreamingEncoder gives
// for the same samples out, one Media per frame, the last marked.
TEST_F(ServerRobustnessTest, ServerSideEncodingReturnsTheStreamingEncodersCodes) {
  const std::vector<float> samples = read_wav(golden_path("inputs/speech_24k.wav"));
  const std::vector<CodeFrame> expected = encode_samples(live_->model, samples, 6.0);

  RawPeer peer(server_->tcp_port(), /*tcp=*/true);
  ASSERT_NE(peer.hello(), 0u);
  wire::Envelope request = join("", wire::ROLE_ENCODE, false);
  request.mutable_join()->mutable_receive()->set_bandwidth_kbps(6.0);
  peer.send(request);
  ASSERT_TRUE(peer.receive_until([](const wire::Envelope& e) { return e.has_joined(); }, milliseconds(2000)));
  for (size_t at = 0; at < samples.size(); at += 441) {  // blocks that are not frames
    const size_t count = std::min<size_t>(441, samples.size() - at);
    std::string pcm(2 * count, '\0');
    for (size_t i = 0; i < count; ++i) {
      const auto value = static_cast<int16_t>(std::lround(samples[at + i] * 32768.0f));
      pcm[2 * i] = static_cast<char>(value & 0xff);
      pcm[2 * i + 1] = static_cast<char>((value >> 8) & 0xff);
    }
    wire::Envelope media;
    media.mutable_media()->set_kind(wire::PAYLOAD_KIND_PCM16);
    media.mutable_media()->set_payload(pcm);
    media.mutable_media()->set_end_of_stream(at + count == samples.size());
    peer.send(media);
  }
  std::vector<CodeFrame> received;
  for (;;) {
    const auto reply = peer.receive_until([](const wire::Envelope& e) { return e.has_media(); }, milliseconds(5000));
    ASSERT_TRUE(reply) << "after " << received.size() << " frames";
    const wire::Media& media = reply->media();
    if (!media.payload().empty()) {
      EXPECT_EQ(media.sequence(), received.size());
      CodeFrame got;
      got.num_codebooks = static_cast<int>(media.num_codebooks());
      ASSERT_TRUE(net::unpack_raw_codes(reinterpret_cast<const uint8_t*>(media.payload().data()),
                                        media.payload().size(), got.num_codebooks, 10, got.codes.data()));
      received.push_back(got);
    }
    if (media.end_of_stream()) break;
  }
  ASSERT_EQ(received.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(received[i].num_codebooks, expected[i].num_codebooks);
    for (int k = 0; k < expected[i].num_codebooks; ++k) ASSERT_EQ(received[i].codes[k], expected[i].codes[k]) << i;
  }
  EXPECT_EQ(server_->stats().encoded_frames, expected.size());
}

// Stopping the server says goodbye to every session, UDP and TCP.
TEST_F(ServerRobustnessTest, StopSaysGoodbyeToEverySession) {
  RawPeer udp(server_->udp_port(), false), tcp(server_->tcp_port(), true);
  ASSERT_NE(udp.hello(), 0u);
  ASSERT_NE(tcp.hello(), 0u);
  udp.send(join("room", wire::ROLE_CALL, true));
  ASSERT_TRUE(udp.receive_until([](const wire::Envelope& e) { return e.has_joined(); }, milliseconds(2000)));
  std::thread stopper([&] { server_->stop("maintenance"); });
  for (RawPeer* peer : {&udp, &tcp}) {
    const auto bye = peer->receive_until([](const wire::Envelope& e) { return e.has_goodbye(); }, milliseconds(3000));
    ASSERT_TRUE(bye);
    EXPECT_EQ(bye->goodbye().reason(), "maintenance");
  }
  stopper.join();
}

}  // namespace
}  // namespace encodec::testing
