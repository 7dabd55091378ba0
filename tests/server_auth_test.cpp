// encodecd with access control on 127.0.0.1: Hellos with a wrong or no token
// are refused with one Error, room keys grant their room only, tampered and
// replayed messages (UDP and TCP, from the same address and from another) are
// dropped and counted, a replayed Hello opens nothing, and the sessions beside
// it all are unaffected (a signed call comes out bit for bit).
#include <chrono>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>

#include "encodec/net/codes_payload.h"
#include "golden.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

constexpr char kToken[] = "the-shared-token-of-the-test";
constexpr char kRoomKey[] = "the-key-of-room-keyed-only";
constexpr char kWrongToken[] = "not-the-token-of-this-server";

class ServerAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    dir_ = make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, auth_options());
    server_->start();
  }

  static server::ServerOptions auth_options() {
    server::ServerOptions options = loopback_server_options();
    options.session_timeout_ms = 10000;  // raw peers send no keep-alives
    options.rooms = {{"call", server::RoomSpec::Kind::kCall, 0.0},
                     {"keyed", server::RoomSpec::Kind::kCall, 0.0}};
    options.auth_token = kToken;
    options.room_keys = {{"keyed", kRoomKey}};
    return options;
  }

  static wire::Envelope join(const std::string& room, wire::Role role) {
    wire::Envelope envelope;
    envelope.mutable_join()->set_room(room);
    envelope.mutable_join()->set_role(role);
    return envelope;
  }
  static bool is_error(const wire::Envelope& e) { return e.has_error(); }
  static bool is_joined(const wire::Envelope& e) { return e.has_joined(); }
  static bool is_media(const wire::Envelope& e) { return e.has_media(); }

  // A peer signing with `secret` whose session is joined to `room` as `role`.
  std::unique_ptr<RawPeer> member(const std::string& secret, const std::string& room, wire::Role role,
                                  bool tcp = false) const {
    auto peer = std::make_unique<RawPeer>(tcp ? server_->tcp_port() : server_->udp_port(), tcp);
    peer->use_key(secret);
    EXPECT_NE(peer->hello(), 0u);
    peer->send(join(room, role));
    EXPECT_TRUE(peer->receive_until(is_joined, milliseconds(2000)));
    return peer;
  }

  static wire::Envelope media(uint32_t sequence) {
    int32_t codes[8] = {1, 2, 3, 4, 5, 6, 7, static_cast<int32_t>(sequence % 1024)};
    uint8_t payload[16];
    wire::Envelope envelope;
    wire::Media* body = envelope.mutable_media();
    body->set_sequence(sequence);
    body->set_bandwidth_kbps(6.0);
    body->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
    body->set_num_codebooks(8);
    body->set_payload(payload, net::pack_raw_codes(codes, 8, 10, payload));
    return envelope;
  }

  // The sequences of every Media `peer` receives until it has been quiet for a while.
  static std::vector<uint32_t> media_heard(RawPeer& peer) {
    std::vector<uint32_t> sequences;
    while (const auto envelope = peer.receive_until(is_media, milliseconds(300))) {
      sequences.push_back(envelope->media().sequence());
    }
    return sequences;
  }

  static std::vector<uint32_t> sequences_up_to(uint32_t count) {
    std::vector<uint32_t> sequences(count);
    for (uint32_t i = 0; i < count; ++i) sequences[i] = i;
    return sequences;
  }

  // Why encodec-client, over TCP with `token`, could not call in room "call"
  // ("" and a failure when it could).
  std::string client_refusal(const std::string& token) const {
    client::ClientOptions options;
    options.server = "127.0.0.1:" + std::to_string(server_->tcp_port());
    options.tcp = true;
    options.room = "call";
    options.input = "tone";
    options.output = "null";
    options.token = token;
    try {
      ClientRun(options).get();
    } catch (const std::exception& error) {
      return error.what();
    }
    ADD_FAILURE() << "the client called with token " << token;
    return "";
  }

  bool eventually(const std::function<bool(const server::ServerStats&)>& predicate) const {
    const auto deadline = std::chrono::steady_clock::now() + milliseconds(3000);
    while (std::chrono::steady_clock::now() < deadline) {
      if (predicate(server_->stats())) return true;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return predicate(server_->stats());
  }

  // A Hello with a nonce of its own, `skew_ms` off the clock (signed by the peer that sends it).
  static wire::Envelope signed_hello(int64_t skew_ms = 0) {
    wire::Envelope envelope;
    wire::Hello* hello = envelope.mutable_hello();
    hello->set_protocol_version(net::kProtocolVersion);
    hello->mutable_model()->set_name(golden_live_model()->model.name());
    hello->mutable_model()->set_checksum(golden_live_model()->checksum);
    const int64_t now_ms = std::chrono::duration_cast<milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    hello->set_auth_time_unix_ms(static_cast<uint64_t>(now_ms + skew_ms));
    static int hellos = 0;
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "nonce-%010d", ++hellos);
    hello->set_auth_nonce(nonce, 16);
    return envelope;
  }

  const LiveModel* live_ = nullptr;
  std::string dir_;
  std::unique_ptr<server::Server> server_;
};

