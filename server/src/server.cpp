#include "encodec/server.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <optional>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include "encodec/net/codes_payload.h"
#include "encodec/net/jitter_buffer.h"
#include "encodec/net/tcp_connection.h"
#include "encodec/net/wire.h"
#include "encodec/server_config.h"
#include "media_engine.h"
#include "peer.h"
#include "server_internal.h"

namespace encodec::server {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;

namespace {

using net::steady_now_us;

// The listening address of a ServerOptions field, parsed as the configuration
// parses it (ConfigError naming the field).
std::pair<asio::ip::address, uint16_t> parse_listen(const std::string& text, const char* what) {
  const Endpoint endpoint = parse_endpoint(text, what);
  return {asio::ip::make_address(endpoint.address), endpoint.port};
}

}  // namespace

// ---------------------------------------------------------------------------

struct Server::Impl {
  // One UDP socket per I/O thread, all bound to one port (SO_REUSEPORT: the
  // kernel keeps each client on one socket), each with its own receive chain,
  // buffer and scratch, so lanes never share mutable state.
  struct UdpLane {
    explicit UdpLane(asio::io_context& io) : socket(io) {}
    udp::socket socket;
    std::array<uint8_t, 2048> buffer{};
    udp::endpoint from;
    wire::Envelope received;  // reused for every datagram
    Forwarding forwarding;
  };

  Impl(const EncodecModel& model, std::string checksum, ServerOptions options)
      : model(model),
        model_checksum(std::move(checksum)),
        options(std::move(options)),
        engine(model, this->options.compute_threads, this->options.transcode_reorder_frames, engine_counters),
        sweep_timer(io),
        random(std::random_device{}()) {
    engine.set_code_forwarder([this](uint64_t sender, const wire::Media& media) {
      forward_encoded_frame(sender, media);
    });
    engine.set_removal_listener([this](uint64_t session) { engine_removed(session); });
  }

  // Configuration and the model.
  EncodecModel model;
  std::string model_checksum;
  ServerOptions options;

  asio::io_context io;
  std::vector<std::unique_ptr<UdpLane>> udp_lanes;
  std::unique_ptr<tcp::acceptor> acceptor;
  uint16_t udp_port = 0, tcp_port = 0;
  std::vector<std::thread> io_threads;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work;

  EngineCounters engine_counters;
  // The compute thread's forwarding scratch (Opus senders' code frames).
  Forwarding engine_forwarding;
  MediaEngine engine;
  asio::steady_timer sweep_timer;

  // Sessions and rooms, under `mutex` (held for lookups and snapshots only:
  // sends happen outside it).
  std::mutex mutex;
  std::unordered_map<uint64_t, std::shared_ptr<Session>> sessions;
  // Senders that left while the engine still held their stream (engine_removed).
  std::unordered_map<uint64_t, std::shared_ptr<Session>> departed;
  std::map<udp::endpoint, uint64_t> udp_sessions;
  std::map<std::string, std::shared_ptr<Room>> rooms;
  std::mt19937_64 random;

  // Access control (empty: none): the configured secrets by key id, immutable
  // once built, and the Hellos seen lately.
  std::unordered_map<uint32_t, std::shared_ptr<const GrantedKey>> keys;
  SeenHellos seen_hellos;

  // Rate limits of UDP sources (TCP sessions keep theirs), under rate_mutex.
  std::mutex rate_mutex;
  std::map<udp::endpoint, TokenBucket> udp_buckets;

  Counters counters;

  std::mutex stop_mutex;
  std::condition_variable stopped_condition;
  bool started = false, stopped = false;

  // --- setup ---------------------------------------------------------------

  void bind() {
    if (!options.udp_listen.empty()) {
      const auto [address, port] = parse_listen(options.udp_listen, "udp_listen");
      uint16_t bound_port = port;
      for (int lane = 0; lane < std::max(1, options.io_threads); ++lane) {
        auto udp_lane = std::make_unique<UdpLane>(io);
        const udp::endpoint endpoint(address, bound_port);
        boost::system::error_code error;
        udp_lane->socket.open(endpoint.protocol(), error);
        if (!error) {
          const int one = 1;
          ::setsockopt(udp_lane->socket.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
          // Room for bursts while a lane is busy forwarding.
          udp_lane->socket.set_option(udp::socket::receive_buffer_size(4 << 20), error);
          udp_lane->socket.set_option(udp::socket::send_buffer_size(4 << 20), error);
          error.clear();
          udp_lane->socket.bind(endpoint, error);
        }
        if (error) {
          throw std::runtime_error("cannot listen on UDP " + options.udp_listen + ": " + error.message());
        }
        bound_port = udp_lane->socket.local_endpoint().port();
        udp_lanes.push_back(std::move(udp_lane));
      }
      udp_port = bound_port;
    }
    if (!options.tcp_listen.empty()) {
      const auto [address, port] = parse_listen(options.tcp_listen, "tcp_listen");
      const tcp::endpoint endpoint(address, port);
      acceptor = std::make_unique<tcp::acceptor>(io);
      boost::system::error_code error;
      acceptor->open(endpoint.protocol(), error);
      if (!error) acceptor->set_option(tcp::acceptor::reuse_address(true), error);
      if (!error) acceptor->bind(endpoint, error);
      if (!error) acceptor->listen(asio::socket_base::max_listen_connections, error);
      if (error) {
        throw std::runtime_error("cannot listen on TCP " + options.tcp_listen + ": " + error.message());
      }
      tcp_port = acceptor->local_endpoint().port();
    }
    for (const RoomSpec& spec : options.rooms) {
      auto room = std::make_shared<Room>();
      room->name = spec.name;
      room->kind = spec.kind;
      room->preconfigured = true;
      room->max_codebooks = spec.max_bandwidth_kbps > 0
                                ? model.config().num_codebooks(spec.max_bandwidth_kbps)
                                : model.config().n_q;
      rooms[spec.name] = room;
    }
  }

  // Throws std::invalid_argument naming the secret at fault.
  void build_keys() {
    const auto add = [this](const std::string& secret, const std::string& room, const std::string& what) {
      if (secret.size() < net::kMinSecretBytes) {
        throw std::invalid_argument(what + ": " + std::to_string(secret.size()) +
                                    " bytes (at least " + std::to_string(net::kMinSecretBytes) + ")");
      }
      auto granted = std::make_shared<GrantedKey>();
      granted->key = std::make_shared<const net::MessageKey>(secret);
      granted->room = room;
      // Equal ids are equal secrets (4 bytes of SHA-256 apart from that: 1 in 4 billion).
      if (!keys.emplace(granted->key->id(), std::move(granted)).second) {
        throw std::invalid_argument(what + ": the same secret as another key (each key must differ)");
      }
    };
    if (!options.auth_token.empty()) add(options.auth_token, "", "auth_token");
    for (size_t i = 0; i < options.room_keys.size(); ++i) {
      const RoomKeySpec& room_key = options.room_keys[i];
      const std::string what = "room_keys[" + std::to_string(i) + "] (room '" + room_key.room + "')";
      const bool listed = std::any_of(options.rooms.begin(), options.rooms.end(),
                                      [&](const RoomSpec& room) { return room.name == room_key.room; });
      if (!listed) throw std::invalid_argument(what + ": not one of the rooms listed in options.rooms");
      add(room_key.key, room_key.room, what);
    }
  }

  void start() {
    for (auto& lane : udp_lanes) receive_datagram(*lane);
    if (acceptor) accept();
    arm_sweep();
    engine.start();
    work = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(io.get_executor());
    for (int i = 0; i < std::max(1, options.io_threads); ++i) {
      io_threads.emplace_back([this] { io.run(); });
    }
  }

  // --- UDP -----------------------------------------------------------------

  void receive_datagram(UdpLane& lane) {
    lane.socket.async_receive_from(
        asio::buffer(lane.buffer), lane.from,
        [this, &lane](const boost::system::error_code& error, size_t bytes) {
          if (error == asio::error::operation_aborted) return;
          if (!error) on_datagram(lane, bytes);
          if (lane.socket.is_open()) receive_datagram(lane);
        });
  }

  bool udp_rate_allows(const udp::endpoint& from, int64_t now_us) {
    std::lock_guard<std::mutex> lock(rate_mutex);
    auto found = udp_buckets.find(from);
    if (found == udp_buckets.end()) {
      // Bounded: forget sources silent for a while before tracking a new one.
      if (udp_buckets.size() >= 4096) {
        for (auto it = udp_buckets.begin(); it != udp_buckets.end();) {
          it = now_us - it->second.last_us > 10'000'000 ? udp_buckets.erase(it) : std::next(it);
        }
        if (udp_buckets.size() >= 4096) return false;
      }
      found = udp_buckets.emplace(from, TokenBucket(options.rate_limit_packets_per_second,
                                                    options.rate_limit_burst, now_us))
                  .first;
    }
    return found->second.take(now_us);
  }

  void on_datagram(UdpLane& lane, size_t bytes) {
    counters.packets_in.fetch_add(1);
    const int64_t now_us = steady_now_us();
    if (!udp_rate_allows(lane.from, now_us)) {
      counters.rate_limited.fetch_add(1);
      return;
    }
    wire::Envelope* envelope = &lane.received;
    const net::SignedMessage message = net::split_signed(lane.buffer.data(), bytes);
    // A datagram that filled the buffer may have been cut: too large either way.
    const net::ParseError parsed =
        bytes >= lane.buffer.size()
            ? net::ParseError::kTooLarge
            : net::parse_datagram(message.envelope_bytes, message.envelope_size, envelope);
    if (parsed != net::ParseError::kNone) {
      (parsed == net::ParseError::kTooLarge ? counters.oversized : counters.malformed).fetch_add(1);
      return;  // no reply to a bad datagram: the server must not be a reflector
    }
    Origin origin;
    origin.udp_from = lane.from;
    origin.udp_fd = lane.socket.native_handle();
    handle(*envelope, message, origin, lane.forwarding, now_us);
  }

  // --- TCP -----------------------------------------------------------------

  void accept() {
    acceptor->async_accept(asio::make_strand(io), [this](const boost::system::error_code& error,
                                                         tcp::socket socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) on_accepted(std::move(socket));
      if (acceptor->is_open()) accept();
    });
  }

