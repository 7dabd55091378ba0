#include "encodec/client.h"

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/strand.hpp>

#include "encodec/client_audio.h"
#include "encodec/ecdc.h"
#include "encodec/lm.h"
#include "encodec/net/auth.h"
#include "encodec/net/codes_payload.h"
#include "encodec/net/opus_codec.h"
#include "encodec/net/tcp_connection.h"
#include "encodec/net/wire.h"
#include "encodec/streaming.h"

namespace encodec::client {

namespace asio = boost::asio;
using asio::ip::udp;

namespace {

using net::steady_now_us;

// What the jitter buffer stores in front of each payload: the Media fields the
// playout needs.
struct PacketHeader {
  uint8_t kind = 0;
  uint8_t num_codebooks = 0;
  uint8_t end_of_stream = 0;
  uint8_t reserved = 0;
  uint32_t lm_context_start = 0;
  uint64_t capture_time_us = 0;
};
constexpr size_t kHeaderBytes = sizeof(PacketHeader);

std::pair<std::string, uint16_t> split_address(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw ClientError("--server: '" + text + "' is not ADDR:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535) throw ClientError("--server: '" + text + "' has no valid port");
  return {host, static_cast<uint16_t>(port)};
}

double percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0.0;
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(fraction * values.size()));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index), values.end());
  return values[index];
}

}  // namespace

// A remote stream: its jitter buffer, decoders and decoded audio.
struct RemoteStream {
  RemoteStream(uint32_t id, const net::JitterBufferOptions& options)
      : stream_id(id), jitter(options, [] { return steady_now_us(); }) {}
  uint32_t stream_id;
  net::JitterBuffer jitter;
  std::unique_ptr<StreamingDecoder> decoder;
  std::unique_ptr<net::OpusFrameDecoder> opus;
  std::unique_ptr<LmStreamDecoder> lm_decoder;
  int lm_codebooks = 0;
  bool lm_in_context = false;
  uint32_t lm_expected = 0;
  bool lm_reset_pending = false;  // asked, waiting for a context start
  int64_t lm_reset_requested_us = 0;
  bool have_first = false;
  uint32_t first_sequence = 0;
  bool end_seen = false;
  uint32_t end_sequence = 0;      // the last frame's sequence
  bool sender_left = false;       // its member left the room
  uint32_t highest_received = 0;
  bool ended = false;
  int64_t next_playout_us = 0;
  int64_t last_packet_us = 0;
  std::vector<float> audio;       // decoded, not yet played (real time) or everything (fast)
  size_t audio_read = 0;
  int64_t samples_out = 0;
  int64_t startup_dropped = 0;     // live playout: queued audio dropped to keep the delay
  int standing_queue_ticks = 0;
  bool started_playing = false;
  std::vector<double> latencies_ms;
  uint64_t lm_resets_requested = 0;
  uint64_t undecodable = 0;
};

using StreamMap = std::map<uint32_t, std::unique_ptr<RemoteStream>>;

// The playout clock of a sink that is not a sound card (a file): one tick a
// playout period, its phase following the lead stream (the first remote
// stream to play, until it ends): each tick comes just after the time the lead's
// jitter buffer makes its next frame due, so that a frame waits for the jitter
// it must cover and not, besides, for an arbitrary phase of the tick (up to a
// whole frame). The phase is set when a lead starts, and moved earlier when the
// frame due was due a quarter period or more before the tick for
// kRephaseTicks ticks in a row (the window's fastest packet came faster: after
// a start burst, or as the network calms). A due time after the tick is the
// jitter buffer's to absorb: it stretches (a frame more of delay) and the phase
// follows as above.
struct PlayoutClock {
  static constexpr int kRephaseTicks = 25;
  // Past the due time: the clock's whole microseconds and the timer's wake-up
  // must not tip the slot into a stretch.
  static constexpr int64_t kSlackUs = 250;

  int64_t next_us;
  int64_t period_us;
  bool has_lead = false;
  uint32_t lead_id = 0;
  bool locked = false;
  int early_ticks = 0;

  // After a tick's playout at now_us. Under the client's mutex.
  void advance(int64_t now_us, const StreamMap& streams) {
    next_us += period_us;
    const RemoteStream* lead = nullptr;
    if (has_lead) {
      const auto found = streams.find(lead_id);
      if (found != streams.end() && !found->second->ended) lead = found->second.get();
    }
    if (lead == nullptr) {
      has_lead = locked = false;
      for (const auto& [id, stream] : streams) {
        if (stream->ended || !stream->jitter.started()) continue;
        lead = stream.get();
        has_lead = true;
        lead_id = id;
        break;
      }
    }
    if (lead == nullptr) return;
    const int64_t due_us = lead->jitter.due_time_us() + kSlackUs;
    if (!locked) {
      locked = true;
      early_ticks = 0;
      next_us = std::max(due_us, now_us);
      return;
    }
    early_ticks = due_us <= next_us - period_us / 4 ? early_ticks + 1 : 0;
    if (early_ticks >= kRephaseTicks) {
      early_ticks = 0;
      next_us = std::max(due_us, now_us);
    }
  }
};

namespace {

// The protocol's LM coder (version 2): `lm` on the deterministic kernels, so
// that peers on any CPU decode each other's packets.
std::shared_ptr<const LmModel> deterministic(std::shared_ptr<const LmModel> lm) {
  if (!lm || lm->deterministic()) return lm;
  return std::make_shared<const LmModel>(lm->with_kernels(LmKernels::kDeterministic));
}

}  // namespace

// How long a sender waits after its end of stream before its Goodbye.
constexpr int kSenderDrainMs = 150;
// A client without the model sends and receives Opus at the live model's rate
// (the causal 24 kHz model; the Welcome's model says the server's).
constexpr int kOpusOnlyRateHz = 24000;