// Hellos without a token or with a wrong one, over UDP and TCP, from raw peers
// and from encodec's own client, each get the one Error "authentication
// failed"; a flood of unsigned media is cut by the rate limit first and
// counted; the call with the token beside them all is bit for bit.
TEST_F(ServerAuthTest, WrongOrNoTokenIsRefusedAndCountedWhileASignedCallGoesOn) {
  std::string client_error;
  uint64_t flood_sent = 0;
  expect_clean_call(
      server_->udp_port(), dir_,
      [&] {
        for (const bool tcp : {false, true}) {
          for (const char* secret : {"", kWrongToken}) {
            RawPeer peer(tcp ? server_->tcp_port() : server_->udp_port(), tcp);
            if (*secret != '\0') peer.use_key(secret);
            EXPECT_EQ(peer.hello(), 0u);
          }
        }
        client_error = client_refusal(kWrongToken);
        // Media signed with a key the server does not know, from one source, as fast as it goes.
        RawPeer flooder(server_->udp_port(), false);
        flooder.use_key(kWrongToken);
        wire::Envelope bogus = media(1);
        bogus.set_session_id(777);
        const std::string bytes = flooder.serialize(bogus);
        for (; flood_sent < 3000; ++flood_sent) {
          flooder.send_bytes(bytes);
          if (flood_sent % 500 == 0) std::this_thread::sleep_for(milliseconds(1));
        }
      },
      /*members=*/2, kToken);
  EXPECT_NE(client_error.find("the server refused Hello: authentication failed"), std::string::npos)
      << client_error;
  EXPECT_NE(client_error.find("is the token the server's"), std::string::npos) << client_error;
  const uint64_t refused_hellos = 5;  // 4 raw peers, 1 client
  ASSERT_TRUE(eventually([&](const server::ServerStats& s) {
    return s.unauthenticated + s.rate_limited == refused_hellos + flood_sent;
  })) << "unauthenticated " << server_->stats().unauthenticated << ", rate limited "
      << server_->stats().rate_limited;
  const server::ServerStats stats = server_->stats();
  EXPECT_GT(stats.rate_limited, 0u);  // the cheap drop before the HMAC
  EXPECT_EQ(stats.sessions_opened, 2u);
  EXPECT_EQ(stats.replayed, 0u);
}

TEST_F(ServerAuthTest, RefusedHelloGetsOneErrorThatSaysOnlyAuthenticationFailed) {
  for (const bool tcp : {false, true}) {
    for (const char* secret : {"", kWrongToken}) {
      SCOPED_TRACE(std::string(tcp ? "TCP, " : "UDP, ") + (*secret ? "wrong token" : "no token"));
      RawPeer peer(tcp ? server_->tcp_port() : server_->udp_port(), tcp);
      if (*secret != '\0') peer.use_key(secret);
      peer.send(signed_hello());
      const auto reply = peer.receive(milliseconds(2000));
      ASSERT_TRUE(reply);
      ASSERT_TRUE(reply->has_error());
      EXPECT_EQ(reply->error().code(), wire::ERROR_UNAUTHENTICATED);
      EXPECT_EQ(reply->error().text(), "authentication failed");
      EXPECT_TRUE(reply->error().fatal());
      EXPECT_FALSE(peer.receive(milliseconds(100)).has_value());  // one answer, no more
    }
  }
  EXPECT_EQ(server_->stats().unauthenticated, 4u);
  EXPECT_EQ(server_->stats().sessions, 0u);
}