  // What a TCP connection keeps between messages: its session and scratch.
  struct TcpState {
    std::shared_ptr<Session> session;
    Forwarding forwarding;
    TokenBucket bucket;
  };

  void on_accepted(tcp::socket socket) {
    auto state = std::make_shared<TcpState>();
    state->bucket = TokenBucket(options.rate_limit_packets_per_second, options.rate_limit_burst,
                                steady_now_us());
    net::TcpConnection::Callbacks callbacks;
    callbacks.on_message = [this, state](net::TcpConnection& connection,
                                         const wire::Envelope& envelope) {
      counters.packets_in.fetch_add(1);
      const int64_t now_us = steady_now_us();
      if (!state->bucket.take(now_us)) {
        counters.rate_limited.fetch_add(1);
        return;
      }
      Origin origin;
      origin.tcp = std::static_pointer_cast<net::TcpConnection>(connection.shared_from_this());
      origin.tcp_session = &state->session;
      handle(envelope, connection.current_message(), origin, state->forwarding, now_us);
    };
    callbacks.on_closed = [this, state](net::TcpConnection&, const std::string& reason) {
      if (reason.find("over the limit") != std::string::npos) counters.oversized.fetch_add(1);
      if (reason.find("not a valid") != std::string::npos ||
          reason.find("no message") != std::string::npos ||
          reason.find("empty") != std::string::npos) {
        counters.malformed.fetch_add(1);
      }
      if (state->session) end_session(state->session, "connection closed: " + reason, false);
      state->session.reset();
    };
    auto connection = net::TcpConnection::create(std::move(socket), std::move(callbacks));
    connection->start();
  }

  // --- messages ------------------------------------------------------------

  struct Origin {
    udp::endpoint udp_from;
    int udp_fd = -1;
    std::shared_ptr<net::TcpConnection> tcp;
    std::shared_ptr<Session>* tcp_session = nullptr;
    bool is_tcp() const { return tcp != nullptr; }
  };

  void reply_error(const Origin& origin, Peer* peer, wire::ErrorCode code, const std::string& text,
                   bool fatal) {
    wire::Envelope envelope;
    wire::Error* error = envelope.mutable_error();
    error->set_code(code);
    error->set_text(text);
    error->set_fatal(fatal);
    bool sent = false;
    if (peer != nullptr) {
      sent = peer->send(envelope);
    } else if (origin.is_tcp()) {
      sent = origin.tcp->send(envelope);
    } else {
      sent = UdpPeer(origin.udp_fd, origin.udp_from).send(envelope);
    }
    if (sent) counters.packets_out.fetch_add(1);
    if (fatal && origin.is_tcp()) origin.tcp->close_after_writes();
  }

  // The session the message names (UDP: by its session_id, from any address;
  // TCP: the connection's), or null.
  std::shared_ptr<Session> find_session(const wire::Envelope& envelope, const Origin& origin) {
    if (origin.is_tcp()) return *origin.tcp_session;
    std::lock_guard<std::mutex> lock(mutex);
    auto found = sessions.find(envelope.session_id());
    return found == sessions.end() || found->second->over_tcp ? nullptr : found->second;
  }

  static bool from_session_address(const Session& session, const Origin& origin) {
    return origin.is_tcp() || session.udp_peer == origin.udp_from;
  }

  bool auth_required() const { return !keys.empty(); }

  // With authentication, whether a message after Hello is authentic and new
  // (else counted and dropped: no answer). Without a session the tag is checked
  // with the key its id names, so that only key holders are told "say Hello".
  // The replay window is checked before the address (a captured datagram sent
  // again from anywhere counts as replayed) and updated only for a message
  // from the session's address, so that a copy raced ahead from elsewhere
  // cannot shadow the real one.
  bool authentic(Session* session, const wire::Envelope& envelope,
                 const net::SignedMessage& message, const Origin& origin) {
    const net::MessageKey* key = nullptr;
    if (session != nullptr) {
      key = session->key->key.get();
    } else {
      auto found = keys.find(message.key_id);
      if (found != keys.end()) key = found->second->key.get();
    }
    const uint64_t session_id =
        origin.is_tcp() ? (session != nullptr ? session->id : 0) : envelope.session_id();
    if (key == nullptr || !key->verify(net::Direction::kClientToServer, session_id, message)) {
      counters.unauthenticated.fetch_add(1);
      return false;
    }
    if (session == nullptr) return true;
    std::lock_guard<std::mutex> lock(session->replay_mutex);
    if (!session->received.check(message.counter)) {
      counters.replayed.fetch_add(1);
      return false;
    }
    if (from_session_address(*session, origin)) session->received.accept(message.counter);
    return true;
  }

