// The impairment model against its options (same seed, same decisions; rates
// and delays within statistical bounds over 100k packets), and the UDP relay
// on loopback sockets: datagrams both ways, each client through its own
// upstream socket, the planned delay applied, and everything dropped at loss 1.
#include "encodec/net/impairment.h"

#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace encodec::net {
namespace {

using boost::asio::ip::udp;
using std::chrono::steady_clock;

struct Plan {
  int copies;
  int64_t delays_us[2];
  bool operator==(const Plan& other) const {
    return copies == other.copies && (copies < 1 || delays_us[0] == other.delays_us[0]) &&
           (copies < 2 || delays_us[1] == other.delays_us[1]);
  }
};

std::vector<Plan> plans(const ImpairmentOptions& options, int packets) {
  Impairment impairment(options);
  std::vector<Plan> result(packets);
  for (Plan& plan : result) plan.copies = impairment.plan(plan.delays_us);
  return result;
}

ImpairmentOptions everything() {
  ImpairmentOptions options;
  options.loss = 0.1;
  options.duplicate = 0.2;
  options.reorder = 0.15;
  options.reorder_ms = 30;
  options.delay_ms = 5;
  options.jitter_ms = 20;
  options.seed = 42;
  return options;
}

TEST(ImpairmentTest, SameSeedSameDecisions) {
  const ImpairmentOptions options = everything();
  EXPECT_EQ(plans(options, 10000), plans(options, 10000));
  ImpairmentOptions other_seed = options;
  other_seed.seed = 43;
  EXPECT_NE(plans(options, 10000), plans(other_seed, 10000));
}

// Within five standard deviations of the binomial mean.
void expect_rate(uint64_t hits, uint64_t trials, double probability, const char* what) {
  const double mean = probability * trials;
  const double sigma = std::sqrt(trials * probability * (1 - probability));
  EXPECT_NEAR(static_cast<double>(hits), mean, 5 * sigma) << what;
}

TEST(ImpairmentTest, RatesAndDelaysFollowTheOptions) {
  const ImpairmentOptions options = everything();
  Impairment impairment(options);
  constexpr int kPackets = 100000;
  uint64_t dropped = 0, duplicated = 0, delivered = 0, held_back = 0, same_delay_copies = 0;
  double jitter_sum_us = 0;
  uint64_t jitter_count = 0;
  for (int i = 0; i < kPackets; ++i) {
    int64_t delays_us[2] = {-1, -1};
    const int copies = impairment.plan(delays_us);
    ASSERT_GE(copies, 0);
    ASSERT_LE(copies, 2);
    if (copies == 0) {
      ++dropped;
      continue;
    }
    ++delivered;
    duplicated += copies == 2;
    same_delay_copies += copies == 2 && delays_us[0] == delays_us[1];
    // The reorder hold applies to the packet (both copies): the jitter alone
    // cannot reach it, so a delay past delay + jitter tells it apart.
    const bool held = delays_us[0] > 25000;
    held_back += held;
    for (int copy = 0; copy < copies; ++copy) {
      const int64_t extra_us = delays_us[copy] - 5000 - (held ? 30000 : 0);
      ASSERT_GE(extra_us, 0);
      ASSERT_LE(extra_us, 20000);
      jitter_sum_us += extra_us;
      ++jitter_count;
    }
  }
  const ImpairmentStats& stats = impairment.stats();
  EXPECT_EQ(stats.packets, uint64_t{kPackets});
  EXPECT_EQ(stats.dropped, dropped);
  EXPECT_EQ(stats.duplicated, duplicated);
  EXPECT_EQ(stats.reordered, held_back);
  expect_rate(dropped, kPackets, 0.1, "loss");
  expect_rate(duplicated, delivered, 0.2, "duplication");
  expect_rate(held_back, delivered, 0.15, "reordering");
  // The copies of a duplicate draw their jitter apart (equal to the
  // microsecond about once in 20000).
  EXPECT_LT(same_delay_copies, duplicated / 100);
  // Uniform on [0, 20 ms]: mean 10 ms, standard deviation 20/sqrt(12) ms.
  const double jitter_sigma_us = 20000 / std::sqrt(12.0) / std::sqrt(double(jitter_count));
  EXPECT_NEAR(jitter_sum_us / jitter_count, 10000, 5 * jitter_sigma_us);
}

TEST(ImpairmentTest, CleanOptionsDeliverEveryPacketOnceAtTheFixedDelay) {
  ImpairmentOptions options;
  options.delay_ms = 12.5;
  Impairment impairment(options);
  for (int i = 0; i < 1000; ++i) {
    int64_t delays_us[2];
    ASSERT_EQ(impairment.plan(delays_us), 1);
    ASSERT_EQ(delays_us[0], 12500);
  }
  options.loss = 1.0;
  Impairment lossy(options);
  int64_t delays_us[2];
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(lossy.plan(delays_us), 0);
  EXPECT_EQ(lossy.stats().dropped, 1000u);
}

// A relay on an io_context run by two threads, between blocking sockets.
class RelayTest : public ::testing::Test {
 protected:
  void start(const ImpairmentOptions& options) {
    server_.open(udp::v4());
    server_.bind(udp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
    relay_.emplace(io_, server_.local_endpoint(), options);
    for (auto& thread : threads_) thread = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (relay_) relay_->stop();
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();  // run() returns once the relay has no work
    }
  }
  udp::socket open_client() {
    udp::socket socket(client_io_);
    socket.open(udp::v4());
    socket.bind(udp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
    return socket;
  }
  static void send(udp::socket& socket, const std::string& text, const udp::endpoint& to) {
    socket.send_to(boost::asio::buffer(text), to);
  }
  // The next datagram, or nothing by the deadline.
  static std::optional<std::string> receive(udp::socket& socket, udp::endpoint* sender,
                                            std::chrono::milliseconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    while (socket.available() == 0) {
      if (steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    char bytes[2048];
    const size_t size = socket.receive_from(boost::asio::buffer(bytes), *sender);
    return std::string(bytes, size);
  }

  boost::asio::io_context io_;
  boost::asio::io_context client_io_;  // for the test's own blocking sockets
  udp::socket server_{client_io_};
  std::optional<UdpImpairmentRelay> relay_;
  std::thread threads_[2];
};

TEST_F(RelayTest, ForwardsBothWaysWithOneUpstreamSocketPerClient) {
  start(ImpairmentOptions{});
  udp::socket first = open_client();
  udp::socket second = open_client();
  const udp::endpoint relay = relay_->local_endpoint();
  EXPECT_TRUE(relay.address().is_loopback());
  EXPECT_NE(relay.port(), 0);

  constexpr int kRounds = 10;
  std::set<udp::endpoint> upstream_senders;
  for (int round = 0; round < kRounds; ++round) {
    for (udp::socket* client : {&first, &second}) {
      const std::string name = client == &first ? "first" : "second";
      send(*client, "ping " + name + " " + std::to_string(round), relay);
      udp::endpoint sender;
      const auto request = receive(server_, &sender, std::chrono::milliseconds(500));
      ASSERT_TRUE(request.has_value());
      EXPECT_EQ(*request, "ping " + name + " " + std::to_string(round));
      upstream_senders.insert(sender);
      send(server_, "pong " + *request, sender);
      const auto answer = receive(*client, &sender, std::chrono::milliseconds(500));
      ASSERT_TRUE(answer.has_value());
      EXPECT_EQ(*answer, "pong ping " + name + " " + std::to_string(round));
      EXPECT_EQ(sender, relay);
    }
  }
  EXPECT_EQ(upstream_senders.size(), 2u);  // one per client, kept across rounds
  EXPECT_EQ(upstream_senders.count(relay), 0u);
  const ImpairmentStats upstream = relay_->upstream_stats();
  const ImpairmentStats downstream = relay_->downstream_stats();
  EXPECT_EQ(upstream.packets, 2u * kRounds);
  EXPECT_EQ(downstream.packets, 2u * kRounds);
  EXPECT_EQ(upstream.dropped + downstream.dropped, 0u);
}

TEST_F(RelayTest, DelaysEachDirectionByThePlannedDelay) {
  ImpairmentOptions options;
  options.delay_ms = 40;
  start(options);
  udp::socket client = open_client();
  const auto sent = steady_clock::now();
  send(client, "hello", relay_->local_endpoint());
  udp::endpoint sender;
  ASSERT_TRUE(receive(server_, &sender, std::chrono::milliseconds(500)).has_value());
  const auto upstream_ms = std::chrono::duration<double, std::milli>(steady_clock::now() - sent);
  EXPECT_GE(upstream_ms.count(), 40.0);
  const auto answered = steady_clock::now();
  send(server_, "hi", sender);
  ASSERT_TRUE(receive(client, &sender, std::chrono::milliseconds(500)).has_value());
  const auto downstream_ms =
      std::chrono::duration<double, std::milli>(steady_clock::now() - answered);
  EXPECT_GE(downstream_ms.count(), 40.0);
}

TEST_F(RelayTest, DropsEverythingAtLossOneAndCountsIt) {
  ImpairmentOptions options;
  options.loss = 1.0;
  start(options);
  udp::socket client = open_client();
  constexpr int kDatagrams = 20;
  for (int i = 0; i < kDatagrams; ++i)
    send(client, "lost " + std::to_string(i), relay_->local_endpoint());
  // Wait until the relay has seen them all, then for anything to come through.
  const auto deadline = steady_clock::now() + std::chrono::milliseconds(500);
  while (relay_->upstream_stats().packets < kDatagrams && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  udp::endpoint sender;
  EXPECT_FALSE(receive(server_, &sender, std::chrono::milliseconds(100)).has_value());
  const ImpairmentStats upstream = relay_->upstream_stats();
  EXPECT_EQ(upstream.packets, uint64_t{kDatagrams});
  EXPECT_EQ(upstream.dropped, uint64_t{kDatagrams});
  EXPECT_EQ(relay_->downstream_stats().packets, 0u);
}

TEST_F(RelayTest, StopEndsTheIoContextAndIsIdempotent) {
  start(ImpairmentOptions{});
  udp::socket client = open_client();
  send(client, "in flight", relay_->local_endpoint());
  relay_->stop();
  relay_->stop();
  for (auto& thread : threads_) thread.join();  // would hang if a handler kept work alive
  EXPECT_TRUE(io_.stopped());
  relay_.reset();  // the destructor stops again
}

}  // namespace
}  // namespace encodec::net
