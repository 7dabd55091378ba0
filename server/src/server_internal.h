// The server's sessions, rooms and per-thread scratch (private to server/).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/ip/udp.hpp>

#include "encodec/net/auth.h"
#include "encodec/net/wire.h"
#include "encodec/server.h"
#include "encodec/streaming.h"
#include "peer.h"

namespace encodec::server {

// Packets per second with a burst allowance; refills continuously.
class TokenBucket {
 public:
  TokenBucket() = default;
  TokenBucket(int per_second, int burst, int64_t now_us)
      : per_second_(per_second), burst_(burst), tokens_(burst), last_us(now_us) {}
  bool take(int64_t now_us) {
    tokens_ = std::min<double>(burst_, tokens_ + (now_us - last_us) * 1e-6 * per_second_);
    last_us = now_us;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  double per_second_ = 0, burst_ = 0, tokens_ = 0;

 public:
  int64_t last_us = 0;
};

struct Room;

// A secret of the configuration and what it grants.
struct GrantedKey {
  std::shared_ptr<const net::MessageKey> key;
  std::string room;  // "" (the shared token): every room
};

// The nonces of the Hellos accepted in the last kMemoryUs, so that a captured
// Hello cannot open a session again. A Hello is accepted only within
// kMaxClockSkewMs of the server's clock, so remembering it twice that long
// covers every moment at which it could come back.
class SeenHellos {
 public:
  static constexpr int64_t kMaxClockSkewMs = 30'000;
  static constexpr int64_t kMemoryUs = 2 * kMaxClockSkewMs * 1000;
  // Bounded: each needs a Hello signed with a configured key.
  static constexpr size_t kMaxRemembered = 1 << 16;
  enum class Seen { kNew, kBefore, kFull };
  // Remembers the nonce (kNew) unless it was seen before; kFull: too many to remember.
  Seen remember(const std::string& nonce, int64_t now_us);
  // Which session the Hello with this nonce opened (0: none yet).
  void set_session(const std::string& nonce, uint64_t session_id);
  uint64_t session_of(const std::string& nonce);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, uint64_t> session_by_nonce_;
  std::deque<std::pair<int64_t, std::string>> by_age_;  // (seen at, nonce), oldest first
};

struct Session {
  uint64_t id = 0;
  bool over_tcp = false;
  boost::asio::ip::udp::endpoint udp_peer;
  std::shared_ptr<Peer> peer;
  std::string name;
  bool has_model = false;
  std::atomic<int64_t> last_heard_us{0};
  std::atomic<bool> confirmed{false};  // sent something after its Hello
  // With authentication: the key its Hello was signed with (null: none), the
  // Hello's nonce (echoed in Welcome), the window of the client's counters.
  std::shared_ptr<const GrantedKey> key;
  std::string hello_nonce;
  std::mutex replay_mutex;
  net::ReplayWindow received;  // under replay_mutex

  // Under the server's mutex.
  std::weak_ptr<Room> room;
  wire::Role role = wire::ROLE_UNSPECIFIED;
  uint32_t stream_id = 0;
  wire::PayloadKind receive_kind = wire::PAYLOAD_KIND_RAW_CODES;
  int receive_codebooks = 0;  // 0: as sent
  int opus_frame_samples = 480;
  int opus_bitrate_bps = 6000;
  double encode_bandwidth_kbps = 0.0;
  // A sender that left a room while the compute thread still held its stream
  // (an Opus sender's last packets): that room, where the stream's last code
  // frames still go, until the engine has removed the session.
  std::shared_ptr<Room> departed_room;
  int engine_removals_pending = 0;
  // Senders' stream ids whose LM context this member has had from a context start.
  std::vector<uint32_t> lm_synced;
  // When this sender was last asked to send raw codes (Server: ask_for_raw_codes).
  std::atomic<int64_t> last_raw_request_us{0};
  // What this member's receiver reports last said of each stream (they are
  // cumulative): the server's counters add what each new report adds.
  struct ReportedTotals {
    uint64_t lost = 0, late = 0, duplicates = 0;
  };
  std::unordered_map<uint32_t, ReportedTotals> reported;
};

struct Room {
  std::string name;
  RoomSpec::Kind kind = RoomSpec::Kind::kCall;
  bool preconfigured = false;
  int max_codebooks = 32;
  std::vector<std::shared_ptr<Session>> members;
  uint32_t next_stream_id = 1;
  const Session* sender = nullptr;  // a broadcast's ROLE_SEND member
};

struct Recipient {
  Peer* peer = nullptr;
  int codebooks = 0;  // 0: as sent
};

// One receiving context's scratch for forwarding (a UDP lane or a TCP
// connection): reserved once, so that forwarding allocates nothing.
struct Forwarding {
  static constexpr size_t kMaxRecipients = 64;
  Forwarding() {
    recipients.reserve(kMaxRecipients);
    peers_hold.resize(kMaxRecipients);
  }
  std::vector<Recipient> recipients;
  std::vector<std::shared_ptr<Peer>> peers_hold;  // keeps the peers alive while sending
  std::array<int32_t, kMaxStreamCodebooks> codes{};
  std::array<uint8_t, net::kMaxDatagramBytes> payload{};
  wire::Envelope out;  // reused for every forwarded frame
};

struct Counters {
  std::atomic<uint64_t> sessions_opened{0}, sessions_timed_out{0}, packets_in{0}, packets_out{0},
      media_in{0}, media_out{0}, malformed{0}, oversized{0}, bad_protocol_version{0},
      unknown_session{0}, unknown_room{0}, rejected{0}, rate_limited{0}, invalid_media{0},
      format_mismatch{0}, raw_codes_requests{0}, reports{0}, send_dropped{0}, compute_dropped{0},
      reported_lost{0}, reported_late{0}, reported_duplicates{0},
      unauthenticated{0}, replayed{0};
};

}  // namespace encodec::server
