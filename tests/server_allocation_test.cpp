// The server's per-packet path allocates nothing once warmed up: forwarding
// (as sent, and with codebooks dropped) on the I/O threads, the Opus
// transcode on the compute thread behind its reorder window, and a member that
// sends Opus (decoded, encoded, its codes forwarded from the compute thread),
// counted over every malloc of the process (support/count_allocations.h)
// while the senders stream frames through it, some swapped and some twice;
// with access control too (every datagram verified, replay-checked and signed).
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "count_allocations.h"
#include "encodec/net/codes_payload.h"
#include "encodec/net/opus_codec.h"
#include "golden.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

// Reads every datagram waiting on a socket; returns how many.
int drain(int fd) {
  uint8_t buffer[2048];
  int count = 0;
  while (::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) > 0) ++count;
  return count;
}

class ServerAllocationTest : public ::testing::TestWithParam<bool> {};

TEST_P(ServerAllocationTest, ForwardingAndTranscodingAllocateNothingAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  const LiveModel* live = golden_live_model();
  const bool signed_messages = GetParam();
  constexpr char kToken[] = "the-allocation-test-token";
  server::ServerOptions options = loopback_server_options();
  if (signed_messages) options.auth_token = kToken;
  options.session_timeout_ms = 30000;  // the receivers send nothing
  options.transcode_reorder_frames = 2;  // the swapped neighbours below are taken in order
  server::Server server(live->model, live->checksum, options);
  server.start();

  RawPeer sender(server.udp_port(), false), as_sent(server.udp_port(), false),
      fewer_codebooks(server.udp_port(), false), opus(server.udp_port(), false);
  RawPeer opus_sender(server.udp_port(), false), hears_codes(server.udp_port(), false);
  if (signed_messages) {
    for (RawPeer* peer : {&sender, &as_sent, &fewer_codebooks, &opus, &opus_sender, &hears_codes}) {
      peer->use_key(kToken);
    }
  }
  const auto joined = [](const wire::Envelope& e) { return e.has_joined(); };
  ASSERT_NE(sender.hello(), 0u);
  wire::Envelope join;
  join.mutable_join()->set_room("room");
  join.mutable_join()->set_role(wire::ROLE_CALL);
  join.mutable_join()->set_create(true);
  sender.send(join);
  ASSERT_TRUE(sender.receive_until(joined, milliseconds(2000)));
  join.mutable_join()->set_role(wire::ROLE_LISTEN);
  for (RawPeer* peer : {&as_sent, &fewer_codebooks, &opus}) {
    ASSERT_NE(peer->hello(), 0u);
    wire::Envelope request = join;
    if (peer == &fewer_codebooks) request.mutable_join()->mutable_receive()->set_bandwidth_kbps(3.0);
    if (peer == &opus) request.mutable_join()->mutable_receive()->set_kind(wire::PAYLOAD_KIND_OPUS);
    peer->send(request);
    ASSERT_TRUE(peer->receive_until(joined, milliseconds(2000)));
  }
  // A second room: a peer without the model sends Opus, a member hears codes.
  ASSERT_NE(opus_sender.hello(net::kProtocolVersion, /*with_model=*/false), 0u);
  ASSERT_NE(hears_codes.hello(), 0u);
  wire::Envelope opus_join;
  opus_join.mutable_join()->set_room("opus-in");
  opus_join.mutable_join()->set_role(wire::ROLE_SEND);
  opus_join.mutable_join()->set_create(true);
  opus_join.mutable_join()->mutable_receive()->set_kind(wire::PAYLOAD_KIND_OPUS);
  opus_sender.send(opus_join);
  ASSERT_TRUE(opus_sender.receive_until(joined, milliseconds(2000)));
  wire::Envelope codes_join;
  codes_join.mutable_join()->set_room("opus-in");
  codes_join.mutable_join()->set_role(wire::ROLE_LISTEN);
  hears_codes.send(codes_join);
  ASSERT_TRUE(hears_codes.receive_until(joined, milliseconds(2000)));

  // Every datagram serialized beforehand, so that the test's own sending does not allocate.
  constexpr int kWarmUpFrames = 300, kCountedFrames = 600;
  std::mt19937 random(3);
  std::vector<std::string> datagrams;
  for (int sequence = 0; sequence < kWarmUpFrames + kCountedFrames; ++sequence) {
    int32_t codes[8];
    for (int32_t& code : codes) code = static_cast<int32_t>(random() % 1024);
    uint8_t payload[16];
    wire::Envelope envelope;
    envelope.set_session_id(sender.session_id());
    wire::Media* media = envelope.mutable_media();
    media->set_sequence(static_cast<uint32_t>(sequence));
    media->set_timestamp_samples(uint64_t{320} * sequence);
    media->set_bandwidth_kbps(6.0);
    media->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
    media->set_num_codebooks(8);
    media->set_payload(payload, net::pack_raw_codes(codes, 8, 10, payload));
    datagrams.push_back(sender.serialize(envelope));
  }
  // Disorder for the reorder windows: every 50th frame swapped with the next
  // (below, every 70th datagram is sent twice).
  for (size_t i = 25; i + 1 < datagrams.size(); i += 50) std::swap(datagrams[i], datagrams[i + 1]);
  const int code_datagrams = static_cast<int>(datagrams.size());
  // The Opus sender's packets (2 per 3 code frames: 20 ms against 13.3 ms), a
  // tone, some swapped too.
  std::string error;
  net::OpusFrameOptions opus_options;
  auto opus_encoder = net::OpusFrameEncoder::create(opus_options, &error);
  ASSERT_TRUE(opus_encoder) << error;
  std::vector<std::string> opus_datagrams;
  const int opus_frames = code_datagrams * 2 / 3;
  for (int sequence = 0; sequence < opus_frames; ++sequence) {
    float tone[480];
    for (int i = 0; i < 480; ++i) tone[i] = 0.3f * std::sin(0.05f * static_cast<float>(480 * sequence + i));
    uint8_t packet[1000];
    const size_t bytes = opus_encoder->encode(tone, packet, sizeof packet);
    ASSERT_GT(bytes, 0u);
    wire::Envelope envelope;
    envelope.set_session_id(opus_sender.session_id());
    wire::Media* media = envelope.mutable_media();
    media->set_sequence(static_cast<uint32_t>(sequence));
    media->set_kind(wire::PAYLOAD_KIND_OPUS);
    media->set_payload(packet, bytes);
    opus_datagrams.push_back(opus_sender.serialize(envelope));
  }
  for (size_t i = 30; i + 1 < opus_datagrams.size(); i += 40) std::swap(opus_datagrams[i], opus_datagrams[i + 1]);
  int received[4] = {0, 0, 0, 0};
  RawPeer* receivers[4] = {&as_sent, &fewer_codebooks, &opus, &hears_codes};
  int opus_sent = 0;
  const auto stream = [&](int first, int end) {
    for (int i = first; i < end; ++i) {
      sender.send_bytes(datagrams[i]);
      if (i % 70 == 69) sender.send_bytes(datagrams[i]);
      if (i % 3 != 2 && opus_sent < opus_frames) opus_sender.send_bytes(opus_datagrams[opus_sent++]);
      // Faster than real time, slow enough for the compute thread to keep up.
      std::this_thread::sleep_for(std::chrono::microseconds(2000));
      for (int r = 0; r < 4; ++r) received[r] += drain(receivers[r]->native_handle());
    }
  };
  stream(0, kWarmUpFrames);
  std::this_thread::sleep_for(milliseconds(100));
  for (int r = 0; r < 4; ++r) received[r] += drain(receivers[r]->native_handle());
  const int opus_before = received[2];
  const int codes_from_opus_before = received[3];
  const int opus_sent_before = opus_sent;
  // The counter sees allocations (a vector's buffer comes from malloc too).
  allocation_count = 0;
  allocations_counted = true;
  {
    volatile size_t size = 64;
    std::vector<char> probe(size);
    ASSERT_EQ(probe.size(), 64u);
  }
  allocations_counted = false;
  ASSERT_EQ(allocation_count.exchange(0), 1) << "the malloc replacement is not in use";
  allocations_counted = true;
  stream(kWarmUpFrames, code_datagrams);
  std::this_thread::sleep_for(milliseconds(100));
  allocations_counted = false;
  for (int r = 0; r < 4; ++r) received[r] += drain(receivers[r]->native_handle());

  EXPECT_EQ(allocation_count.load(), 0)
      << "allocations while forwarding " << code_datagrams - kWarmUpFrames << " frames";
  // The paths really ran: every frame reached both code receivers, the Opus
  // member got 20 ms frames (2 per 3 code frames) all along, and the Opus
  // sender's audio came out as code frames (3 per 2 Opus packets).
  const int counted = code_datagrams - kWarmUpFrames;
  EXPECT_GE(received[0], code_datagrams);
  EXPECT_GE(received[1], code_datagrams);
  EXPECT_GE(received[2] - opus_before, counted * 2 / 3 - 10);
  EXPECT_GE(received[3] - codes_from_opus_before, (opus_sent - opus_sent_before) * 3 / 2 - 10);
  const server::ServerStats stats = server.stats();
  EXPECT_EQ(stats.send_dropped + stats.compute_dropped, 0u);
  // Datagrams sent twice: signed, the replay window drops the copies first.
  EXPECT_GT(signed_messages ? stats.replayed : stats.reorder_duplicates, 0u);
  EXPECT_EQ(stats.unauthenticated, 0u);
  EXPECT_EQ(stats.reorder_late + stats.transcode_concealed + stats.opus_in_concealed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Unsigned, ServerAllocationTest, ::testing::Values(false));
INSTANTIATE_TEST_SUITE_P(Signed, ServerAllocationTest, ::testing::Values(true));

}  // namespace
}  // namespace encodec::testing
