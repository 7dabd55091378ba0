// The server's per-packet path allocates nothing once warmed up: forwarding
// (as sent, and with codebooks dropped) on the I/O threads and the Opus
// transcode on the compute thread, counted over every malloc of the process
// (support/count_allocations.h) while a sender streams frames through it.
#include <sys/socket.h>

#include <chrono>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "count_allocations.h"
#include "encodec/net/codes_payload.h"
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

TEST(ServerAllocationTest, ForwardingAndTranscodingAllocateNothingAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  const LiveModel* live = golden_live_model();
  server::ServerOptions options = loopback_server_options();
  options.session_timeout_ms = 30000;  // the receivers send nothing
  server::Server server(live->model, live->checksum, options);
  server.start();

  RawPeer sender(server.udp_port(), false), as_sent(server.udp_port(), false),
      fewer_codebooks(server.udp_port(), false), opus(server.udp_port(), false);
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
    datagrams.push_back(envelope.SerializeAsString());
  }
  int received[3] = {0, 0, 0};
  RawPeer* receivers[3] = {&as_sent, &fewer_codebooks, &opus};
  const auto stream = [&](int first, int count) {
    for (int i = first; i < first + count; ++i) {
      sender.send_bytes(datagrams[i]);
      // Faster than real time, slow enough for the compute thread to keep up.
      std::this_thread::sleep_for(std::chrono::microseconds(1500));
      for (int r = 0; r < 3; ++r) received[r] += drain(receivers[r]->native_handle());
    }
  };
  stream(0, kWarmUpFrames);
  std::this_thread::sleep_for(milliseconds(100));
  for (int r = 0; r < 3; ++r) received[r] += drain(receivers[r]->native_handle());
  const int opus_before = received[2];
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
  stream(kWarmUpFrames, kCountedFrames);
  std::this_thread::sleep_for(milliseconds(100));
  allocations_counted = false;
  for (int r = 0; r < 3; ++r) received[r] += drain(receivers[r]->native_handle());

  EXPECT_EQ(allocation_count.load(), 0) << "allocations while forwarding " << kCountedFrames << " frames";
  // The paths really ran: every frame reached both code receivers, and the
  // Opus member got 20 ms frames (3 per 2 code frames) all along.
  EXPECT_GE(received[0], kWarmUpFrames + kCountedFrames);
  EXPECT_GE(received[1], kWarmUpFrames + kCountedFrames);
  EXPECT_GE(received[2] - opus_before, kCountedFrames * 2 / 3 - 10);
  EXPECT_EQ(server.stats().send_dropped + server.stats().compute_dropped, 0u);
}

}  // namespace
}  // namespace encodec::testing
