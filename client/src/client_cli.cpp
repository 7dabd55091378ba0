#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include "encodec/client.h"
#include "encodec/client_audio.h"

namespace encodec::client {

namespace {

// SIGINT/SIGTERM end the call cleanly (goodbye, files committed).
Client* g_running_client = nullptr;
extern "C" void stop_on_signal(int) {
  if (g_running_client != nullptr) g_running_client->stop();
}

void print_summary(const ClientReport& report, const ClientOptions& options, std::ostream& out) {
  char line[512];
  std::snprintf(line, sizeof line, "encodec-client: %.1f s", report.seconds);
  out << line;
  if (options.mode != Mode::kListen) {
    const double kbps = report.seconds > 0 ? report.payload_bytes_sent * 8.0 / report.seconds / 1000 : 0;
    std::snprintf(line, sizeof line, ", sent %llu frames (payload %.2f kbps)",
                  static_cast<unsigned long long>(report.frames_sent), kbps);
    out << line;
    if (options.lm) {
      // Raw codes while receivers recover from losses (--lm-loss-fallback).
      std::snprintf(line, sizeof line, ", %llu LM-coded",
                    static_cast<unsigned long long>(report.frames_sent_lm));
      out << line;
    }
  }
  if (report.rtt_ms > 0) {
    std::snprintf(line, sizeof line, ", rtt %.2f ms", report.rtt_ms);
    out << line;
  }
  out << "\n";
  for (const StreamReport& stream : report.streams) {
    const net::JitterBufferStats& jitter = stream.jitter;
    const uint64_t slots = jitter.played + jitter.discarded + jitter.concealed;
    std::snprintf(line, sizeof line,
                  "  stream %u: played %llu, concealed %llu (%.1f%%; %llu came late), duplicates %llu, "
                  "jitter %.1f ms, buffer target %d frames, latency p50 %.1f / p99 %.1f ms%s\n",
                  stream.stream_id, static_cast<unsigned long long>(jitter.played),
                  static_cast<unsigned long long>(jitter.concealed),
                  slots ? 100.0 * jitter.concealed / slots : 0.0,
                  static_cast<unsigned long long>(jitter.late),
                  static_cast<unsigned long long>(jitter.duplicates), jitter.jitter_ms,
                  jitter.target_delay_frames, stream.latency_p50_ms, stream.latency_p99_ms,
                  stream.ended ? "" : " (did not end)");
    out << line;
  }
  if (report.unauthenticated + report.replayed > 0) {
    std::snprintf(line, sizeof line, "  dropped from the server: %llu not authentic, %llu replayed\n",
                  static_cast<unsigned long long>(report.unauthenticated),
                  static_cast<unsigned long long>(report.replayed));
    out << line;
  }
  if (!report.goodbye.empty() && report.goodbye != "goodbye") {
    out << "  the server ended the session: " << report.goodbye << "\n";
  }
}

// The secret from --token, else --token-file (one trailing newline dropped),
// else $ENCODEC_TOKEN; "" when none. Throws ClientError naming the source.
std::string read_token(const std::string& token, const std::string& token_file) {
  if (!token.empty()) return token;
  if (!token_file.empty()) {
    std::ifstream file(token_file, std::ios::binary);
    std::ostringstream text;
    text << file.rdbuf();
    if (!file) throw ClientError("--token-file: cannot read '" + token_file + "'");
    std::string secret = text.str();
    if (!secret.empty() && secret.back() == '\n') secret.pop_back();
    if (!secret.empty() && secret.back() == '\r') secret.pop_back();
    if (secret.empty()) throw ClientError("--token-file: '" + token_file + "' is empty");
    return secret;
  }
  const char* from_environment = std::getenv("ENCODEC_TOKEN");
  return from_environment != nullptr ? from_environment : "";
}

}  // namespace

int run_client_cli(int argc, const char* const* argv) {
  CLI::App app{
      "encodec-client: live calls and broadcasts through encodecd with the EnCodec codec. "
      "Audio is encoded and decoded here, frame by frame (13.3 ms); the server forwards the "
      "codes. Without an audio device, use --input FILE --output FILE. A server with access "
      "control needs its token or the room's key: --token, --token-file, or the environment "
      "variable ENCODEC_TOKEN (used when neither flag is given).",
      "encodec-client"};
  ClientOptions options;
  std::string server, checkpoint, lm_checkpoint, model_dir;
  bool quiet = false;
  int threads = 1;
  app.add_option("--server", server,
                 "encodecd's ADDR:PORT (default 127.0.0.1:7700, with --tcp 127.0.0.1:7701)");
  app.add_flag("--tcp", options.tcp, "Use TCP instead of UDP (no loss, but a lost segment delays what follows)");
  app.add_option("--input", options.input,
                 "What to send: an audio file (any format libsndfile reads; resampled to 24 kHz mono), "
                 "'tone' (440 Hz), 'clicks' (every 0.5 s) or 'mic' (default)");
  app.add_option("--output", options.output,
                 "Where what is heard goes: a WAV file (written when the call ends), 'speaker' "
                 "(default) or 'null'");
  app.add_option("--bandwidth", options.bandwidth_kbps, "Sending bandwidth in kbps: 1.5, 3, 6 (default), 12 or 24");
  app.add_option("--receive-bandwidth", options.receive_bandwidth_kbps,
                 "Ask the server for at most this bandwidth (it drops the top codebooks); default: as sent");
  app.add_flag("--lm", options.lm,
               "Entropy-code the codes with the EnCodec LM (smaller packets; needs the LM, "
               "--lm-checkpoint or the official one in the hub cache). Coded with the "
               "deterministic LM kernels (det1, protocol version 2): the same bytes on every "
               "CPU, so peers on other CPUs decode them");
  app.add_option("--lm-loss-fallback", options.lm_loss_fallback_s,
                 "With --lm: after a receiver lost a packet (its LM cannot decode what follows), send "
                 "raw codes for this many seconds, doubled while losses repeat (default 1; 0: LM codes "
                 "always, a loss then silences receivers until the next LM context)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--opus", options.receive_opus,
               "Receive Opus, transcoded by the server (comparisons, or peers without the model); what "
               "this client sends stays EnCodec unless --send-opus");
  app.add_flag("--send-opus", options.send_opus,
               "Send Opus (libopus, --opus-frame-ms frames at --opus-bitrate) instead of EnCodec codes: the "
               "server encodes it for the room. Implies --opus; the client then loads no model (no "
               "--checkpoint needed): a peer that cannot run EnCodec");
  app.add_option("--opus-frame-ms", options.opus_frame_ms,
                 "Opus frame length with --opus and --send-opus: 10 or 20 (default)")
      ->check(CLI::IsMember({10, 20}));
  app.add_option("--opus-bitrate", options.opus_bitrate_bps,
                 "Opus bitrate in bit/s with --opus and --send-opus (default: --bandwidth's, 6000)")
      ->check(CLI::Range(500, 512000));
  app.add_option("--duration", options.duration_s,
                 "Stop after this many seconds of audio (default: the input's end; listen: the sender's end)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--as-fast-as-possible", options.as_fast_as_possible,
               "Files: send as fast as encoding goes instead of in real time, and play every frame "
               "in order as it comes (tests)");
  app.add_option("--checkpoint", checkpoint,
                 "The codec from this checkpoint file; default: the official encodec_24khz "
                 "checkpoint from the hub cache (the server must run the same weights)");
  app.add_option("--lm-checkpoint", lm_checkpoint, "The LM from this checkpoint file (with --lm)");
  app.add_option("--model-dir", model_dir, "Look for the official checkpoints here instead of the hub cache");
  app.add_option("--wait-for", options.wait_for_members,
                 "Start sending only once the room has this many members, this client included")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--name", options.name, "This client's name in the room (default encodec-client)");
  std::string token, token_file;
  CLI::Option* token_option = app.add_option(
      "--token", token,
      "The server's shared token or this room's key (16 bytes or more; its config's auth): every "
      "message is signed with it and the server's are checked. Visible to other users in the "
      "process list: prefer --token-file or ENCODEC_TOKEN");
  app.add_option("--token-file", token_file,
                 "Read the token from this file (one trailing newline dropped)")
      ->excludes(token_option);
  app.add_option("--threads", threads, "Compute threads (default 1)")->check(CLI::Range(1, 64));
  app.add_flag("-q,--quiet", quiet, "No live statistics line and no summary");

  std::string room;
  CLI::App* call = app.add_subcommand("call", "Join ROOM: send the input and hear every other member");
  CLI::App* send = app.add_subcommand("send", "Broadcast the input into ROOM (its only sender)");
  CLI::App* listen = app.add_subcommand("listen", "Hear ROOM's broadcast (or call) without sending");
  for (CLI::App* command : {call, send, listen}) {
    command->add_option("ROOM", room, "The room's name (1-64 of A-Z a-z 0-9 _ . -)")->required();
  }
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  options.mode = call->parsed() ? Mode::kCall : send->parsed() ? Mode::kSend : Mode::kListen;
  options.room = room;
  options.server = !server.empty() ? server : options.tcp ? "127.0.0.1:7701" : "127.0.0.1:7700";
  options.live_stats = !quiet && isatty(STDERR_FILENO);
  options.log = &std::cerr;

  try {
    options.token = read_token(token, token_file);
    at::set_num_threads(threads);
    if (options.send_opus) options.receive_opus = true;
    std::optional<LiveModel> live;
    std::shared_ptr<const LmModel> lm;
    if (needs_model(options)) {
      LiveModelOptions model_options;
      model_options.checkpoint = checkpoint;
      model_options.model_dir = model_dir;
      live = load_live_model(model_options);
      if (options.lm || !lm_checkpoint.empty()) lm = load_live_lm(lm_checkpoint, model_dir, live->model.config());
    } else if (options.lm) {
      throw ClientError("--lm codes EnCodec codes: it does not go with --send-opus");
    }
    auto client = live ? std::make_unique<Client>(*live, lm, options) : std::make_unique<Client>(options);
    g_running_client = client.get();
    std::signal(SIGINT, stop_on_signal);
    std::signal(SIGTERM, stop_on_signal);
    const ClientReport report = client->run();
    g_running_client = nullptr;
    if (options.live_stats) std::cerr << "\n";
    if (!quiet) print_summary(report, options, std::cerr);
    return 0;
  } catch (const std::exception& error) {
    g_running_client = nullptr;
    std::cerr << "encodec-client: error: " << error.what() << "\n";
    return 1;
  }
}

}  // namespace encodec::client
