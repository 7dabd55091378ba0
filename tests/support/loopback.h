// Helpers for the network tests: a server and clients on 127.0.0.1 with the
// golden 24 kHz checkpoint, the audio a client should hear computed
// independently (the streaming engine run locally on the same input), and a raw
// protocol peer that sends whatever a test wants.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>

#include "encodec/client.h"
#include "encodec/live_model.h"
#include "encodec/net/auth.h"
#include "encodec/net/wire.h"
#include "encodec/server.h"
#include "encodec/streaming.h"

namespace encodec::testing {

// The golden 24 kHz model as the daemon and the client load it (null without golden data).
const LiveModel* golden_live_model();
std::shared_ptr<const LmModel> golden_live_lm();

server::ServerOptions loopback_server_options();

// The codes StreamingEncoder gives for a file (read and converted as the client reads it).
std::vector<CodeFrame> encode_file(const EncodecModel& model, const std::string& path,
                                   double bandwidth_kbps);
// The codes StreamingEncoder gives for `samples` (mono, the model's rate), pushed at once.
std::vector<CodeFrame> encode_samples(const EncodecModel& model, const std::vector<float>& samples,
                                      double bandwidth_kbps);
// Codes truncated to their first `codebooks` levels.
std::vector<CodeFrame> truncate_codes(std::vector<CodeFrame> frames, int codebooks);
// StreamingDecoder over frames[first...], then finish().
std::vector<float> decode_codes(const EncodecModel& model, const std::vector<CodeFrame>& frames,
                                size_t first = 0);
// The samples of a WAV file (int16 / 32768).
std::vector<float> read_wav(const std::string& path);
// `samples` through the client's own file sink and back: the int16 a client writes.
std::vector<float> as_written(const std::vector<float>& samples, const std::string& dir);

// A two-party call through the server at 127.0.0.1:udp_port (room "call", as
// fast as possible, each member waiting for `members`, signed with `token`
// when there is one) that must come out bit for bit; `meanwhile` runs while it
// goes on. Files go to `dir`.
void expect_clean_call(uint16_t udp_port, const std::string& dir,
                       const std::function<void()>& meanwhile, int members = 2,
                       const std::string& token = "");

// A protocol peer over UDP or TCP that sends and receives single envelopes.
class RawPeer {
 public:
  RawPeer(uint16_t port, bool tcp);
  ~RawPeer();
  // From now on every message sent is signed with this secret (a Hello gets a
  // fresh nonce and the current time).
  void use_key(const std::string& secret);
  // The bytes send() sends for `envelope` (its session id set when 0; signed
  // with the key, if any; framed on TCP): for tests that replay or tamper.
  std::string serialize(wire::Envelope envelope);
  void send(wire::Envelope envelope);
  void send_bytes(const std::string& bytes);  // UDP: one datagram; TCP: raw stream bytes
  // The next envelope within the timeout (nullopt: none, or the connection closed).
  std::optional<wire::Envelope> receive(std::chrono::milliseconds timeout);
  // Receives until `match` holds for an envelope (others are dropped).
  std::optional<wire::Envelope> receive_until(const std::function<bool(const wire::Envelope&)>& match,
                                              std::chrono::milliseconds timeout);
  // Hello (and Welcome): returns the session id, or 0 when refused. Without
  // the model, the Hello is a peer's that cannot run it (Opus only).
  uint64_t hello(uint32_t protocol_version = net::kProtocolVersion, bool with_model = true);
  uint64_t session_id() const { return session_id_; }
  // The session later messages name (and are signed for); hello() sets it.
  void set_session(uint64_t session_id);
  // The bytes of the last envelope received, with its authenticator trailer (if any).
  const std::string& last_received() const { return last_received_; }
  // The bytes send() sent last.
  const std::string& last_sent() const { return last_sent_; }
  bool tcp_closed() const { return closed_; }
  int native_handle() { return tcp_ ? tcp_->native_handle() : udp_->native_handle(); }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<boost::asio::ip::udp::socket> udp_;
  std::unique_ptr<boost::asio::ip::tcp::socket> tcp_;
  net::TcpFrameReader reader_;
  std::unique_ptr<net::MessageSigner> signer_;
  std::string last_received_, last_sent_;
  uint64_t session_id_ = 0;
  bool closed_ = false;
};

// Runs a client on a thread of its own (with the golden model, unless its
// options need none: client::needs_model); get() waits for its report.
class ClientRun {
 public:
  ClientRun(client::ClientOptions options, std::shared_ptr<const LmModel> lm = nullptr);
  ~ClientRun();
  client::ClientReport get();
  void stop() { client_->stop(); }

 private:
  std::unique_ptr<client::Client> client_;
  std::thread thread_;
  client::ClientReport report_;
  std::string error_;
  bool joined_ = false;
};

}  // namespace encodec::testing