  void handle(const wire::Envelope& envelope, const net::SignedMessage& message,
              const Origin& origin, Forwarding& forwarding, int64_t now_us) {
    if (envelope.body_case() == wire::Envelope::kHello) {
      handle_hello(envelope.hello(), message, origin, now_us);
      return;
    }
    std::shared_ptr<Session> session = find_session(envelope, origin);
    if (auth_required() && !authentic(session.get(), envelope, message, origin)) return;
    if (session && !from_session_address(*session, origin)) session.reset();
    if (!session) {
      counters.unknown_session.fetch_add(1);
      // Only an answer to a message that looks like ours; a client after a
      // server restart learns to say Hello again.
      if (envelope.body_case() != wire::Envelope::kMedia || origin.is_tcp()) {
        reply_error(origin, nullptr, wire::ERROR_UNKNOWN_SESSION,
                    origin.is_tcp() ? "say Hello first" :
                    "no session " + std::to_string(envelope.session_id()) +
                        " for this address: say Hello first", origin.is_tcp());
      }
      return;
    }
    session->last_heard_us.store(now_us);
    session->confirmed.store(true);
    switch (envelope.body_case()) {
      case wire::Envelope::kJoin: handle_join(session, envelope.join()); break;
      case wire::Envelope::kLeave: leave_room(session, /*notify=*/true); break;
      case wire::Envelope::kMedia: handle_media(session, envelope.media(), forwarding); break;
      case wire::Envelope::kKeepAlive:
        if (!envelope.keep_alive().reply()) {
          wire::Envelope reply;
          reply.mutable_keep_alive()->set_sent_time_us(envelope.keep_alive().sent_time_us());
          reply.mutable_keep_alive()->set_reply(true);
          send_to(*session, reply);
        }
        break;
      case wire::Envelope::kReport: handle_report(session, envelope.report()); break;
      case wire::Envelope::kGoodbye:
        end_session(session, "client said goodbye: " + envelope.goodbye().reason(), false);
        break;
      default:
        counters.rejected.fetch_add(1);
        reply_error(origin, session->peer.get(), wire::ERROR_UNSUPPORTED,
                    "a client does not send " + std::string(wire::Envelope::descriptor()
                                                                ->FindFieldByNumber(envelope.body_case())
                                                                ->name()),
                    false);
    }
  }

  void send_to(Session& session, const wire::Envelope& envelope) {
    if (session.peer->send(envelope)) {
      counters.packets_out.fetch_add(1);
    } else {
      counters.send_dropped.fetch_add(1);
    }
  }

  enum class HelloCheck { kNew, kRetransmitted, kRefused };

  // With authentication: a Hello must be signed with a configured key (for
  // session 0), carry a 16-byte nonce and a time within 30 s of the server's
  // clock, and have a nonce not seen in the last 60 s; or be a retransmission
  // (the nonce of a session from the same UDP address that has sent nothing
  // since: the Welcome was lost). An unauthentic Hello gets one Error that
  // says only "authentication failed"; a replayed one nothing.
  HelloCheck check_hello(const wire::Hello& hello, const net::SignedMessage& message,
                         const Origin& origin, int64_t now_us,
                         std::shared_ptr<const GrantedKey>* granted) {
    constexpr size_t kNonceBytes = 16;
    auto found = keys.find(message.key_id);
    if (found == keys.end() ||
        !found->second->key->verify(net::Direction::kClientToServer, 0, message) ||
        hello.auth_nonce().size() != kNonceBytes) {
      counters.unauthenticated.fetch_add(1);
      reply_error(origin, nullptr, wire::ERROR_UNAUTHENTICATED, "authentication failed", true);
      return HelloCheck::kRefused;
    }
    const int64_t wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
    const int64_t skew_ms = wall_ms - static_cast<int64_t>(hello.auth_time_unix_ms());
    if (skew_ms > SeenHellos::kMaxClockSkewMs || skew_ms < -SeenHellos::kMaxClockSkewMs) {
      counters.replayed.fetch_add(1);
      reply_error(origin, nullptr, wire::ERROR_UNAUTHENTICATED,
                  "authentication failed: Hello.auth_time_unix_ms is " + std::to_string(skew_ms / 1000) +
                      " s from the server's clock (at most 30 s)",
                  true);
      return HelloCheck::kRefused;
    }
    switch (seen_hellos.remember(hello.auth_nonce(), now_us)) {
      case SeenHellos::Seen::kNew:
        *granted = found->second;
        return HelloCheck::kNew;
      case SeenHellos::Seen::kFull:
        counters.rejected.fetch_add(1);
        reply_error(origin, nullptr, wire::ERROR_SERVER_FULL,
                    "too many Hellos in the last minute: try again later", true);
        return HelloCheck::kRefused;
      case SeenHellos::Seen::kBefore: break;
    }
    std::shared_ptr<Session> opened;
    if (const uint64_t id = seen_hellos.session_of(hello.auth_nonce()); id != 0) {
      std::lock_guard<std::mutex> lock(mutex);
      auto session = sessions.find(id);
      if (session != sessions.end()) opened = session->second;
    }
    if (opened && !origin.is_tcp() && !opened->over_tcp && opened->udp_peer == origin.udp_from &&
        !opened->confirmed.load()) {
      std::lock_guard<std::mutex> lock(opened->replay_mutex);
      if (opened->received.check(message.counter)) {
        opened->received.accept(message.counter);
        return HelloCheck::kRetransmitted;
      }
    }
    counters.replayed.fetch_add(1);
    return HelloCheck::kRefused;
  }

  void handle_hello(const wire::Hello& hello, const net::SignedMessage& message,
                    const Origin& origin, int64_t now_us) {
    std::shared_ptr<const GrantedKey> granted;
    if (auth_required() &&
        check_hello(hello, message, origin, now_us, &granted) == HelloCheck::kRefused) {
      return;
    }
    if (hello.protocol_version() != net::kProtocolVersion) {
      counters.bad_protocol_version.fetch_add(1);
      reply_error(origin, nullptr, wire::ERROR_PROTOCOL_VERSION,
                  "protocol version " + std::to_string(hello.protocol_version()) +
                      " is not supported: this server speaks version " +
                      std::to_string(net::kProtocolVersion) +
                      (hello.protocol_version() < net::kProtocolVersion
                           ? std::string(" (") + net::kProtocolVersionChange + "; upgrade the client)"
                           : std::string(" (upgrade the server)")),
                  true);
      return;
    }
    const bool has_model = !hello.model().name().empty();
    if (has_model && (hello.model().name() != model.name() ||
                      hello.model().checksum() != model_checksum)) {
      counters.rejected.fetch_add(1);
      reply_error(origin, nullptr, wire::ERROR_UNSUPPORTED,
                  "Hello.model: the client runs " + hello.model().name() + " (checksum " +
                      hello.model().checksum() + "), the server " + model.name() + " (checksum " +
                      model_checksum + "): codes only decode with the same weights",
                  true);
      return;
    }
    // A Hello repeated before anything else came from its session is a
    // retransmission (the Welcome was lost or slow): the same Welcome again.
    if (!origin.is_tcp()) {
      std::shared_ptr<Session> existing;
      {
        std::lock_guard<std::mutex> lock(mutex);
        auto old = udp_sessions.find(origin.udp_from);
        if (old != udp_sessions.end()) {
          auto found = sessions.find(old->second);
          if (found != sessions.end() && !found->second->confirmed.load()) existing = found->second;
        }
      }
      if (existing) {
        existing->last_heard_us.store(now_us);
        send_welcome(*existing);
        return;
      }
    }
    auto session = std::make_shared<Session>();
    session->name = hello.client_name().substr(0, 64);
    session->has_model = has_model;
    session->last_heard_us.store(now_us);
    if (granted) {
      session->key = granted;
      session->hello_nonce = hello.auth_nonce();
      session->received.accept(message.counter);
    }
    std::shared_ptr<Session> replaced;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (static_cast<int>(sessions.size()) >= options.max_sessions) {
        counters.rejected.fetch_add(1);
      } else {
        do {
          session->id = random();
        } while (session->id == 0 || sessions.count(session->id) > 0);
        if (origin.is_tcp()) {
          session->over_tcp = true;
          session->peer = std::make_shared<TcpPeer>(origin.tcp);
        } else {
          session->udp_peer = origin.udp_from;
          session->peer = std::make_shared<UdpPeer>(origin.udp_fd, origin.udp_from);
          auto old = udp_sessions.find(origin.udp_from);
          if (old != udp_sessions.end()) {
            auto found = sessions.find(old->second);
            if (found != sessions.end()) replaced = found->second;
          }
        }
        if (granted) session->peer->sign_with(granted->key, session->id);
      }
    }
    if (!session->peer) {
      reply_error(origin, nullptr, wire::ERROR_SERVER_FULL,
                  "the server has its maximum of " + std::to_string(options.max_sessions) +
                      " sessions",
                  true);
      return;
    }
    // A second Hello from one address replaces its session (a restarted client).
    if (replaced) end_session(replaced, "replaced by a new Hello from the same address", false);
    if (origin.is_tcp() && *origin.tcp_session) {
      end_session(*origin.tcp_session, "replaced by a new Hello on the connection", false);
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      sessions[session->id] = session;
      if (!session->over_tcp) udp_sessions[session->udp_peer] = session->id;
    }
    if (origin.is_tcp()) *origin.tcp_session = session;
    if (granted) seen_hellos.set_session(session->hello_nonce, session->id);
    counters.sessions_opened.fetch_add(1);
    send_welcome(*session);
    spdlog::info("session {:016x} opened: '{}' over {} from {}", session->id, session->name,
                 session->over_tcp ? "TCP" : "UDP", describe_origin(origin));
  }