struct Client::Impl {
  // `live` null: a peer without the model (Opus both ways).
  Impl(const LiveModel* live, std::shared_ptr<const LmModel> lm_model, ClientOptions client_options)
      : model(live ? std::optional<EncodecModel>(live->model) : std::nullopt),
        checksum(live ? live->checksum : std::string()),
        lm(deterministic(std::move(lm_model))),
        options(std::move(client_options)),
        sample_rate_hz(model ? model->sample_rate_hz() : kOpusOnlyRateHz),
        // Sending Opus, a capture block is one Opus frame; else one model frame.
        hop(options.send_opus || !model ? sample_rate_hz * options.opus_frame_ms / 1000
                                        : model->config().hop_length()),
        bits(model ? model->config().bits_per_codebook() : 0) {
    if (options.send_opus && !options.receive_opus) {
      throw ClientError("sending Opus needs receiving Opus too (ClientOptions::receive_opus; the server "
                        "takes Opus only from members it sends Opus to)");
    }
    if (!model) {
      if (!options.receive_opus) throw ClientError("a client without the model receives only Opus (--opus)");
      if (options.mode != Mode::kListen && !options.send_opus) {
        throw ClientError("a client without the model sends only Opus (--send-opus)");
      }
      if (options.lm) throw ClientError("--lm needs the model");
    }
    if (!options.token.empty()) {
      if (options.token.size() < net::kMinSecretBytes) {
        throw ClientError("the token is " + std::to_string(options.token.size()) +
                          " bytes: encodecd's secrets are at least " +
                          std::to_string(net::kMinSecretBytes));
      }
      key = std::make_shared<const net::MessageKey>(options.token);
      signer = std::make_unique<net::MessageSigner>(key, net::Direction::kClientToServer);
      std::random_device random;
      for (int i = 0; i < 16; ++i) hello_nonce.push_back(static_cast<char>(random()));
    }
  }

  std::optional<EncodecModel> model;  // unset: Opus both ways, nothing to decode or encode
  std::string checksum;
  std::shared_ptr<const LmModel> lm;
  ClientOptions options;
  const int sample_rate_hz;
  const int hop;  // samples per capture block and per frame sent
  const int bits;

  asio::io_context io;
  std::unique_ptr<udp::socket> udp_socket;
  std::shared_ptr<net::TcpConnection> tcp;
  std::thread io_thread;
  std::array<uint8_t, 2048> udp_buffer{};
  wire::Envelope udp_received;  // reused for every datagram

  // Shared between the network thread and the media loop.
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<wire::Welcome> welcome;
  std::optional<wire::Joined> joined;
  int room_members = 0;
  std::optional<wire::Error> fatal_error;
  std::string goodbye;
  std::map<uint32_t, std::unique_ptr<RemoteStream>> streams;
  double rtt_ms = 0.0;
  std::atomic<bool> lm_reset_requested{false};
  std::atomic<bool> stop_requested{false};
  std::vector<std::string> warnings;

  // With a token (options.token): the key, what signs this side's messages,
  // the Hello's nonce (the Welcome echoes it), and under `mutex` the window of
  // the server's counters and what was dropped.
  std::shared_ptr<const net::MessageKey> key;
  std::unique_ptr<net::MessageSigner> signer;
  std::string hello_nonce;
  net::ReplayWindow received;
  uint64_t unauthenticated = 0, replayed = 0;

  uint64_t session_id = 0;
  int64_t last_sent_us = 0;
  uint64_t frames_sent = 0, frames_sent_lm = 0, payload_bytes_sent = 0;

  // --- network -------------------------------------------------------------

  void connect() {
    const auto [host, port] = split_address(options.server);
    boost::system::error_code error;
    const auto address = asio::ip::make_address(host, error);
    if (error) throw ClientError("--server: '" + host + "' is not an IP address");
    if (options.tcp) {
      try {
        net::TcpConnection::Callbacks callbacks;
        callbacks.on_message = [this](net::TcpConnection& connection, const wire::Envelope& envelope) {
          on_message(envelope, connection.current_message());
        };
        callbacks.on_closed = [this](net::TcpConnection&, const std::string& reason) {
          std::lock_guard<std::mutex> lock(mutex);
          if (goodbye.empty()) goodbye = "connection closed: " + reason;
          changed.notify_all();
        };
        tcp = net::TcpConnection::create(
            net::connect_tcp(io, host, port, options.connect_timeout_ms), std::move(callbacks));
      } catch (const std::runtime_error& failure) {
        throw ClientError(failure.what());
      }
      tcp->start();
    } else {
      udp_socket = std::make_unique<udp::socket>(io);
      udp_socket->open(address.is_v4() ? udp::v4() : udp::v6());
      udp_socket->connect(udp::endpoint(address, port), error);
      if (error) throw ClientError("cannot reach " + options.server + " over UDP: " + error.message());
      udp_socket->set_option(udp::socket::receive_buffer_size(1 << 20), error);
      receive_udp();
    }
    io_thread = std::thread([this] { io.run(); });
  }

  void receive_udp() {
    udp_socket->async_receive(asio::buffer(udp_buffer), [this](const boost::system::error_code& error,
                                                               size_t bytes) {
      if (error == asio::error::operation_aborted) return;
      if (!error) {
        const net::SignedMessage message = net::split_signed(udp_buffer.data(), bytes);
        if (net::parse_datagram(message.envelope_bytes, message.envelope_size, &udp_received) ==
            net::ParseError::kNone) {
          on_message(udp_received, message);
        }
      } else if (error == asio::error::connection_refused) {
        // ICMP port unreachable: nobody listens there (yet). Hello is retried.
      }
      if (udp_socket->is_open()) receive_udp();
    });
  }

  bool send(wire::Envelope& envelope) {
    envelope.set_session_id(session_id);
    bool sent = false;
    if (tcp) {
      // Sending a file as fast as possible must not outrun the connection:
      // wait for room rather than drop (live audio drops instead).
      while (options.as_fast_as_possible && tcp->is_open() &&
             tcp->queued_messages() > net::TcpConnection::kWriteQueueMessages / 2) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      sent = tcp->send(envelope, signer.get());
    } else {
      uint8_t datagram[net::kMaxDatagramBytes];
      const size_t size = net::serialize_datagram(envelope, datagram, sizeof datagram, signer.get());
      sent = size > 0 && ::send(udp_socket->native_handle(), datagram, size, MSG_DONTWAIT) ==
                             static_cast<ssize_t>(size);
    }
    last_sent_us = steady_now_us();
    return sent;
  }

  // Under `mutex`, with a token: whether a message from the server is
  // authentic and new (else counted and dropped). Until the Welcome, the
  // session is the Welcome's own, and it must echo this client's Hello nonce
  // (an old Welcome replayed does not); an Error is taken unsigned then: a
  // server that could not authenticate the Hello cannot sign its refusal.
  bool authentic(const wire::Envelope& envelope, const net::SignedMessage& message) {
    if (!welcome && envelope.has_error()) return true;
    const bool expected = welcome || (envelope.has_welcome() &&
                                      envelope.welcome().hello_nonce() == hello_nonce &&
                                      envelope.welcome().session_id() == envelope.session_id());
    const uint64_t session = welcome ? welcome->session_id() : envelope.session_id();
    if (!expected || !key->verify(net::Direction::kServerToClient, session, message)) {
      ++unauthenticated;
      return false;
    }
    if (!received.check(message.counter)) {
      ++replayed;
      return false;
    }
    received.accept(message.counter);
    return true;
  }

