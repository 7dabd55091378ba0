// A seeded model of a bad network (loss, duplication, reordering, delay
// jitter), and a UDP relay that applies it between a client and a server on
// loopback: tests and bench/e2e_latency put it in the media path.
//
// Usage:
//   ImpairmentOptions options{.loss = 0.05, .jitter_ms = 10, .seed = 7};
//   boost::asio::io_context io;
//   UdpImpairmentRelay relay(io, server_endpoint, options);  // listens on 127.0.0.1:0
//   client connects to relay.local_endpoint(); io.run() on some thread
//
// Thread safety: an Impairment belongs to one caller; the relay runs on its
// io_context's threads (stop() from any thread).
#pragma once

#include <cstdint>
#include <memory>
#include <random>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>

namespace encodec::net {

struct ImpairmentOptions {
  double loss = 0.0;        // probability a packet is dropped
  double duplicate = 0.0;   // probability a delivered packet is delivered twice
  double reorder = 0.0;     // probability a packet is held back by reorder_ms extra
  double reorder_ms = 30.0;
  double delay_ms = 0.0;    // fixed one-way delay
  double jitter_ms = 0.0;   // extra delay, uniform in [0, jitter_ms]
  uint64_t seed = 1;
};

struct ImpairmentStats {
  uint64_t packets = 0;     // offered
  uint64_t dropped = 0;
  uint64_t duplicated = 0;  // delivered twice
  uint64_t reordered = 0;   // held back by reorder_ms (both copies of a duplicate)
};

// What happens to each packet, drawn from a seeded generator (the same seed
// gives the same decisions, with every standard library). Each packet draws the
// same five numbers whatever the options, so changing one probability leaves the
// other decisions of a seed in place. The copies of a duplicate draw their
// jitter apart.
class Impairment {
 public:
  explicit Impairment(ImpairmentOptions options);
  // Fills delays_us with the delay of each copy to deliver and returns how many
  // copies (0 = dropped, 1, or 2 = duplicated).
  int plan(int64_t delays_us[2]);
  const ImpairmentStats& stats() const { return stats_; }
  const ImpairmentOptions& options() const { return options_; }

 private:
  ImpairmentOptions options_;
  std::mt19937_64 random_;
  ImpairmentStats stats_;
};

// Listens on 127.0.0.1 (ephemeral port); datagrams from clients go to `server`
// and the server's answers back to the client they belong to (one upstream
// socket per client address, kept until stop), each direction through its own
// Impairment (seeds `seed` and `seed + 1`); a copy with a delay waits on a
// steady_timer. stop() closes the sockets and cancels the timers (copies in
// flight are lost), so the io_context runs out of work; the destructor stops.
class UdpImpairmentRelay {
 public:
  UdpImpairmentRelay(boost::asio::io_context& io, boost::asio::ip::udp::endpoint server,
                     ImpairmentOptions options);
  ~UdpImpairmentRelay();
  boost::asio::ip::udp::endpoint local_endpoint() const;
  // Both directions' counters (client to server, server to client).
  ImpairmentStats upstream_stats() const;
  ImpairmentStats downstream_stats() const;
  void stop();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace encodec::net