  void send_welcome(Session& session) {
    wire::Envelope reply;
    reply.set_session_id(session.id);
    wire::Welcome* welcome = reply.mutable_welcome();
    welcome->set_protocol_version(net::kProtocolVersion);
    welcome->set_session_id(session.id);
    *welcome->mutable_model() = model_info();
    welcome->set_server_name(options.server_name);
    welcome->set_keep_alive_interval_ms(static_cast<uint32_t>(options.keep_alive_interval_ms));
    welcome->set_session_timeout_ms(static_cast<uint32_t>(options.session_timeout_ms));
    welcome->set_hello_nonce(session.hello_nonce);
    send_to(session, reply);
  }

  static std::string describe_origin(const Origin& origin) {
    if (origin.is_tcp()) {
      const auto& endpoint = origin.tcp->remote_endpoint();
      return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
    }
    return origin.udp_from.address().to_string() + ":" + std::to_string(origin.udp_from.port());
  }

  wire::ModelInfo model_info() const {
    wire::ModelInfo info;
    info.set_name(model.name());
    info.set_checksum(model_checksum);
    info.set_sample_rate_hz(static_cast<uint32_t>(model.sample_rate_hz()));
    info.set_frame_samples(static_cast<uint32_t>(model.config().hop_length()));
    for (double bandwidth : model.config().target_bandwidths) info.add_bandwidths_kbps(bandwidth);
    info.set_num_codebooks(static_cast<uint32_t>(model.config().n_q));
    info.set_bits_per_code(static_cast<uint32_t>(model.config().bits_per_codebook()));
    return info;
  }

  bool bandwidth_allowed(double bandwidth_kbps) const {
    const auto& allowed = model.config().target_bandwidths;
    return std::find(allowed.begin(), allowed.end(), bandwidth_kbps) != allowed.end();
  }

  std::string allowed_bandwidths() const {
    std::string text;
    for (double bandwidth : model.config().target_bandwidths) {
      if (!text.empty()) text += ", ";
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%g", bandwidth);
      text += buffer;
    }
    return text;
  }

  // Sends a non-fatal Error; `counter` counts it (unknown rooms have their own).
  void reject(Session& session, wire::ErrorCode code, const std::string& text,
              std::atomic<uint64_t>* counter = nullptr) {
    (counter != nullptr ? *counter : counters.rejected).fetch_add(1);
    wire::Envelope envelope;
    envelope.mutable_error()->set_code(code);
    envelope.mutable_error()->set_text(text);
    send_to(session, envelope);
  }

