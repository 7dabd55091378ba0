// encodec-client: a live call, a broadcast sender or a listener against
// encodecd. Audio from a file, a tone, a click train or the microphone is
// encoded locally frame by frame (StreamingEncoder; LM-coded with --lm) and sent;
// what the server forwards goes through an adaptive jitter buffer per remote
// stream, is decoded locally (StreamingDecoder, loss concealed) and played to a
// file or the speaker. Protocol: proto/README.md.
//
// Usage:
//   encodec::client::ClientOptions options;
//   options.mode = Mode::kCall; options.room = "lobby";
//   options.input = "talk.wav"; options.output = "heard.wav";
//   encodec::client::Client client(live_model, lm, options);
//   ClientReport report = client.run();   // until the input ends and the peers are done
//
// Timing: in real time (the default) one frame is captured and one played every
// 13.3 ms by a steady clock (the microphone is its own clock). With
// as_fast_as_possible, frames are sent as fast as they are encoded and every
// remote stream is played in sequence order as packets come, a missing frame
// being concealed only once later ones are in (or its stream ended): files and tests.
//
// Thread safety: run() on one thread; stop() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "encodec/client_audio.h"
#include "encodec/live_model.h"
#include "encodec/net/jitter_buffer.h"

namespace encodec::client {

enum class Mode { kCall, kSend, kListen };

struct ClientOptions {
  std::string server = "127.0.0.1:7700";  // ADDR:PORT of encodecd (UDP, or TCP with tcp)
  bool tcp = false;
  Mode mode = Mode::kCall;
  std::string room;
  std::string input = "mic";       // FILE, "tone", "clicks" or "mic"
  std::string output = "speaker";  // FILE, "speaker" or "null"
  double bandwidth_kbps = 6.0;     // what this client sends
  double receive_bandwidth_kbps = 0.0;  // 0: as sent; lower: the server drops codebooks
  bool receive_opus = false;       // ask the server for Opus (transcoded) instead of codes
  int opus_frame_ms = 20;
  int opus_bitrate_bps = 0;        // 0: the bandwidth's bitrate
  // Send libopus packets (opus_frame_ms frames at opus_bitrate_bps) instead of
  // codes: the server encodes them for the room. Needs receive_opus (the server
  // takes Opus only from members it sends Opus to). With both, the client needs
  // no model: a peer that cannot run EnCodec (see needs_model).
  bool send_opus = false;
  bool lm = false;                 // send LM-coded codes (needs an LM)
  int lm_context_frames = 75;      // a new LM context at least this often (late joiners, losses)
  // An LM-coded frame decodes only after every earlier frame of its context, so
  // one lost packet silences a receiver until the next context start. When a
  // receiver reports that (an LM reset request), the sender sends raw codes for
  // this long, doubled for each further request within twice the current hold
  // (up to 16 times), then LM codes again from a new context: under loss the
  // stream costs the raw bitrate, not its audio. 0: LM codes always.
  double lm_loss_fallback_s = 1.0;
  double duration_s = 0.0;         // 0: until the input ends (listen: until the sender ends)
  bool as_fast_as_possible = false;  // (each remote stream may then run up to 4096 frames ahead)
  std::string name = "encodec-client";
  // The server's shared token or the room's key (16 bytes or more): every
  // message is signed with it, and the server's are verified (proto/README.md,
  // "Authentication"). "": none (a server that requires one refuses the Hello).
  std::string token;
  bool live_stats = false;         // a statistics line every second on stderr
  std::ostream* log = nullptr;     // the summary and warnings (nullptr: none)
  int connect_timeout_ms = 3000;
  // After this client's own input ended, how long a call waits for the others' streams to end.
  double linger_s = 2.0;
  // Start sending only once the room has this many members (this one included;
  // 0: at once). Waits at most wait_for_members_timeout_s.
  int wait_for_members = 0;
  double wait_for_members_timeout_s = 30.0;
  net::JitterBufferOptions jitter;
  // Audio ends supplied by the caller (benchmarks, embedding): when set, run()
  // calls it once instead of opening `input` (capture_factory, sending modes) or
  // `output` (playback_factory, receiving modes). The source must be at the
  // model's rate and is read as returned (duration_s does not limit it; it ends
  // the send when read() returns fewer samples than asked). A null result is a
  // ClientError. Unset (the default): `input` / `output` as above.
  std::function<std::unique_ptr<CaptureSource>()> capture_factory;
  std::function<std::unique_ptr<PlaybackSink>()> playback_factory;
};

struct StreamReport {
  uint32_t stream_id = 0;
  uint32_t first_sequence = 0;
  bool ended = false;             // its end_of_stream was played
  net::JitterBufferStats jitter;
  uint64_t lm_resets_requested = 0;
  uint64_t undecodable = 0;       // packets that could not be decoded (concealed instead)
  double latency_p50_ms = 0.0;    // capture (sender's clock) to playout, for played frames
  double latency_p99_ms = 0.0;
  int64_t samples_out = 0;
};

struct ClientReport {
  uint64_t frames_sent = 0;
  uint64_t frames_sent_lm = 0;    // of frames_sent, LM-coded (the rest raw codes)
  uint64_t payload_bytes_sent = 0;
  uint32_t stream_id = 0;         // this client's id in the room
  double rtt_ms = 0.0;            // last keep-alive round trip
  double seconds = 0.0;
  std::vector<StreamReport> streams;
  std::string goodbye;            // the server's reason, if it ended the session
  // With a token: the server's messages dropped as not authentic, and as seen before.
  uint64_t unauthenticated = 0;
  uint64_t replayed = 0;
};

// Failures the user can act on (server unreachable, refused, no device...).
class ClientError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Client {
 public:
  // `lm` may be null unless options.lm (or an LM-coded stream arrives: then it is
  // concealed and counted undecodable). The client codes with `lm` on the
  // deterministic kernels (LmKernels::kDeterministic: the protocol's LM coder)
  // whatever kernels it was set to.
  Client(const LiveModel& model, std::shared_ptr<const LmModel> lm, ClientOptions options);
  // A client without the model: Opus both ways (options.receive_opus, and
  // options.send_opus unless it only listens). Throws ClientError otherwise.
  explicit Client(ClientOptions options);
  ~Client();
  // Connects, joins, streams, and returns the report. Throws ClientError.
  ClientReport run();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Whether a client with these options encodes or decodes codes (and so needs
// the model): false when all it sends and receives is Opus.
bool needs_model(const ClientOptions& options);

// The `encodec-client` command: parses flags (CLI11), runs, prints the summary.
// Returns 0, 1 on errors, 2 on bad arguments.
int run_client_cli(int argc, const char* const* argv);

}  // namespace encodec::client