  void on_message(const wire::Envelope& envelope, const net::SignedMessage& message) {
    const int64_t now_us = steady_now_us();
    std::lock_guard<std::mutex> lock(mutex);
    if (key && !authentic(envelope, message)) return;
    switch (envelope.body_case()) {
      case wire::Envelope::kWelcome:
        if (!welcome) welcome = envelope.welcome();  // retransmitted Hellos get the same one
        break;
      case wire::Envelope::kJoined:
        // A repeated Join (while waiting for members) is answered with the room as it is now.
        room_members = envelope.joined().members_size();
        if (!joined) joined = envelope.joined();
        break;
      case wire::Envelope::kRoomUpdate: on_room_update(envelope.room_update()); break;
      case wire::Envelope::kMedia: on_media(envelope.media(), now_us); break;
      case wire::Envelope::kKeepAlive:
        if (envelope.keep_alive().reply()) {
          rtt_ms = (now_us - static_cast<int64_t>(envelope.keep_alive().sent_time_us())) / 1000.0;
        }
        break;
      case wire::Envelope::kReport:
        if (envelope.report().request_lm_reset()) lm_reset_requested.store(true);
        break;
      case wire::Envelope::kError:
        if (envelope.error().fatal() || !welcome || !joined) {
          fatal_error = envelope.error();
        } else if (warnings.size() < 100) {
          warnings.push_back(envelope.error().text());
        }
        break;
      case wire::Envelope::kGoodbye:
        goodbye = envelope.goodbye().reason().empty() ? "goodbye" : envelope.goodbye().reason();
        break;
      default: break;
    }
    changed.notify_all();
  }

  // Under `mutex`. A member that left ends its stream where its packets end,
  // even when its last packet (the end mark) was lost.
  void on_room_update(const wire::RoomUpdate& update) {
    room_members = update.members_size();
    for (auto& [id, stream] : streams) {
      bool present = false;
      for (const auto& member : update.members()) present |= member.stream_id() == id;
      if (!present) stream->sender_left = true;
    }
  }

  // Under `mutex`. A stream whose sender left ends once its packets stop (the
  // server may still be sending what it transcodes).
  void end_streams_of_departed(int64_t now_us) {
    constexpr int64_t kDepartedQuietUs = 500'000;
    for (auto& [id, stream] : streams) {
      if (!stream->sender_left || stream->end_seen || now_us - stream->last_packet_us < kDepartedQuietUs) {
        continue;
      }
      stream->end_seen = true;
      stream->end_sequence = stream->highest_received;
    }
  }

  // Under `mutex`.
  RemoteStream& stream_for(uint32_t stream_id) {
    std::unique_ptr<RemoteStream>& stream = streams[stream_id];
    if (!stream) {
      net::JitterBufferOptions jitter = options.jitter;
      jitter.max_payload_bytes = net::kMaxDatagramBytes + kHeaderBytes;
      // As fast as possible, a sender can run ahead of this client's decoding
      // (both share the machine): room for 55 s of frames waiting, not 1.7 s.
      if (options.as_fast_as_possible) jitter.capacity_frames = std::max(jitter.capacity_frames, 4096);
      const int frame_samples =
          options.receive_opus ? sample_rate_hz * options.opus_frame_ms / 1000 : hop;
      jitter.frame_duration_us = 1e6 * frame_samples / sample_rate_hz;
      stream = std::make_unique<RemoteStream>(stream_id, jitter);
      if (!options.receive_opus) stream->decoder = std::make_unique<StreamingDecoder>(*model);
      stream->audio.reserve(static_cast<size_t>(sample_rate_hz) * 4);
      stream->latencies_ms.reserve(1 << 14);
    }
    return *stream;
  }

  void on_media(const wire::Media& media, int64_t now_us) {
    RemoteStream& stream = stream_for(media.stream_id());
    stream.last_packet_us = now_us;
    if (media.end_of_stream()) {
      stream.end_seen = true;
      stream.end_sequence = media.payload().empty() ? media.sequence() - 1 : media.sequence();
    }
    if (media.payload().empty()) return;  // an end mark without a frame
    uint8_t packet[net::kMaxDatagramBytes + kHeaderBytes];
    if (media.payload().size() > net::kMaxDatagramBytes) return;
    PacketHeader header;
    header.kind = static_cast<uint8_t>(media.kind());
    header.num_codebooks = static_cast<uint8_t>(std::min<uint32_t>(media.num_codebooks(), 255));
    header.end_of_stream = media.end_of_stream() ? 1 : 0;
    header.lm_context_start = media.lm_context_start();
    header.capture_time_us = media.capture_time_us();
    std::memcpy(packet, &header, kHeaderBytes);
    std::memcpy(packet + kHeaderBytes, media.payload().data(), media.payload().size());
    if (!stream.have_first) {
      stream.have_first = true;
      stream.first_sequence = stream.highest_received = media.sequence();
    }
    if (static_cast<int32_t>(media.sequence() - stream.highest_received) > 0) {
      stream.highest_received = media.sequence();
    }
    stream.jitter.insert(media.sequence(), packet, kHeaderBytes + media.payload().size());
  }

  // --- handshake -----------------------------------------------------------