TEST_F(ServerAuthTest, RoomKeyGrantsItsRoomOnly) {
  auto peer = member(kRoomKey, "keyed", wire::ROLE_CALL);
  peer->send(join("call", wire::ROLE_CALL));
  const auto refused = peer->receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error().code(), wire::ERROR_UNAUTHENTICATED);
  EXPECT_EQ(refused->error().text(), "Join.room: this key grants room 'keyed' only, not 'call'");
  auto tcp = member(kRoomKey, "keyed", wire::ROLE_LISTEN, /*tcp=*/true);
  tcp->send(join("", wire::ROLE_ENCODE));
  const auto no_encode = tcp->receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(no_encode);
  EXPECT_NE(no_encode->error().text().find("ROLE_ENCODE needs the shared token"), std::string::npos);

  // encodec-client says which room the key grants and exits with an error.
  const std::string refusal = client_refusal(kRoomKey);
  EXPECT_NE(refusal.find("the server refused joining room 'call': Join.room: this key grants room "
                         "'keyed' only"),
            std::string::npos)
      << refusal;
  // The token grants both rooms.
  member(kToken, "keyed", wire::ROLE_LISTEN);
  member(kToken, "call", wire::ROLE_LISTEN);
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.unauthenticated, 3u);
  EXPECT_EQ(stats.sessions_opened, 5u);
}

// Datagrams with a flipped byte (payload, counter, tag) or no authenticator
// are dropped; the listener gets every real frame once, signed for its session.
TEST_F(ServerAuthTest, TamperedAndUnsignedDatagramsAreDroppedAndCounted) {
  auto sender = member(kToken, "call", wire::ROLE_CALL);
  auto listener = member(kToken, "call", wire::ROLE_LISTEN);
  constexpr uint32_t kFrames = 30;
  uint64_t dropped = 0;
  for (uint32_t sequence = 0; sequence < kFrames; ++sequence) {
    const std::string bytes = sender->serialize(media(sequence));
    if (sequence % 5 == 0) {
      // A flipped bit in the payload, the counter, the tag; and the frame unsigned.
      for (const size_t at : {bytes.size() - net::kAuthTrailerBytes - 3, bytes.size() - 20, bytes.size() - 1}) {
        std::string tampered = bytes;
        tampered[at] ^= 0x04;
        sender->send_bytes(tampered);
        ++dropped;
      }
      sender->send_bytes(bytes.substr(0, bytes.size() - net::kAuthTrailerBytes));
      ++dropped;
    }
    sender->send_bytes(bytes);
  }
  EXPECT_EQ(media_heard(*listener), sequences_up_to(kFrames));
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.unauthenticated, dropped);
  EXPECT_EQ(stats.media_in, kFrames);
  EXPECT_EQ(stats.replayed, 0u);
  // What the server sends is signed for the listener's session.
  const std::string& last = listener->last_received();
  const net::SignedMessage message =
      net::split_signed(reinterpret_cast<const uint8_t*>(last.data()), last.size());
  ASSERT_TRUE(message.has_trailer);
  EXPECT_TRUE(net::MessageKey(kToken).verify(net::Direction::kServerToClient, listener->session_id(), message));
  EXPECT_FALSE(net::MessageKey(kToken).verify(net::Direction::kServerToClient, sender->session_id(), message));
}

// A captured datagram sent again, from the sender's address and from another,
// and once it is older than the window: dropped as replayed, the stream as sent.
TEST_F(ServerAuthTest, ReplayedDatagramsAreDroppedAndCountedFromAnyAddress) {
  auto sender = member(kToken, "call", wire::ROLE_CALL);
  auto listener = member(kToken, "call", wire::ROLE_LISTEN);
  RawPeer elsewhere(server_->udp_port(), false);
  constexpr uint32_t kFrames = 100;
  std::string captured;
  for (uint32_t sequence = 0; sequence < kFrames; ++sequence) {
    const std::string bytes = sender->serialize(media(sequence));
    sender->send_bytes(bytes);
    if (sequence == 10) captured = bytes;
    if (sequence == 12) {  // within the window, once the server has taken the original
      ASSERT_TRUE(eventually([](const server::ServerStats& s) { return s.media_in == 13; }));
      sender->send_bytes(captured);
      sender->send_bytes(captured);
      elsewhere.send_bytes(captured);
    }
  }
  sender->send_bytes(captured);  // 90 messages later: older than the window
  EXPECT_EQ(media_heard(*listener), sequences_up_to(kFrames));
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.replayed, 4u);
  EXPECT_EQ(stats.media_in, kFrames);
  EXPECT_EQ(stats.unauthenticated, 0u);
  EXPECT_EQ(stats.unknown_session, 0u);  // the replay from elsewhere never got that far
}

