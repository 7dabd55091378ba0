// encodecd: the real-time media server. Clients say Hello over UDP or TCP, join
// rooms and send frames of EnCodec codes; the server forwards each frame to the
// room's other members without re-encoding (dropping the top codebooks for a
// member that asked for less bandwidth), transcodes to Opus for members that
// asked for it, and encodes PCM into codes for ROLE_ENCODE sessions. Protocol:
// proto/README.md.
//
// Usage:
//   encodec::server::Server server(model, model_checksum, options);  // binds
//   server.start();                       // I/O and compute threads in the background
//   ... server.udp_port() ...
//   server.stop("maintenance");           // Goodbye to every session, threads joined
//
// Threads: options.io_threads run the sockets (parsing, forwarding, rate limits);
// one compute thread runs every model pass (a StreamBatcher tick for all the
// streams the server encodes or decodes), never an I/O thread.
//
// Thread safety: start, stop, stats and the accessors may be called from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "encodec/encodec.h"

namespace encodec::server {

struct RoomSpec {
  enum class Kind { kCall, kBroadcast };
  std::string name;
  Kind kind = Kind::kCall;
  double max_bandwidth_kbps = 0.0;  // 0: no limit
};

// A secret that grants one room (proto/README.md, "Authentication").
struct RoomKeySpec {
  std::string room;  // one of ServerOptions::rooms
  std::string key;   // net::kMinSecretBytes or more
};

struct ServerOptions {
  std::string udp_listen = "127.0.0.1:7700";  // "" = no UDP
  std::string tcp_listen = "127.0.0.1:7701";  // "" = no TCP
  int io_threads = 2;
  int compute_threads = 1;                    // LibTorch threads of the compute thread's ticks
  std::string server_name = "encodecd";
  int keep_alive_interval_ms = 1000;
  int session_timeout_ms = 5000;
  int max_sessions = 256;
  int max_rooms = 64;
  int max_members_per_room = 16;
  int rate_limit_packets_per_second = 400;    // per source address (UDP) or connection (TCP)
  int rate_limit_burst = 400;
  // Frames the server decodes (for Opus members, from Opus senders) go through a
  // reorder window: a missing frame is concealed once this many later frames
  // are in. Each loss holds the stream back that long, and every Opus
  // listener's jitter buffer then carries it as delay (4 frames: 60 ms more at
  // 5% loss in bench/e2e_latency); 1 adds no more than the loss itself (a
  // frame overtaken on the way is then concealed, and dropped as late).
  int transcode_reorder_frames = 1;
  std::vector<RoomSpec> rooms;                // exist from the start
  // Access control: with a token or room keys, every message in both
  // directions must carry a valid authenticator (HMAC-SHA256 and a replay
  // counter); the rest is dropped and counted. Both empty: no authentication.
  std::string auth_token;                     // grants every room
  std::vector<RoomKeySpec> room_keys;         // each grants its room only
};

// Upper bounds of the compute-tick time histogram's buckets, seconds (a frame
// lasts 13.3 ms: a tick must end well within it).
inline constexpr size_t kComputeTickBuckets = 10;
inline constexpr std::array<double, kComputeTickBuckets> kComputeTickBucketSeconds = {
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.0133, 0.0267, 0.05, 0.1};

// Counters since start (a snapshot).
struct ServerStats {
  uint64_t sessions = 0;            // open now
  uint64_t rooms = 0;               // open now
  uint64_t sessions_opened = 0;
  uint64_t sessions_timed_out = 0;
  uint64_t packets_in = 0;          // datagrams and TCP messages
  uint64_t packets_out = 0;
  uint64_t media_in = 0;
  uint64_t media_out = 0;
  uint64_t malformed = 0;           // not a valid Envelope (or empty)
  uint64_t oversized = 0;           // datagrams over 1200 bytes, TCP lengths over the limit
  uint64_t bad_protocol_version = 0;
  uint64_t unknown_session = 0;     // UDP envelopes for no session (or from another address)
  uint64_t unknown_room = 0;
  uint64_t rejected = 0;            // other refused requests (Error sent)
  uint64_t rate_limited = 0;
  // With authentication: messages without a valid authenticator (none, unknown
  // key, bad tag, another session's key) or whose key does not grant the room
  // asked for; and authentic ones seen before (a counter already in or below the
  // replay window, a Hello's nonce seen before or its time over 30 s off).
  uint64_t unauthenticated = 0;
  uint64_t replayed = 0;
  uint64_t invalid_media = 0;       // bad payload, codebooks, or media outside a room
  uint64_t format_mismatch = 0;     // frames a member could not take (LM codes for a raw member)
  uint64_t raw_codes_requests = 0;  // LM senders asked to send raw codes for such members
  uint64_t reports = 0;             // receiver reports
  // What the receivers reported of the streams they hear (sums over members
  // and streams of each report's increase): frames lost (concealed), late, duplicated.
  uint64_t reported_lost = 0;
  uint64_t reported_late = 0;
  uint64_t reported_duplicates = 0;
  uint64_t send_dropped = 0;        // a socket or write queue was full
  uint64_t transcoded_frames = 0;   // Opus frames produced
  uint64_t encoded_frames = 0;      // code frames produced for ROLE_ENCODE sessions
  uint64_t compute_ticks = 0;
  // Ticks by compute time: counts per bucket of kComputeTickBucketSeconds (not
  // cumulative), the last beyond them all; and their total time.
  std::array<uint64_t, kComputeTickBuckets + 1> compute_tick_counts{};
  double compute_tick_seconds = 0.0;
  uint64_t compute_queue_depth = 0;  // work waiting for the compute thread now
  uint64_t compute_dropped = 0;     // work refused because the compute queue was full
  uint64_t compute_discarded = 0;   // media the compute thread had no stream for: dropped
  // The compute thread's reorder windows (code frames before the Opus
  // transcode, Opus senders' packets): frames dropped as duplicates, and as
  // late (after their slot was concealed, or older than the window keeps).
  uint64_t reorder_duplicates = 0;
  uint64_t reorder_late = 0;
  uint64_t transcode_concealed = 0;     // code frames the Opus transcode concealed (never came)
  uint64_t opus_in_frames = 0;          // Opus senders' packets decoded
  uint64_t opus_in_concealed = 0;       // Opus senders' packets that never came: concealed
  uint64_t opus_in_malformed = 0;       // Opus senders' packets libopus refused: concealed
  uint64_t opus_in_encoded_frames = 0;  // code frames made from Opus senders' audio
};

class Server {
 public:
  // `model`: the causal 24 kHz model the clients run (fast kernels are used);
  // `model_checksum`: what Hello.model.checksum must equal. Throws
  // std::invalid_argument for bad options (auth secrets too short or repeated,
  // a room key for a room not in options.rooms), ConfigError (server_config.h)
  // for a listening address that does not parse, and std::runtime_error naming
  // the address when a socket cannot be bound.
  Server(const EncodecModel& model, std::string model_checksum, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the threads and returns.
  void start();
  // Ends every session with a Goodbye carrying `reason`, stops the threads.
  // Idempotent; not from the server's own threads.
  void stop(const std::string& reason = "server shutting down");
  // Blocks until stop() or, with handle_signals, until SIGINT or SIGTERM (then
  // stops as stop() does).
  void wait(bool handle_signals);

  uint16_t udp_port() const;  // 0 without UDP
  uint16_t tcp_port() const;
  ServerStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace encodec::server