  void handle_join(const std::shared_ptr<Session>& session, const wire::Join& join) {
    const wire::ReceiveFormat& format = join.receive();
    const wire::PayloadKind kind = format.kind() == wire::PAYLOAD_KIND_UNSPECIFIED
                                       ? wire::PAYLOAD_KIND_RAW_CODES
                                       : format.kind();
    if (format.bandwidth_kbps() != 0 && !bandwidth_allowed(format.bandwidth_kbps())) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.bandwidth_kbps: " + std::to_string(format.bandwidth_kbps()) +
                 " is not one of the model's bandwidths (" + allowed_bandwidths() + ")");
      return;
    }
    if (kind != wire::PAYLOAD_KIND_RAW_CODES && kind != wire::PAYLOAD_KIND_LM_CODES &&
        kind != wire::PAYLOAD_KIND_OPUS) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.kind: " + wire::PayloadKind_Name(kind) +
                 " cannot be received (raw codes, LM codes or Opus)");
      return;
    }
    if (!session->has_model && kind != wire::PAYLOAD_KIND_OPUS) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.kind: a client without a model (empty Hello.model) receives only "
             "PAYLOAD_KIND_OPUS");
      return;
    }
    const int opus_frame_ms = format.opus_frame_ms() == 0 ? 20 : static_cast<int>(format.opus_frame_ms());
    if (kind == wire::PAYLOAD_KIND_OPUS && opus_frame_ms != 10 && opus_frame_ms != 20) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.opus_frame_ms: " + std::to_string(opus_frame_ms) + " (10 or 20)");
      return;
    }
    if (!key_grants(*session, join)) return;
    if (join.role() == wire::ROLE_ENCODE) {
      handle_encode_join(session, format);
      return;
    }
    if (join.role() != wire::ROLE_CALL && join.role() != wire::ROLE_SEND &&
        join.role() != wire::ROLE_LISTEN) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.role: " + wire::Role_Name(join.role()) + " is not a role (call, send, listen, encode)");
      return;
    }
    if (!valid_room_name(join.room())) {
      reject(*session, wire::ERROR_UNKNOWN_ROOM,
             "Join.room: '" + join.room().substr(0, 80) +
                 "' is not a room name (1-64 of A-Z a-z 0-9 _ . -)");
      return;
    }
    if (resend_joined_if_member(session, join)) return;
    leave_room(session, /*notify=*/true);

    std::vector<std::shared_ptr<Session>> others;
    std::vector<std::pair<std::shared_ptr<Session>, std::shared_ptr<Session>>> opus_pairs;  // sender, receiver
    wire::Envelope joined_reply, update;
    std::optional<std::pair<wire::ErrorCode, std::string>> refusal;
    {
      std::lock_guard<std::mutex> lock(mutex);
      refusal = admit_to_room(session, join, kind, format, opus_frame_ms);
      if (!refusal) {
        const std::shared_ptr<Room> room = session->room.lock();
        wire::Joined* joined = joined_reply.mutable_joined();
        joined->set_room(room->name);
        joined->set_stream_id(session->stream_id);
        wire::RoomUpdate* room_update = update.mutable_room_update();
        room_update->set_room(room->name);
        for (const auto& member : room->members) {
          wire::Member* listed = joined->add_members();
          listed->set_stream_id(member->stream_id);
          listed->set_name(member->name);
          listed->set_role(member->role);
          *room_update->add_members() = *listed;
          if (member == session) continue;
          others.push_back(member);
          // New (sender, Opus receiver) pairs: the engine decodes the sender for them.
          if (is_sender(*session) && member->receive_kind == wire::PAYLOAD_KIND_OPUS &&
              receives(*member)) {
            opus_pairs.emplace_back(session, member);
          }
          if (kind == wire::PAYLOAD_KIND_OPUS && receives(*session) && is_sender(*member)) {
            opus_pairs.emplace_back(member, session);
          }
        }
        // The engine's streams open under the lock, before any member can send
        // to them: a control takes effect after the jobs submitted before it.
        // A sender that receives Opus sends Opus (a peer without the model has
        // no other choice): its packets are decoded and encoded into codes for the room.
        if (is_sender_role(join.role()) && kind == wire::PAYLOAD_KIND_OPUS) {
          engine.open_opus_sender(session->id, session->opus_frame_samples,
                                  opus_sender_bandwidth(format));
        }
        for (const auto& [sender, receiver] : opus_pairs) {
          engine.add_opus_receiver(sender->id, sender->stream_id, receiver->id, receiver->peer,
                                   receiver->opus_bitrate_bps, receiver->opus_frame_samples);
        }
      }
    }
    if (refusal) {
      reject(*session, refusal->first, refusal->second,
             refusal->first == wire::ERROR_UNKNOWN_ROOM ? &counters.unknown_room : nullptr);
      return;
    }
    send_to(*session, joined_reply);
    for (const auto& other : others) send_to(*other, update);
    spdlog::info("session {:016x} joined room '{}' as {} (stream {})", session->id, join.room(),
                 wire::Role_Name(join.role()), session->stream_id);
  }

  // With authentication: a room key grants its room only (and no ROLE_ENCODE,
  // which is no room's); the session already holds the key, so the Error may say so.
  bool key_grants(Session& session, const wire::Join& join) {
    if (!session.key || session.key->room.empty()) return true;
    if (join.role() == wire::ROLE_ENCODE) {
      reject(session, wire::ERROR_UNAUTHENTICATED,
             "Join.role: ROLE_ENCODE needs the shared token (this key grants room '" +
                 session.key->room + "' only)",
             &counters.unauthenticated);
      return false;
    }
    if (join.room() == session.key->room) return true;
    reject(session, wire::ERROR_UNAUTHENTICATED,
           "Join.room: this key grants room '" + session.key->room + "' only, not '" +
               join.room().substr(0, 64) + "'",
           &counters.unauthenticated);
    return false;
  }

  // A Join for the room and role the session already has is a retransmission
  // (the Joined was lost): the same answer again, nothing changes.
  bool resend_joined_if_member(const std::shared_ptr<Session>& session, const wire::Join& join) {
    wire::Envelope reply;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const std::shared_ptr<Room> room = session->room.lock();
      if (!room || room->name != join.room() || session->role != join.role()) return false;
      wire::Joined* joined = reply.mutable_joined();
      joined->set_room(room->name);
      joined->set_stream_id(session->stream_id);
      for (const auto& member : room->members) {
        wire::Member* listed = joined->add_members();
        listed->set_stream_id(member->stream_id);
        listed->set_name(member->name);
        listed->set_role(member->role);
      }
    }
    send_to(*session, reply);
    return true;
  }

  // Under `mutex`: puts the session in the room (creating it when asked), or
  // says why not.
  std::optional<std::pair<wire::ErrorCode, std::string>> admit_to_room(
      const std::shared_ptr<Session>& session, const wire::Join& join, wire::PayloadKind kind,
      const wire::ReceiveFormat& format, int opus_frame_ms) {
    const std::string& name = join.room();
    auto found = rooms.find(name);
    std::shared_ptr<Room> room;
    if (found != rooms.end()) {
      room = found->second;
    } else {
      if (!join.create()) {
        return std::make_pair(wire::ERROR_UNKNOWN_ROOM,
                              "Join.room: no room named '" + name + "' (Join.create is false)");
      }
      if (static_cast<int>(rooms.size()) >= options.max_rooms) {
        return std::make_pair(wire::ERROR_SERVER_FULL, "Join.room: the server has its maximum of " +
                                                           std::to_string(options.max_rooms) + " rooms");
      }
    }
    const RoomSpec::Kind room_kind =
        room ? room->kind
             : (join.role() == wire::ROLE_CALL ? RoomSpec::Kind::kCall : RoomSpec::Kind::kBroadcast);
    if (room_kind == RoomSpec::Kind::kBroadcast && join.role() == wire::ROLE_CALL) {
      return std::make_pair(wire::ERROR_UNSUPPORTED, "Join.role: room '" + name +
                                                         "' is a broadcast: join as ROLE_SEND or ROLE_LISTEN");
    }
    if (room_kind == RoomSpec::Kind::kCall && join.role() == wire::ROLE_SEND) {
      return std::make_pair(wire::ERROR_UNSUPPORTED,
                            "Join.role: room '" + name + "' is a call: join as ROLE_CALL or ROLE_LISTEN");
    }
    if (room && join.role() == wire::ROLE_SEND && room->sender != nullptr) {
      return std::make_pair(wire::ERROR_ROOM_HAS_SENDER,
                            "Join.role: room '" + name + "' already has its sender");
    }
    if (room && static_cast<int>(room->members.size()) >= options.max_members_per_room) {
      return std::make_pair(wire::ERROR_SERVER_FULL, "Join.room: room '" + name + "' has its maximum of " +
                                                         std::to_string(options.max_members_per_room) +
                                                         " members");
    }
    if (!room) {
      room = std::make_shared<Room>();
      room->name = name;
      room->kind = room_kind;
      room->max_codebooks = model.config().n_q;
      rooms[name] = room;
    }
    session->room = room;
    session->role = join.role();
    session->stream_id = room->next_stream_id++;
    session->receive_kind = kind;
    session->receive_codebooks =
        format.bandwidth_kbps() == 0 ? 0 : model.config().num_codebooks(format.bandwidth_kbps());
    session->opus_frame_samples = model.sample_rate_hz() * opus_frame_ms / 1000;
    session->opus_bitrate_bps =
        format.opus_bitrate_bps() != 0
            ? static_cast<int>(format.opus_bitrate_bps())
            : static_cast<int>((format.bandwidth_kbps() == 0 ? 6.0 : format.bandwidth_kbps()) * 1000);
    session->lm_synced.clear();
    if (join.role() == wire::ROLE_SEND) room->sender = session.get();
    room->members.push_back(session);
    return std::nullopt;
  }

  static bool valid_room_name(const std::string& name) {
    if (name.empty() || name.size() > 64) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
    });
  }

  static bool is_sender_role(wire::Role role) {
    return role == wire::ROLE_CALL || role == wire::ROLE_SEND;
  }
  static bool is_sender(const Session& session) { return is_sender_role(session.role); }

  // The bandwidth an Opus sender's audio is encoded at: its Join.receive's (as
  // for ROLE_ENCODE), 6 kbps when 0; members that asked for less get fewer
  // codebooks as from any sender.
  double opus_sender_bandwidth(const wire::ReceiveFormat& format) const {
    const double bandwidth = format.bandwidth_kbps() == 0 ? 6.0 : format.bandwidth_kbps();
    return bandwidth_allowed(bandwidth) ? bandwidth : model.config().target_bandwidths.front();
  }
  static bool receives(const Session& session) {
    return session.role == wire::ROLE_CALL || session.role == wire::ROLE_LISTEN;
  }

  void handle_encode_join(const std::shared_ptr<Session>& session, const wire::ReceiveFormat& format) {
    if (!session->over_tcp) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.role: ROLE_ENCODE runs over TCP only (PCM does not survive loss)");
      return;
    }
    if (format.kind() != wire::PAYLOAD_KIND_UNSPECIFIED && format.kind() != wire::PAYLOAD_KIND_RAW_CODES) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.kind: ROLE_ENCODE returns PAYLOAD_KIND_RAW_CODES only");
      return;
    }
    if (!session->has_model) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.role: ROLE_ENCODE returns codes, which need the model (empty Hello.model)");
      return;
    }
    leave_room(session, /*notify=*/true);
    const double bandwidth = format.bandwidth_kbps() == 0 ? 6.0 : format.bandwidth_kbps();
    if (!bandwidth_allowed(bandwidth)) {
      reject(*session, wire::ERROR_UNSUPPORTED,
             "Join.receive.bandwidth_kbps: the default 6 is not one of the model's bandwidths (" +
                 allowed_bandwidths() + ")");
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      session->role = wire::ROLE_ENCODE;
      session->encode_bandwidth_kbps = bandwidth;
      engine.open_encoder(session->id, session->peer, bandwidth);
    }
    wire::Envelope reply;
    reply.mutable_joined()->set_stream_id(0);
    send_to(*session, reply);
    spdlog::info("session {:016x} encodes PCM at {} kbps", session->id, bandwidth);
  }

  void handle_media(const std::shared_ptr<Session>& session, const wire::Media& media,
                    Forwarding& forwarding) {
    counters.media_in.fetch_add(1);
    if (session->role == wire::ROLE_ENCODE) {
      if (media.kind() != wire::PAYLOAD_KIND_PCM16 || media.payload().size() % 2 != 0) {
        counters.invalid_media.fetch_add(1);
        reject(*session, wire::ERROR_MALFORMED,
               "Media: a ROLE_ENCODE session sends PAYLOAD_KIND_PCM16 (an even number of bytes)");
        return;
      }
      const auto* pcm = reinterpret_cast<const uint8_t*>(media.payload().data());
      if (!engine.submit_pcm(session->id, pcm, media.payload().size() / 2, media.end_of_stream())) {
        counters.compute_dropped.fetch_add(1);
      }
      return;
    }
    if (!is_sender(*session)) {
      counters.invalid_media.fetch_add(1);
      reject(*session, wire::ERROR_NOT_JOINED,
             session->role == wire::ROLE_LISTEN ? "Media: a listener does not send"
                                                : "Media: join a room first");
      return;
    }
    if (media.kind() == wire::PAYLOAD_KIND_OPUS) {
      // Only a member that joined receiving Opus has a decoder for it; an
      // empty payload is an end mark only.
      if (session->receive_kind != wire::PAYLOAD_KIND_OPUS ||
          (media.payload().empty() && !media.end_of_stream()) ||
          media.payload().size() > MediaEngine::kMaxOpusPacketBytes) {
        counters.invalid_media.fetch_add(1);
        return;
      }
      const auto* packet = reinterpret_cast<const uint8_t*>(media.payload().data());
      if (!engine.submit_opus(session->id, media.sequence(), media.capture_time_us(), packet,
                              media.payload().size(), media.end_of_stream())) {
        counters.compute_dropped.fetch_add(1);
      }
      return;
    }
    forward_media(session, media, forwarding);
  }

  // An Opus sender's code frame, made on the compute thread: forwarded as the
  // frames of a member that sends codes are. A sender that has left (its
  // Goodbye came right behind its last packets) is found among the departed
  // until the engine has removed it.
  void forward_encoded_frame(uint64_t sender, const wire::Media& media) {
    std::shared_ptr<Session> session;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto departed_sender = departed.find(sender);
      if (departed_sender != departed.end()) {
        session = departed_sender->second;
      } else {
        auto found = sessions.find(sender);
        if (found == sessions.end()) return;
        session = found->second;
      }
    }
    forward_media(session, media, engine_forwarding);
  }

  // The engine has finished and dropped a session's streams.
  void engine_removed(uint64_t session_id) {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = departed.find(session_id);
    if (found == departed.end()) return;
    Session& session = *found->second;
    if (--session.engine_removals_pending > 0) return;
    session.departed_room.reset();
    departed.erase(found);
  }

  // The server does not run the LM, so members that asked for raw codes, for
  // fewer codebooks or for Opus cannot take an LM-coded stream: its sender is
  // asked to send raw codes instead, with the report a receiver that lost its
  // LM context sends (request_lm_reset), at most every 500 ms while this goes
  // on. encodec-client then sends raw codes for a while, longer as the
  // requests repeat (ClientOptions::lm_loss_fallback_s). Allocates (rarely).
  void ask_for_raw_codes(Session& sender, uint32_t stream_id) {
    constexpr int64_t kRawRequestIntervalUs = 500'000;
    const int64_t now_us = steady_now_us();
    int64_t last_us = sender.last_raw_request_us.load();
    if (now_us - last_us < kRawRequestIntervalUs ||
        !sender.last_raw_request_us.compare_exchange_strong(last_us, now_us)) {
      return;
    }
    counters.raw_codes_requests.fetch_add(1);
    wire::Envelope request;
    request.mutable_report()->set_stream_id(stream_id);
    request.mutable_report()->set_request_lm_reset(true);
    send_to(sender, request);
  }

  // A sender's code frame (raw or LM-coded) to the other members of its room:
  // codebooks dropped for those that asked for less, decoded for Opus members.
  void forward_media(const std::shared_ptr<Session>& session, const wire::Media& media,
                     Forwarding& forwarding) {
    const int bits = model.config().bits_per_codebook();
    const int n_q = model.config().n_q;
    const int codebooks = static_cast<int>(media.num_codebooks());
    int32_t* codes = forwarding.codes.data();
    if (media.kind() == wire::PAYLOAD_KIND_RAW_CODES) {
      if (media.end_of_stream() && media.payload().empty()) {
        // An end mark without a frame.
      } else if (codebooks < 1 || codebooks > n_q ||
                 !net::unpack_raw_codes(reinterpret_cast<const uint8_t*>(media.payload().data()),
                                        media.payload().size(), codebooks, bits, codes)) {
        counters.invalid_media.fetch_add(1);
        return;
      }
    } else if (media.kind() == wire::PAYLOAD_KIND_LM_CODES) {
      if (codebooks < 1 || codebooks > n_q || media.payload().empty()) {
        counters.invalid_media.fetch_add(1);
        return;
      }
    } else {
      counters.invalid_media.fetch_add(1);
      return;
    }

    // Snapshot the recipients under the lock, send outside it.
    forwarding.recipients.clear();
    bool any_opus = false;
    bool lm_unreachable = false;  // a member cannot take this LM packet
    uint32_t sender_stream_id = 0;
    int room_codebooks = n_q;
    {
      std::lock_guard<std::mutex> lock(mutex);
      // The engine's frames of a sender that has left go to the room it left.
      const std::shared_ptr<Room> room = &forwarding == &engine_forwarding && session->departed_room
                                             ? session->departed_room
                                             : session->room.lock();
      if (!room) return;
      room_codebooks = room->max_codebooks;
      sender_stream_id = session->stream_id;
      const bool context_start = media.kind() == wire::PAYLOAD_KIND_LM_CODES &&
                                 media.lm_context_start() == media.sequence();
      for (const auto& member : room->members) {
        if (member == session || !receives(*member)) continue;
        if (member->receive_kind == wire::PAYLOAD_KIND_OPUS) {
          any_opus = true;
          continue;
        }
        Recipient recipient;
        recipient.peer = member->peer.get();
        recipient.codebooks = member->receive_codebooks;
        if (media.kind() == wire::PAYLOAD_KIND_LM_CODES) {
          // LM packets decode only from a context start on; a member that
          // joined later waits for one, and cannot take fewer codebooks.
          if (member->receive_kind != wire::PAYLOAD_KIND_LM_CODES ||
              (member->receive_codebooks != 0 && member->receive_codebooks != codebooks)) {
            counters.format_mismatch.fetch_add(1);
            lm_unreachable = true;
            continue;
          }
          auto& synced = member->lm_synced;
          const bool is_synced =
              std::find(synced.begin(), synced.end(), session->stream_id) != synced.end();
          if (!is_synced) {
            if (!context_start) continue;
            synced.push_back(session->stream_id);
          }
        }
        if (forwarding.recipients.size() < forwarding.recipients.capacity()) {
          forwarding.peers_hold[forwarding.recipients.size()] = member->peer;
          forwarding.recipients.push_back(recipient);
        }
      }
    }
    if (media.kind() == wire::PAYLOAD_KIND_LM_CODES && (lm_unreachable || any_opus)) {
      ask_for_raw_codes(*session, sender_stream_id);
    }
    if (any_opus && media.kind() == wire::PAYLOAD_KIND_RAW_CODES) {
      const int decoded_codebooks = media.payload().empty() ? 0 : std::min(codebooks, room_codebooks);
      if (!engine.submit_codes(session->id, media.sequence(), media.capture_time_us(), codes,
                               decoded_codebooks, media.bandwidth_kbps(), media.end_of_stream())) {
        counters.compute_dropped.fetch_add(1);
      }
    }
    if (forwarding.recipients.empty()) return;

    wire::Envelope* out = &forwarding.out;
    wire::Media* forwarded = net::reuse_media(out);
    *forwarded = media;  // copies into the kept Media and strings
    forwarded->set_stream_id(session->stream_id);
    const auto* payload = reinterpret_cast<const uint8_t*>(media.payload().data());
    int current_codebooks = codebooks;
    for (size_t i = 0; i < forwarding.recipients.size(); ++i) {
      const Recipient& recipient = forwarding.recipients[i];
      if (media.kind() == wire::PAYLOAD_KIND_RAW_CODES && !media.payload().empty()) {
        int wanted = recipient.codebooks == 0 ? codebooks : std::min(codebooks, recipient.codebooks);
        wanted = std::min(wanted, room_codebooks);
        if (wanted != current_codebooks) {
          const size_t bytes = net::truncate_raw_codes(payload, media.payload().size(), codebooks,
                                                       wanted, bits, forwarding.payload.data());
          forwarded->set_payload(forwarding.payload.data(), bytes);
          forwarded->set_num_codebooks(static_cast<uint32_t>(wanted));
          forwarded->set_bandwidth_kbps(bandwidth_of(wanted));
          current_codebooks = wanted;
        }
      }
      if (recipient.peer->send(*out)) {
        counters.media_out.fetch_add(1);
        counters.packets_out.fetch_add(1);
      } else {
        counters.send_dropped.fetch_add(1);
      }
    }
    for (size_t i = 0; i < forwarding.recipients.size(); ++i) forwarding.peers_hold[i].reset();
  }

  double bandwidth_of(int codebooks) const {
    const EncodecConfig& config = model.config();
    return codebooks * config.frame_rate() * config.bits_per_codebook() / 1000.0;
  }

  void handle_report(const std::shared_ptr<Session>& session, const wire::ReceiverReport& report) {
    counters.reports.fetch_add(1);
    count_reported(*session, report);
    if (!report.request_lm_reset()) return;
    std::shared_ptr<Session> sender;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const std::shared_ptr<Room> room = session->room.lock();
      if (!room) return;
      for (const auto& member : room->members) {
        if (member->stream_id == report.stream_id() && is_sender(*member)) sender = member;
      }
      // Until the sender's next context start, the reporter gets nothing of its LM stream.
      auto& synced = session->lm_synced;
      synced.erase(std::remove(synced.begin(), synced.end(), report.stream_id()), synced.end());
    }
    if (!sender) return;
    wire::Envelope relay;
    *relay.mutable_report() = report;
    send_to(*sender, relay);
  }

  // A member hears at most a room's members; a report naming more streams is not counted.
  static constexpr size_t kMaxReportedStreams = 256;

  // Receiver reports are cumulative per stream: the counters take what each
  // adds to the last (a report that goes down, a restarted receiver, adds nothing).
  void count_reported(Session& session, const wire::ReceiverReport& report) {
    std::lock_guard<std::mutex> lock(mutex);
    if (session.reported.size() >= kMaxReportedStreams && !session.reported.count(report.stream_id())) return;
    Session::ReportedTotals& last = session.reported[report.stream_id()];
    const auto add = [](std::atomic<uint64_t>& counter, uint64_t& previous, uint64_t now) {
      if (now > previous) counter.fetch_add(now - previous);
      previous = now;
    };
    add(counters.reported_lost, last.lost, report.lost());
    add(counters.reported_late, last.late, report.late());
    add(counters.reported_duplicates, last.duplicates, report.duplicates());
  }

  // --- ending --------------------------------------------------------------

  void leave_room(const std::shared_ptr<Session>& session, bool notify) {
    std::vector<std::shared_ptr<Session>> others;
    wire::Envelope update;
    bool was_member = false, was_encoding = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      was_encoding = session->role == wire::ROLE_ENCODE;
      const std::shared_ptr<Room> room = session->room.lock();
      session->room.reset();
      if (room) {
        auto& members = room->members;
        was_member = std::find(members.begin(), members.end(), session) != members.end();
        members.erase(std::remove(members.begin(), members.end(), session), members.end());
        if (was_member && is_sender(*session)) {
          // The engine may still hold this sender's last frames (Opus packets to
          // encode): they go to this room before the engine drops the session.
          session->departed_room = room;
          ++session->engine_removals_pending;
          departed[session->id] = session;
        }
        if (room->sender == session.get()) room->sender = nullptr;
        wire::RoomUpdate* room_update = update.mutable_room_update();
        room_update->set_room(room->name);
        for (const auto& member : members) {
          wire::Member* listed = room_update->add_members();
          listed->set_stream_id(member->stream_id);
          listed->set_name(member->name);
          listed->set_role(member->role);
          others.push_back(member);
        }
        if (members.empty() && !room->preconfigured) rooms.erase(room->name);
      }
      session->role = wire::ROLE_UNSPECIFIED;
      // Under the lock, so that engine_removed comes after departed is set.
      if (was_member || was_encoding) engine.remove_session(session->id);
    }
    if (notify) {
      for (const auto& other : others) send_to(*other, update);
    }
  }

  void end_session(const std::shared_ptr<Session>& session, const std::string& reason, bool goodbye) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (sessions.erase(session->id) == 0) return;
      if (!session->over_tcp) {
        auto found = udp_sessions.find(session->udp_peer);
        if (found != udp_sessions.end() && found->second == session->id) udp_sessions.erase(found);
      }
    }
    leave_room(session, /*notify=*/true);
    if (goodbye) {
      wire::Envelope bye;
      bye.mutable_goodbye()->set_reason(reason);
      send_to(*session, bye);
    }
    if (session->over_tcp) {
      static_cast<TcpPeer&>(*session->peer).connection().close_after_writes();
    }
    spdlog::info("session {:016x} ended: {}", session->id, reason);
  }

  void arm_sweep() {
    sweep_timer.expires_after(std::chrono::milliseconds(
        std::clamp(options.session_timeout_ms / 4, 10, 250)));
    sweep_timer.async_wait([this](const boost::system::error_code& error) {
      if (error) return;
      sweep();
      arm_sweep();
    });
  }

  void sweep() {
    const int64_t now_us = steady_now_us();
    const int64_t timeout_us = int64_t{options.session_timeout_ms} * 1000;
    std::vector<std::shared_ptr<Session>> expired;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (const auto& [id, session] : sessions) {
        if (now_us - session->last_heard_us.load() > timeout_us) expired.push_back(session);
      }
    }
    for (const auto& session : expired) {
      counters.sessions_timed_out.fetch_add(1);
      end_session(session, "timed out (no message for " + std::to_string(options.session_timeout_ms) +
                               " ms)", true);
    }
  }

  void shutdown(const std::string& reason) {
    std::vector<std::shared_ptr<Session>> all;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (const auto& [id, session] : sessions) all.push_back(session);
    }
    for (const auto& session : all) end_session(session, reason, true);
    boost::system::error_code ignored;
    sweep_timer.cancel();
    if (acceptor) acceptor->close(ignored);
    for (auto& lane : udp_lanes) lane->socket.close(ignored);
  }

  ServerStats snapshot() const {
    ServerStats stats;
    {
      std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex));
      stats.sessions = sessions.size();
      stats.rooms = rooms.size();
    }
    stats.sessions_opened = counters.sessions_opened.load();
    stats.sessions_timed_out = counters.sessions_timed_out.load();
    stats.packets_in = counters.packets_in.load();
    stats.packets_out = counters.packets_out.load() + engine_counters.media_out.load();
    stats.media_in = counters.media_in.load();
    stats.media_out = counters.media_out.load() + engine_counters.media_out.load();
    stats.malformed = counters.malformed.load();
    stats.oversized = counters.oversized.load();
    stats.bad_protocol_version = counters.bad_protocol_version.load();
    stats.unknown_session = counters.unknown_session.load();
    stats.unknown_room = counters.unknown_room.load();
    stats.rejected = counters.rejected.load();
    stats.rate_limited = counters.rate_limited.load();
    stats.unauthenticated = counters.unauthenticated.load();
    stats.replayed = counters.replayed.load();
    stats.invalid_media = counters.invalid_media.load();
    stats.format_mismatch = counters.format_mismatch.load();
    stats.raw_codes_requests = counters.raw_codes_requests.load();
    stats.reports = counters.reports.load();
    stats.reported_lost = counters.reported_lost.load();
    stats.reported_late = counters.reported_late.load();
    stats.reported_duplicates = counters.reported_duplicates.load();
    stats.send_dropped = counters.send_dropped.load() + engine_counters.send_dropped.load();
    stats.transcoded_frames = engine_counters.transcoded_frames.load();
    stats.encoded_frames = engine_counters.encoded_frames.load();
    stats.compute_ticks = engine_counters.ticks.load();
    for (size_t i = 0; i < stats.compute_tick_counts.size(); ++i) {
      stats.compute_tick_counts[i] = engine_counters.tick_time.counts[i].load();
    }
    stats.compute_tick_seconds = static_cast<double>(engine_counters.tick_time.total_ns.load()) * 1e-9;
    stats.compute_queue_depth = static_cast<uint64_t>(std::max<int64_t>(0, engine_counters.queued_jobs.load()));
    stats.compute_dropped = counters.compute_dropped.load() + engine_counters.dropped_jobs.load();
    stats.compute_discarded = engine_counters.discarded_jobs.load();
    stats.reorder_duplicates = engine_counters.reorder_duplicates.load();
    stats.reorder_late = engine_counters.reorder_late.load();
    stats.transcode_concealed = engine_counters.transcode_concealed.load();
    stats.opus_in_frames = engine_counters.opus_in_frames.load();
    stats.opus_in_concealed = engine_counters.opus_in_concealed.load();
    stats.opus_in_malformed = engine_counters.opus_in_malformed.load();
    stats.opus_in_encoded_frames = engine_counters.opus_in_encoded_frames.load();
    return stats;
  }
};