TEST_F(ServerAuthTest, ReplayedTcpMessageIsDroppedAndCounted) {
  auto peer = member(kToken, "call", wire::ROLE_LISTEN, /*tcp=*/true);
  wire::Envelope keep_alive;
  keep_alive.mutable_keep_alive()->set_sent_time_us(1234);
  const std::string bytes = peer->serialize(keep_alive);
  peer->send_bytes(bytes);
  peer->send_bytes(bytes);
  const auto is_reply = [](const wire::Envelope& e) { return e.has_keep_alive(); };
  EXPECT_TRUE(peer->receive_until(is_reply, milliseconds(2000)));
  EXPECT_FALSE(peer->receive_until(is_reply, milliseconds(300)));  // one echo only
  EXPECT_EQ(server_->stats().replayed, 1u);
}

// A captured Hello opens no second session, from another address or the same
// once its session is under way; a stale one (60 s old) is refused; a Hello
// sent twice before its session says anything (a lost Welcome) gets the same Welcome.
TEST_F(ServerAuthTest, ReplayedOrStaleHelloIsRefused) {
  RawPeer client(server_->udp_port(), false), elsewhere(server_->udp_port(), false);
  client.use_key(kToken);
  const wire::Envelope hello = signed_hello();
  client.send(hello);
  const std::string captured = client.last_sent();
  const auto is_welcome = [](const wire::Envelope& e) { return e.has_welcome(); };
  const auto welcome = client.receive_until(is_welcome, milliseconds(2000));
  ASSERT_TRUE(welcome);
  EXPECT_EQ(welcome->welcome().hello_nonce(), hello.hello().auth_nonce());
  client.send(hello);  // signed again (its next counter), as a client retransmits
  const auto again = client.receive_until(is_welcome, milliseconds(2000));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->welcome().session_id(), welcome->welcome().session_id());
  // The captured bytes: their counter was seen, from this address or another.
  client.send_bytes(captured);
  elsewhere.send_bytes(captured);
  EXPECT_FALSE(client.receive(milliseconds(300)).has_value());  // nothing answered
  EXPECT_FALSE(elsewhere.receive(milliseconds(10)).has_value());

  // Once the session said something, even a Hello signed anew is a replay.
  client.set_session(welcome->welcome().session_id());
  wire::Envelope keep_alive;
  keep_alive.mutable_keep_alive()->set_sent_time_us(1);
  client.send(keep_alive);
  ASSERT_TRUE(client.receive_until([](const wire::Envelope& e) { return e.has_keep_alive(); },
                                   milliseconds(2000)));
  client.set_session(0);
  client.send(hello);
  EXPECT_FALSE(client.receive_until(is_welcome, milliseconds(300)));

  RawPeer stale(server_->udp_port(), false);
  stale.use_key(kToken);
  stale.send(signed_hello(/*skew_ms=*/-60'000));
  const auto refused = stale.receive_until(is_error, milliseconds(2000));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error().code(), wire::ERROR_UNAUTHENTICATED);
  EXPECT_NE(refused->error().text().find("s from the server's clock"), std::string::npos);

  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.replayed, 4u);  // the copy here and elsewhere, the Hello once confirmed, stale
  EXPECT_EQ(stats.sessions_opened, 1u);
  EXPECT_EQ(stats.sessions, 1u);
  EXPECT_EQ(stats.unauthenticated, 0u);
}

TEST(ServerAuthOptionsTest, BadSecretsAreRefusedNamingTheKey) {
  ENCODEC_REQUIRE_GOLDEN();
  const LiveModel* live = golden_live_model();
  const auto refusal = [&](server::ServerOptions options) -> std::string {
    try {
      server::Server server(live->model, live->checksum, options);
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
    return "(accepted)";
  };
  server::ServerOptions options = loopback_server_options();
  options.rooms = {{"keyed", server::RoomSpec::Kind::kCall, 0.0}};
  options.auth_token = "short";
  EXPECT_EQ(refusal(options), "auth_token: 5 bytes (at least 16)");
  options.auth_token = kToken;
  options.room_keys = {{"other", kRoomKey}};
  EXPECT_EQ(refusal(options),
            "room_keys[0] (room 'other'): not one of the rooms listed in options.rooms");
  options.room_keys = {{"keyed", kToken}};
  EXPECT_EQ(refusal(options),
            "room_keys[0] (room 'keyed'): the same secret as another key (each key must differ)");
}

}  // namespace
}  // namespace encodec::testing