  template <typename Predicate>
  void await(Predicate ready, const std::function<void()>& resend, const std::string& what) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options.connect_timeout_ms);
    auto next_resend = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    std::unique_lock<std::mutex> lock(mutex);
    while (!ready()) {
      if (fatal_error) {
        throw ClientError("the server refused " + what + ": " + fatal_error->text() +
                          (fatal_error->code() == wire::ERROR_UNAUTHENTICATED && !welcome ? auth_hint() : ""));
      }
      if (!goodbye.empty()) throw ClientError("the server ended the session: " + goodbye);
      if (stop_requested.load()) throw ClientError("stopped");
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        throw ClientError("no answer from " + options.server + (options.tcp ? " (TCP)" : " (UDP)") +
                          " to " + what + " within " + std::to_string(options.connect_timeout_ms) +
                          " ms: is encodecd running there?");
      }
      if (resend && !tcp && now >= next_resend) {
        lock.unlock();
        resend();  // UDP: the first datagram may be lost
        lock.lock();
        next_resend = now + std::chrono::milliseconds(300);
      }
      changed.wait_until(lock, std::min(deadline, next_resend));
    }
  }

  // What to check when the server refused the Hello as not authentic (a
  // refused Join names the room its key grants instead).
  std::string auth_hint() const {
    if (!key) return " (the server requires a token: --token, --token-file or ENCODEC_TOKEN)";
    return " (is the token the server's, or this room's key, and this machine's clock within 30 s "
           "of the server's?)";
  }

  void handshake() {
    wire::Envelope hello;
    wire::Hello* body = hello.mutable_hello();
    body->set_protocol_version(net::kProtocolVersion);
    body->set_client_name(options.name);
    if (model) {  // without one the Hello's model stays empty: Opus only
      wire::ModelInfo* info = body->mutable_model();
      info->set_name(model->name());
      info->set_checksum(checksum);
      info->set_sample_rate_hz(static_cast<uint32_t>(sample_rate_hz));
      info->set_frame_samples(static_cast<uint32_t>(model->config().hop_length()));
      body->add_payload_kinds(wire::PAYLOAD_KIND_RAW_CODES);
      if (lm) body->add_payload_kinds(wire::PAYLOAD_KIND_LM_CODES);
    }
    body->add_payload_kinds(wire::PAYLOAD_KIND_OPUS);
    if (key) {
      body->set_auth_time_unix_ms(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count()));
      body->set_auth_nonce(hello_nonce);
    }
    send(hello);
    await([this] { return welcome.has_value(); }, [&] { send(hello); }, "Hello");
    session_id = welcome->session_id();
    if (!model && welcome->model().sample_rate_hz() != static_cast<uint32_t>(sample_rate_hz)) {
      throw ClientError("the server's model runs at " + std::to_string(welcome->model().sample_rate_hz()) +
                        " Hz; a client without the model sends and receives Opus at " +
                        std::to_string(sample_rate_hz) + " Hz");
    }
    if (signer) signer->set_session(session_id);

    wire::Envelope join;
    wire::Join* request = join.mutable_join();
    request->set_room(options.room);
    request->set_role(options.mode == Mode::kCall   ? wire::ROLE_CALL
                      : options.mode == Mode::kSend ? wire::ROLE_SEND
                                                    : wire::ROLE_LISTEN);
    // Calls and broadcasts create their room; a listener needs it to exist.
    request->set_create(options.mode != Mode::kListen);
    wire::ReceiveFormat* format = request->mutable_receive();
    format->set_kind(options.receive_opus ? wire::PAYLOAD_KIND_OPUS
                     : options.lm         ? wire::PAYLOAD_KIND_LM_CODES
                                          : wire::PAYLOAD_KIND_RAW_CODES);
    format->set_bandwidth_kbps(options.receive_bandwidth_kbps);
    format->set_opus_frame_ms(static_cast<uint32_t>(options.opus_frame_ms));
    format->set_opus_bitrate_bps(static_cast<uint32_t>(options.opus_bitrate_bps));
    send(join);
    await([this] { return joined.has_value(); }, [&] { send(join); }, "joining room '" + options.room + "'");
    if (options.wait_for_members > 0) {
      std::unique_lock<std::mutex> lock(mutex);
      const auto deadline = std::chrono::steady_clock::now() +
                            std::chrono::microseconds(static_cast<int64_t>(options.wait_for_members_timeout_s * 1e6));
      while (room_members < options.wait_for_members) {
        if (fatal_error) throw ClientError("the server ended the session: " + fatal_error->text());
        if (stop_requested.load()) throw ClientError("stopped");
        if (std::chrono::steady_clock::now() >= deadline) {
          throw ClientError("room '" + options.room + "' has " + std::to_string(room_members) + " of the " +
                            std::to_string(options.wait_for_members) + " members waited for");
        }
        changed.wait_for(lock, std::chrono::milliseconds(100));
        // The Join again now and then: it keeps the session alive, and its answer
        // lists the members even when a RoomUpdate was lost.
        if (steady_now_us() - last_sent_us > 300'000) {
          lock.unlock();
          send(join);
          lock.lock();
        }
      }
    }
  }

  // --- sending -------------------------------------------------------------

  std::unique_ptr<LmStreamEncoder> lm_encoder;
  uint32_t lm_context_start = 0;
  int lm_context_codebooks = 0;
  int frames_in_context = 0;
  uint32_t next_sequence = 0;
  wire::Envelope media_out;  // reused for every frame sent
  std::array<uint8_t, net::kMaxDatagramBytes> payload_scratch{};
  std::array<uint64_t, 64> capture_times_us{};  // by frame index mod 64

  // Sending with --lm: whether this frame is LM-coded, or raw codes while a
  // receiver recovers from a loss (ClientOptions::lm_loss_fallback_s). A reset
  // request always ends the current context: the next LM frame starts one.
  std::string lm_bytes = std::string(net::kMaxDatagramBytes, '\0');  // capacity kept: cleared, not freed
  bool lm_context_wanted = false;
  int64_t lm_raw_until_us = 0;
  int64_t lm_raw_hold_us = 0;
  int64_t lm_last_reset_us = 0;
  bool lm_codes_now() {
    const int64_t now_us = steady_now_us();
    if (lm_reset_requested.exchange(false)) {
      lm_context_wanted = true;
      const int64_t base_us = static_cast<int64_t>(options.lm_loss_fallback_s * 1e6);
      const bool repeated = lm_last_reset_us != 0 && now_us - lm_last_reset_us < 2 * lm_raw_hold_us;
      lm_raw_hold_us = repeated ? std::min(2 * lm_raw_hold_us, 16 * base_us) : base_us;
      lm_last_reset_us = now_us;
      lm_raw_until_us = now_us + lm_raw_hold_us;
    }
    return now_us >= lm_raw_until_us;
  }

  // The reused Media of the next frame sent, its sequence and timestamp set.
  wire::Media* next_media(bool end_of_stream) {
    wire::Media* media = net::reuse_media(&media_out);
    media->set_sequence(next_sequence);
    media->set_timestamp_samples(uint64_t{next_sequence} * hop);
    media->set_bandwidth_kbps(options.send_opus ? opus_send_bitrate_bps() / 1000.0 : options.bandwidth_kbps);
    media->set_end_of_stream(end_of_stream);
    return media;
  }

  int opus_send_bitrate_bps() const {
    return options.opus_bitrate_bps > 0 ? options.opus_bitrate_bps
                                        : static_cast<int>(std::lround(options.bandwidth_kbps * 1000));
  }

  // The end of this client's stream alone, without a frame.
  void send_end_mark() {
    wire::Media* media = next_media(/*end_of_stream=*/true);
    media->set_kind(options.send_opus ? wire::PAYLOAD_KIND_OPUS : wire::PAYLOAD_KIND_RAW_CODES);
    send(media_out);
  }

  // One libopus packet of `hop` samples (sending Opus).
  void send_opus_packet(const uint8_t* packet, size_t bytes, bool end_of_stream) {
    wire::Media* media = next_media(end_of_stream);
    media->set_capture_time_us(capture_times_us[next_sequence % capture_times_us.size()]);
    media->set_kind(wire::PAYLOAD_KIND_OPUS);
    media->set_payload(packet, bytes);
    send_counted(*media);
  }

  // Sends the frame next_media() began, counting it.
  void send_counted(const wire::Media& media) {
    payload_bytes_sent += media.payload().size();
    ++frames_sent;
    ++next_sequence;
    send(media_out);
  }

  void send_frame(const CodeFrame& frame, bool end_of_stream) {
    wire::Media* media = next_media(end_of_stream);
    media->set_num_codebooks(static_cast<uint32_t>(frame.num_codebooks));
    media->set_capture_time_us(capture_times_us[next_sequence % capture_times_us.size()]);
    if (options.lm && lm_codes_now()) {
      const bool new_context = !lm_encoder || lm_context_wanted ||
                               frames_in_context >= options.lm_context_frames ||
                               lm_context_codebooks != frame.num_codebooks;
      lm_context_wanted = false;
      lm_bytes.clear();
      if (new_context) {
        // The same codebooks: the encoder starts over in its own buffers
        // (its segment is already ended: nothing to append).
        if (lm_encoder && lm_context_codebooks == frame.num_codebooks) {
          lm_encoder->finish(&lm_bytes);
        } else {
          lm_encoder = std::make_unique<LmStreamEncoder>(*lm, frame.num_codebooks);
        }
        lm_context_start = next_sequence;
        lm_context_codebooks = frame.num_codebooks;
        frames_in_context = 0;
      }
      int64_t codes[kMaxStreamCodebooks];
      for (int k = 0; k < frame.num_codebooks; ++k) codes[k] = frame.codes[k];
      lm_encoder->push_frame(codes, &lm_bytes);
      lm_encoder->end_segment(&lm_bytes);
      ++frames_in_context;
      ++frames_sent_lm;
      media->set_kind(wire::PAYLOAD_KIND_LM_CODES);
      media->set_lm_context_start(lm_context_start);
      media->set_payload(lm_bytes);
    } else {
      const size_t bytes =
          net::pack_raw_codes(frame.codes.data(), frame.num_codebooks, bits, payload_scratch.data());
      media->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
      media->set_payload(payload_scratch.data(), bytes);
    }
    send_counted(*media);
  }

  // --- playout -------------------------------------------------------------

  // Under `mutex`. Decodes one jitter-buffer slot into the stream's audio.
  void decode_slot(RemoteStream& stream, const net::JitterBuffer::Slot& slot, bool play) {
    PacketHeader header;
    std::memcpy(&header, slot.payload, kHeaderBytes);
    const uint8_t* payload = slot.payload + kHeaderBytes;
    const size_t size = slot.size - kHeaderBytes;
    const size_t before = stream.audio.size();
    bool decoded = false;
    try {
      if (header.kind == wire::PAYLOAD_KIND_OPUS) {
        decoded = decode_opus(stream, payload, size);
      } else {
        CodeFrame frame;
        frame.num_codebooks = header.num_codebooks;
        if (!stream.decoder) {
          decoded = false;  // codes for a client that asked for Opus (or has no model)
        } else if (header.kind == wire::PAYLOAD_KIND_RAW_CODES) {
          decoded = frame.num_codebooks >= 1 && frame.num_codebooks <= kMaxStreamCodebooks &&
                    net::unpack_raw_codes(payload, size, frame.num_codebooks, bits, frame.codes.data());
        } else if (header.kind == wire::PAYLOAD_KIND_LM_CODES) {
          decoded = decode_lm(stream, header, slot.sequence, payload, size, &frame);
        }
        if (decoded) {
          stream.decoder->push(frame);
          take_decoded(stream);
        }
      }
    } catch (const std::exception&) {
      decoded = false;  // a corrupt frame is concealed, never fatal
    }
    if (!decoded) {
      ++stream.undecodable;
      conceal(stream);
      return;
    }
    if (!play) {
      stream.audio.resize(before);  // decoded for the decoder's state only
    } else if (header.capture_time_us != 0) {
      const double latency_ms = (steady_now_us() - static_cast<int64_t>(header.capture_time_us)) / 1000.0;
      if (stream.latencies_ms.size() < stream.latencies_ms.capacity()) stream.latencies_ms.push_back(latency_ms);
    }
  }

  bool decode_opus(RemoteStream& stream, const uint8_t* payload, size_t size) {
    const int frame_samples = sample_rate_hz * options.opus_frame_ms / 1000;
    if (!stream.opus) {
      std::string error;
      stream.opus = net::OpusFrameDecoder::create(sample_rate_hz, frame_samples, &error);
      if (!stream.opus) return false;
    }
    const size_t at = stream.audio.size();
    stream.audio.resize(at + frame_samples);
    return stream.opus->decode(payload, size, stream.audio.data() + at);
  }

  bool decode_lm(RemoteStream& stream, const PacketHeader& header, uint32_t sequence,
                 const uint8_t* payload, size_t size, CodeFrame* frame) {
    if (!lm) return false;
    if (header.lm_context_start == sequence) {
      // A context start: a fresh LM state, decodable from here on.
      if (!stream.lm_decoder || stream.lm_codebooks != header.num_codebooks) {
        stream.lm_decoder = std::make_unique<LmStreamDecoder>(*lm, header.num_codebooks);
        stream.lm_codebooks = header.num_codebooks;
      } else {
        stream.lm_decoder->finish();
      }
      stream.lm_in_context = true;
      stream.lm_reset_pending = false;
      stream.lm_expected = sequence;
    }
    if (!stream.lm_in_context || stream.lm_expected != sequence ||
        header.lm_context_start > sequence || header.num_codebooks != stream.lm_codebooks) {
      lose_lm_context(stream);
      return false;
    }
    stream.lm_decoder->feed(reinterpret_cast<const char*>(payload), size);
    int64_t codes[kMaxStreamCodebooks];
    const bool complete = stream.lm_decoder->next_frame(codes);
    stream.lm_decoder->end_segment();
    if (!complete) {
      lose_lm_context(stream);
      return false;
    }
    for (int k = 0; k < header.num_codebooks; ++k) frame->codes[k] = static_cast<int32_t>(codes[k]);
    stream.lm_expected = sequence + 1;
    return true;
  }

  // The LM decoder cannot go on without the frames it missed: ask the sender
  // for a new context, conceal until it comes. The request is repeated while
  // none comes (it, or the context start, may be lost too).
  void lose_lm_context(RemoteStream& stream) {
    constexpr int64_t kLmResetRetryUs = 300'000;
    stream.lm_in_context = false;
    const int64_t now_us = steady_now_us();
    if (stream.lm_reset_pending && now_us - stream.lm_reset_requested_us < kLmResetRetryUs) return;
    stream.lm_reset_pending = true;
    stream.lm_reset_requested_us = now_us;
    ++stream.lm_resets_requested;
    wire::Envelope report;
    report.mutable_report()->set_stream_id(stream.stream_id);
    report.mutable_report()->set_request_lm_reset(true);
    send(report);
  }

  // `frame_missing`: a sequence was lost (not a stretch of the playout, which
  // conceals without skipping a frame: the LM context survives it).
  void conceal(RemoteStream& stream, bool frame_missing = true) {
    if (options.receive_opus) {
      const int frame_samples = sample_rate_hz * options.opus_frame_ms / 1000;
      if (stream.opus) {
        const size_t at = stream.audio.size();
        stream.audio.resize(at + frame_samples);
        stream.opus->conceal(stream.audio.data() + at);
      } else {
        stream.audio.resize(stream.audio.size() + frame_samples, 0.0f);
      }
      return;
    }
    if (frame_missing && stream.lm_in_context && stream.lm_decoder) lose_lm_context(stream);
    stream.decoder->push_lost();
    take_decoded(stream);
  }

  void take_decoded(RemoteStream& stream) {
    const int64_t ready = stream.decoder->samples_ready();
    if (ready <= 0) return;
    const size_t at = stream.audio.size();
    stream.audio.resize(at + static_cast<size_t>(ready));
    stream.decoder->pop(stream.audio.data() + at, ready);
  }

  // Under `mutex`: one playout step of a stream. Returns false when it has
  // nothing to play yet (fast mode: waiting for packets).
  bool play_one(RemoteStream& stream, bool fast) {
    if (stream.ended) return false;
    net::JitterBuffer::Slot slot;
    const bool sender_done = stream.end_seen;
    for (;;) {
      const uint32_t due = stream.jitter.next_sequence();
      const net::JitterBuffer::Playout playout =
          fast ? stream.jitter.next_in_order(&slot, sender_done) : stream.jitter.next(&slot);
      if (playout == net::JitterBuffer::Playout::kWaiting) {
        if (fast && sender_done && stream.jitter.pending_frames() <= 0) finish_stream(stream);
        return false;
      }
      if (playout == net::JitterBuffer::Playout::kDiscard) {
        decode_slot(stream, slot, /*play=*/false);
        continue;
      }
      const uint32_t sequence = playout == net::JitterBuffer::Playout::kFrame
                                    ? slot.sequence
                                    : stream.jitter.next_sequence() - 1;
      if (playout == net::JitterBuffer::Playout::kFrame) {
        decode_slot(stream, slot, /*play=*/true);
      } else {
        conceal(stream, /*frame_missing=*/stream.jitter.next_sequence() != due);
      }
      if (stream.end_seen && static_cast<int32_t>(sequence - stream.end_sequence) >= 0) {
        finish_stream(stream);
      }
      return true;
    }
  }

  void finish_stream(RemoteStream& stream) {
    if (stream.ended) return;
    stream.ended = true;
    if (!options.receive_opus) {
      stream.decoder->finish();
      take_decoded(stream);
    }
  }

  // --- the media loop ------------------------------------------------------

  ClientReport run() {
    const bool sending = options.mode != Mode::kListen;
    const bool receiving = options.mode != Mode::kSend;
    if (options.lm && !lm) throw ClientError("--lm needs the LM (--lm-checkpoint FILE)");
    if (options.lm && options.receive_opus) throw ClientError("--lm and --opus do not go together");
    std::unique_ptr<CaptureSource> source;
    std::unique_ptr<PlaybackSink> sink;
    try {
      if (sending) {
        source = options.capture_factory ? options.capture_factory()
                                         : open_capture(options.input, sample_rate_hz, options.duration_s, hop);
        if (!source) throw ClientError("capture_factory returned no source");
      }
      if (receiving) {
        sink = options.playback_factory ? options.playback_factory()
                                        : open_playback(options.output, sample_rate_hz, hop);
        if (!sink) throw ClientError("playback_factory returned no sink");
      }
    } catch (const AudioDeviceError& error) {
      throw ClientError(error.what());
    } catch (const std::exception& error) {
      throw ClientError(error.what());
    }
    // What sends: the streaming encoder, or libopus (sending Opus).
    std::optional<StreamingEncoder> encoder;
    std::unique_ptr<net::OpusFrameEncoder> opus_encoder;
    // libopus keeps each packet under this (400 kbps in 20 ms: any sensible bitrate), so
    // that the Media, its header and an auth trailer fit in one datagram.
    std::array<uint8_t, 1000> opus_packet{};
    if (sending && options.send_opus) {
      net::OpusFrameOptions opus_options;
      opus_options.sample_rate_hz = sample_rate_hz;
      opus_options.frame_samples = hop;
      opus_options.bitrate_bps = opus_send_bitrate_bps();
      std::string error;
      opus_encoder = net::OpusFrameEncoder::create(opus_options, &error);
      if (!opus_encoder) throw ClientError("libopus: " + error);
    } else if (sending) {
      encoder.emplace(*model);
      try {
        encoder->set_bandwidth(options.bandwidth_kbps);
      } catch (const std::exception& error) {
        throw ClientError(std::string("--bandwidth: ") + error.what());
      }
    }
    connect();
    handshake();
    const int64_t start_us = steady_now_us();
    const int64_t frame_us = static_cast<int64_t>(std::llround(1e6 * hop / sample_rate_hz));
    const int keep_alive_us = static_cast<int>(welcome->keep_alive_interval_ms()) * 1000;
    std::vector<float> block(static_cast<size_t>(hop));
    bool input_done = !sending;
    int64_t input_done_us = input_done ? start_us : 0;
    int64_t frames_captured = 0;
    int64_t next_stats_line_us = start_us + 1'000'000;
    int64_t next_receiver_report_us = start_us + 1'000'000;
    int64_t samples_played = 0;
    const int64_t duration_samples =
        options.duration_s > 0 ? static_cast<int64_t>(options.duration_s * sample_rate_hz) : 0;
    const bool fast = options.as_fast_as_possible;
    const bool mic = source && source->is_device();
    // One playout slot per frame of what is received (Opus frames are longer).
    const int64_t playout_period_us = options.receive_opus ? 1000LL * options.opus_frame_ms : frame_us;
    const int64_t playout_period_samples =
        options.receive_opus ? int64_t{sample_rate_hz} * options.opus_frame_ms / 1000 : hop;
    // A sound card plays on its own clock, whatever its phase against the
    // packets; a file (or any sink that is not a device) plays when it is
    // written, so its clock is ours to set: it follows the first stream's due
    // times (see PlayoutClock) instead of the capture's tick.
    const bool own_playout_clock = receiving && !fast && !mic && !sink->is_device();
    std::vector<float> mix(static_cast<size_t>(std::max<int64_t>(hop, playout_period_samples)));
    PlayoutClock playout_clock{start_us, playout_period_us};
    int64_t next_tick_us = start_us;  // capture, and playout on a device

    for (;;) {
      const int64_t now_us = steady_now_us();
      // The capture's tick (a microphone is its own clock: its read blocks).
      const bool tick_due = fast || mic || now_us >= next_tick_us;
      if (tick_due && !fast && !mic) next_tick_us += frame_us;
      // Capture one frame's block and send what it completes.
      if (!input_done && tick_due) {
        const int64_t count = source->read(block.data(), hop);
        if (count > 0) {
          frames_captured += 1;
          capture_times_us[(frames_captured - 1) % capture_times_us.size()] = steady_now_us();
        }
        if (count < hop) {
          input_done = true;
          input_done_us = now_us;
        }
        if (opus_encoder) {
          // The last partial block padded with silence: a packet is a whole frame.
          if (count > 0) {
            std::fill(block.begin() + count, block.end(), 0.0f);
            const size_t bytes = opus_encoder->encode(block.data(), opus_packet.data(), opus_packet.size());
            if (bytes > 0) send_opus_packet(opus_packet.data(), bytes, input_done);
          }
        } else {
          if (count > 0) encoder->push(block.data(), count);
          if (input_done) encoder->finish();
          CodeFrame frame;
          while (encoder->pop(&frame)) send_frame(frame, input_done && encoder->frames_ready() == 0);
        }
        // The end mark again, alone (once: this branch runs no more): over UDP
        // the last frame may be lost.
        if (input_done) {
          for (int copy = 0; copy < 2; ++copy) send_end_mark();
        }
      }
      bool done = false;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (fatal_error) throw ClientError("the server ended the session: " + fatal_error->text());
        if (!goodbye.empty()) done = true;
        end_streams_of_departed(now_us);
        if (receiving) {
          if (fast) {
            // A bounded share per turn: decoding everything that came in one
            // go could keep this loop from sending (and from its keep-alives)
            // long enough for the server to time the session out.
            constexpr int kFastFramesPerTurn = 16;
            for (auto& [id, stream] : streams) {
              for (int frame = 0; frame < kFastFramesPerTurn && play_one(*stream, true); ++frame) {
              }
            }
          } else if (own_playout_clock) {
            if (now_us >= playout_clock.next_us) {
              // One slot of every stream, mixed into one block of the slot's length.
              for (auto& [id, stream] : streams) play_one(*stream, false);
              const size_t count = static_cast<size_t>(playout_period_samples);
              std::fill_n(mix.begin(), count, 0.0f);
              for (auto& [id, stream] : streams) mix_into(*stream, mix.data(), count);
              sink->write(mix.data(), playout_period_samples);
              samples_played += playout_period_samples;
              playout_clock.advance(now_us, streams);
            }
          } else if (tick_due) {
            for (auto& [id, stream] : streams) {
              if (stream->next_playout_us == 0) stream->next_playout_us = now_us;
              while (now_us >= stream->next_playout_us && !stream->ended) {
                play_one(*stream, false);
                stream->next_playout_us += playout_period_us;
              }
            }
            // One block to the sink: every stream's oldest audio, mixed.
            std::fill(mix.begin(), mix.begin() + hop, 0.0f);
            for (auto& [id, stream] : streams) mix_into(*stream, mix.data(), static_cast<size_t>(hop));
            sink->write(mix.data(), hop);
            samples_played += hop;
          }
        }
        if (!done) done = finished(input_done, input_done_us, now_us, samples_played, duration_samples);
        if (options.live_stats && now_us >= next_stats_line_us) {
          print_live(now_us - start_us);
          next_stats_line_us += 1'000'000;
        }
      }
      if (stop_requested.load()) done = true;
      if (done) break;
      if (now_us - last_sent_us > keep_alive_us) {
        wire::Envelope keep_alive;
        keep_alive.mutable_keep_alive()->set_sent_time_us(static_cast<uint64_t>(now_us));
        send(keep_alive);
      }
      // Receiver reports once a second (the sender's side of the statistics).
      if (receiving && now_us >= next_receiver_report_us) {
        send_reports();
        next_receiver_report_us += 1'000'000;
      }
      if (fast) {
        if (input_done) std::this_thread::sleep_for(std::chrono::microseconds(500));
      } else if (!mic) {
        int64_t wake_us = next_tick_us;
        if (own_playout_clock) {
          // Capture ticks are not needed once the input ended.
          wake_us = input_done ? playout_clock.next_us : std::min(next_tick_us, playout_clock.next_us);
        }
        std::this_thread::sleep_until(std::chrono::steady_clock::time_point(std::chrono::microseconds(wake_us)));
      }
    }

    // The last frames may still be on their way (and a Goodbye overtaking them
    // over UDP would make the server drop them): a moment before leaving.
    if (sending && !tcp && !stop_requested.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kSenderDrainMs));
    }
    // Leave, then flush what is decoded.
    wire::Envelope bye;
    bye.mutable_goodbye()->set_reason("done");
    send(bye);
    ClientReport report;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (receiving) {
        if (fast) {
          write_fast_mix(*sink);
        } else {
          for (auto& [id, stream] : streams) finish_stream(*stream);
        }
        sink->finish();
      }
      report = make_report(steady_now_us() - start_us);
    }
    shutdown();
    return report;
  }

  void mix_into(RemoteStream& stream, float* mix, size_t block) {
    // Live playout: an occasional second frame in one tick (a late timer) is
    // absorbed by the queue, but audio left queued tick after tick (the
    // decoder's start burst, a double play that never drains) adds its length
    // to the delay for good: after a while it is dropped. An Opus stream keeps
    // up to one Opus frame, which is longer than a block.
    constexpr int kStandingQueueTicks = 25;
    const size_t opus_frame = static_cast<size_t>(sample_rate_hz * options.opus_frame_ms / 1000);
    const size_t allowed = options.receive_opus ? opus_frame : 0;
    const size_t hard_limit = 4 * block + allowed;
    size_t available = stream.audio.size() - stream.audio_read;
    if (available > hard_limit) {
      stream.startup_dropped += static_cast<int64_t>(available - hard_limit);
      stream.audio_read += available - hard_limit;
    }
    const size_t count = std::min(block, stream.audio.size() - stream.audio_read);
    for (size_t i = 0; i < count; ++i) mix[i] += stream.audio[stream.audio_read + i];
    stream.audio_read += count;
    stream.samples_out += static_cast<int64_t>(count);
    available = stream.audio.size() - stream.audio_read;
    stream.standing_queue_ticks = available > allowed ? stream.standing_queue_ticks + 1 : 0;
    if (stream.standing_queue_ticks >= kStandingQueueTicks) {
      stream.startup_dropped += static_cast<int64_t>(available - allowed);
      stream.audio_read += available - allowed;
      stream.standing_queue_ticks = 0;
    }
    if (stream.audio_read == stream.audio.size()) {
      stream.audio.clear();
      stream.audio_read = 0;
    } else if (stream.audio_read > 4 * block) {
      stream.audio.erase(stream.audio.begin(), stream.audio.begin() + static_cast<std::ptrdiff_t>(stream.audio_read));
      stream.audio_read = 0;
    }
  }

  // As fast as possible: each stream's whole audio, from its first frame, summed.
  void write_fast_mix(PlaybackSink& sink) {
    size_t longest = 0;
    for (auto& [id, stream] : streams) {
      finish_stream(*stream);
      longest = std::max(longest, stream->audio.size());
    }
    std::vector<float> mixed(longest, 0.0f);
    for (auto& [id, stream] : streams) {
      for (size_t i = 0; i < stream->audio.size(); ++i) mixed[i] += stream->audio[i];
      stream->samples_out = static_cast<int64_t>(stream->audio.size());
    }
    if (!mixed.empty()) sink.write(mixed.data(), static_cast<int64_t>(mixed.size()));
  }

  // Under `mutex`.
  bool finished(bool input_done, int64_t input_done_us, int64_t now_us, int64_t samples_played,
                int64_t duration_samples) {
    if (options.mode == Mode::kSend) return input_done;
    if (options.mode == Mode::kListen && duration_samples > 0) {
      int64_t heard = samples_played;
      if (options.as_fast_as_possible) {
        heard = 0;
        for (auto& [id, stream] : streams) heard = std::max<int64_t>(heard, stream->audio.size());
      }
      if (heard >= duration_samples) return true;
    }
    if (!input_done) return false;
    bool all_ended = !streams.empty();
    int64_t last_packet_us = input_done_us;
    for (auto& [id, stream] : streams) {
      all_ended &= stream->ended;
      last_packet_us = std::max(last_packet_us, stream->last_packet_us);
    }
    if (all_ended) return true;
    // A call whose peers fell silent (or never came) ends after the linger time;
    // a listener waits for its sender (or Ctrl-C, or --duration).
    if (options.mode == Mode::kCall) {
      return now_us - last_packet_us > static_cast<int64_t>(options.linger_s * 1e6);
    }
    return false;
  }

  void send_reports() {
    std::vector<wire::Envelope> reports;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& [id, stream] : streams) {
        const net::JitterBufferStats stats = stream->jitter.stats();
        wire::Envelope envelope;
        wire::ReceiverReport* report = envelope.mutable_report();
        report->set_stream_id(id);
        report->set_received(stats.played + stats.discarded);
        report->set_lost(stats.concealed - std::min(stats.concealed, stats.late));
        report->set_late(stats.late);
        report->set_duplicates(stats.duplicates);
        report->set_jitter_ms(stats.jitter_ms);
        report->set_highest_sequence(stream->jitter.next_sequence());
        reports.push_back(std::move(envelope));
      }
    }
    for (auto& report : reports) send(report);
  }

  void print_live(int64_t elapsed_us) {
    std::string line = "\r" + std::to_string(elapsed_us / 1000000) + " s  sent " +
                       std::to_string(frames_sent) + " frames";
    char buffer[256];
    for (auto& [id, stream] : streams) {
      const net::JitterBufferStats stats = stream->jitter.stats();
      const uint64_t slots = stats.played + stats.concealed;
      std::snprintf(buffer, sizeof buffer,
                    " | stream %u: loss %.1f%%, late %llu, jitter %.1f ms, buffer %d frames, latency %.0f ms",
                    id, slots ? 100.0 * stats.concealed / slots : 0.0,
                    static_cast<unsigned long long>(stats.late), stats.jitter_ms, stats.depth_frames,
                    stream->latencies_ms.empty() ? 0.0 : stream->latencies_ms.back());
      line += buffer;
    }
    if (options.log) *options.log << line << "   " << std::flush;
  }

  ClientReport make_report(int64_t elapsed_us) {
    ClientReport report;
    report.frames_sent = frames_sent;
    report.frames_sent_lm = frames_sent_lm;
    report.payload_bytes_sent = payload_bytes_sent;
    report.stream_id = joined ? joined->stream_id() : 0;
    report.rtt_ms = rtt_ms;
    report.seconds = elapsed_us / 1e6;
    report.goodbye = goodbye;
    report.unauthenticated = unauthenticated;
    report.replayed = replayed;
    for (auto& [id, stream] : streams) {
      StreamReport entry;
      entry.stream_id = id;
      entry.first_sequence = stream->first_sequence;
      entry.ended = stream->ended;
      entry.jitter = stream->jitter.stats();
      entry.lm_resets_requested = stream->lm_resets_requested;
      entry.undecodable = stream->undecodable;
      entry.latency_p50_ms = percentile(stream->latencies_ms, 0.5);
      entry.latency_p99_ms = percentile(stream->latencies_ms, 0.99);
      entry.samples_out = stream->samples_out;
      report.streams.push_back(entry);
    }
    return report;
  }

  void shutdown() {
    if (tcp) tcp->close_after_writes();
    asio::post(io, [this] {
      boost::system::error_code ignored;
      if (udp_socket) udp_socket->close(ignored);
    });
    // Give the Goodbye a moment to leave, then stop.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    io.stop();
    if (io_thread.joinable()) io_thread.join();
  }
};

Client::Client(const LiveModel& model, std::shared_ptr<const LmModel> lm, ClientOptions options)
    : impl_(std::make_unique<Impl>(&model, std::move(lm), std::move(options))) {}

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(nullptr, nullptr, std::move(options))) {}

bool needs_model(const ClientOptions& options) {
  const bool sends_codes = options.mode != Mode::kListen && !options.send_opus;
  const bool receives_codes = options.mode != Mode::kSend && !options.receive_opus;
  return sends_codes || receives_codes;
}

Client::~Client() {
  if (impl_->io_thread.joinable()) {
    impl_->io.stop();
    impl_->io_thread.join();
  }
}

ClientReport Client::run() {
  try {
    return impl_->run();
  } catch (...) {
    // The server should not keep a session that failed here until it times out.
    if (impl_->session_id != 0 && impl_->io_thread.joinable()) {
      wire::Envelope bye;
      bye.mutable_goodbye()->set_reason("client error");
      impl_->send(bye);
    }
    if (impl_->io_thread.joinable()) {
      impl_->io.stop();
      impl_->io_thread.join();
    }
    throw;
  }
}

void Client::stop() {
  impl_->stop_requested.store(true);
  impl_->changed.notify_all();
}

}  // namespace encodec::client