// ---------------------------------------------------------------------------

Server::Server(const EncodecModel& model, std::string model_checksum, ServerOptions options) {
  if (options.io_threads < 1 || options.io_threads > 64) {
    throw std::invalid_argument("io_threads: " + std::to_string(options.io_threads) + " (1-64)");
  }
  if (options.session_timeout_ms <= 0 || options.keep_alive_interval_ms <= 0) {
    throw std::invalid_argument("session_timeout_ms and keep_alive_interval_ms must be positive");
  }
  if (!model.config().causal || model.config().normalize) {
    throw std::invalid_argument("encodecd serves the causal 24 kHz model, not " + model.name());
  }
  impl_ = std::make_unique<Impl>(model, std::move(model_checksum), std::move(options));
  impl_->build_keys();
  impl_->bind();
}

Server::~Server() { stop(); }

void Server::start() {
  std::lock_guard<std::mutex> lock(impl_->stop_mutex);
  if (impl_->started) return;
  impl_->started = true;
  impl_->start();
}

void Server::stop(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mutex);
    if (!impl_->started || impl_->stopped) return;
    impl_->stopped = true;
  }
  // Goodbyes go out on an I/O thread, then the threads get a moment to write them.
  std::promise<void> done;
  asio::post(impl_->io, [this, &reason, &done] {
    impl_->shutdown(reason);
    done.set_value();
  });
  done.get_future().wait_for(std::chrono::seconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  impl_->work.reset();
  impl_->io.stop();
  for (auto& thread : impl_->io_threads) thread.join();
  impl_->io_threads.clear();
  impl_->engine.stop();
  impl_->stopped_condition.notify_all();
}

void Server::wait(bool handle_signals) {
  std::unique_ptr<asio::signal_set> signals;
  std::atomic<bool> signalled{false};
  std::string signal_reason;
  if (handle_signals) {
    signals = std::make_unique<asio::signal_set>(impl_->io, SIGINT, SIGTERM);
    signals->async_wait([this, &signalled](const boost::system::error_code& error, int number) {
      if (error) return;
      spdlog::info("{}: ending every session", number == SIGTERM ? "SIGTERM" : "SIGINT");
      signalled.store(true);
      impl_->stopped_condition.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(impl_->stop_mutex);
  // The signal handler notifies without the lock: wake up now and then to look.
  while (!impl_->stopped && !signalled.load()) {
    impl_->stopped_condition.wait_for(lock, std::chrono::milliseconds(100));
  }
  lock.unlock();
  if (signals) {
    boost::system::error_code ignored;
    signals->cancel(ignored);
  }
  if (signalled.load()) stop("server shutting down");
}

uint16_t Server::udp_port() const { return impl_->udp_port; }
uint16_t Server::tcp_port() const { return impl_->tcp_port; }
ServerStats Server::stats() const { return impl_->snapshot(); }

}  // namespace encodec::server
