#include "encodec/server_cli.h"

#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "encodec/demo_model.h"
#include "encodec/http_endpoint.h"
#include "encodec/live_model.h"
#include "encodec/server.h"
#include "encodec/server_config.h"

namespace encodec::server {

namespace {

ServerOptions to_options(const config::ServerConfig& config) {
  ServerOptions options;
  options.udp_listen = config.udp_listen();
  options.tcp_listen = config.tcp_listen();
  options.io_threads = static_cast<int>(config.io_threads());
  options.compute_threads = static_cast<int>(config.compute_threads());
  options.server_name = config.server_name();
  options.keep_alive_interval_ms = static_cast<int>(config.keep_alive_interval_ms());
  options.session_timeout_ms = static_cast<int>(config.session_timeout_ms());
  options.max_sessions = static_cast<int>(config.max_sessions());
  options.max_rooms = static_cast<int>(config.max_rooms());
  options.max_members_per_room = static_cast<int>(config.max_members_per_room());
  options.rate_limit_packets_per_second = static_cast<int>(config.rate_limit().packets_per_second());
  options.rate_limit_burst = static_cast<int>(config.rate_limit().burst());
  for (const auto& room : config.rooms()) {
    RoomSpec spec;
    spec.name = room.name();
    spec.kind = room.kind() == config::ROOM_KIND_BROADCAST ? RoomSpec::Kind::kBroadcast
                                                           : RoomSpec::Kind::kCall;
    spec.max_bandwidth_kbps = room.max_bandwidth_kbps();
    options.rooms.push_back(spec);
  }
  options.auth_token = config.auth().token();
  for (const auto& room_key : config.auth().room_keys()) {
    options.room_keys.push_back({room_key.room(), room_key.key()});
  }
  return options;
}

HttpOptions to_http_options(const config::ServerConfig& config, const std::string& model_dir,
                            bool random_weights) {
  const config::ServerConfig::Http& http = config.http();
  HttpOptions options;
  options.listen = config.http_listen();
  options.request_timeout_ms = static_cast<int>(http.request_timeout_ms());
  options.max_upload_bytes = static_cast<size_t>(http.max_upload_mib()) << 20;
  options.max_audio_seconds = http.max_audio_seconds();
  options.sync_limit_seconds = http.sync_limit_seconds();
  options.transcode_workers = static_cast<int>(http.workers());
  options.transcode_threads = static_cast<int>(http.threads());
  options.queue_capacity = http.queue_capacity();
  options.job_ttl_seconds = static_cast<int>(http.job_ttl_seconds());
  options.max_connections = static_cast<int>(http.max_connections());
  options.requests_per_second = http.requests_per_second();
  options.request_burst = http.request_burst();
  // The shared token guards the HTTP side too (room keys grant rooms, not transcoding).
  options.auth_token = config.auth().token();
  options.models.checkpoint_24khz = config.checkpoint();
  options.models.lm_checkpoint_24khz = config.lm_checkpoint();
  options.models.checkpoint_48khz = http.checkpoint_48khz();
  options.models.lm_checkpoint_48khz = http.lm_checkpoint_48khz();
  options.models.model_dir = model_dir;
  options.models.random_weights = random_weights;
  return options;
}

}  // namespace

int run_encodecd(int argc, const char* const* argv) {
  CLI::App app{
      "encodecd: the EnCodec real-time media server. Clients (encodec-client) join rooms over "
      "UDP or TCP and exchange frames of EnCodec codes (13.3 ms each); the server forwards them "
      "without re-encoding, drops codebooks for members that asked for less bandwidth, "
      "transcodes to Opus for members that asked for it, and encodes PCM for ROLE_ENCODE "
      "sessions. Protocol: proto/README.md. Settings: the defaults, then --config, then these "
      "flags. SIGINT or SIGTERM ends every session with a goodbye and exits 0.",
      "encodecd"};
  std::string udp, tcp, http, config_path, checkpoint, model_dir, log_level;
  int threads = 0, io_threads = 0;
  bool random_weights = false;
  app.add_option("--udp", udp, "Listen for UDP on ADDR:PORT (default 127.0.0.1:7700; port 0: any free one)");
  app.add_option("--tcp", tcp, "Listen for TCP on ADDR:PORT (default 127.0.0.1:7701)");
  app.add_option("--http", http,
                 "Serve HTTP on ADDR:PORT: GET /healthz, GET /metrics (Prometheus text format), "
                 "POST /v1/encode (audio in, .ecdc out; ?bandwidth=6&model=24khz|48khz&lm=0|1), "
                 "POST /v1/decode (.ecdc in, WAV out; ?rescale=0|1), GET/DELETE /v1/jobs/ID for long "
                 "inputs (default: no HTTP, or the config's http_listen; limits in its http block)");
  app.add_option("--config", config_path,
                 "Settings from this Protobuf text file (configs/*.textproto; unset fields keep their "
                 "defaults; errors name the line and field)");
  app.add_option("--checkpoint", checkpoint,
                 "The codec from this checkpoint file (any width); default: the official "
                 "encodec_24khz checkpoint when it is in the torch hub cache or --model-dir, else "
                 "(no --model-dir) the demo model shipped with encodec-cpp: a small model trained by "
                 "this project, far below the official quality");
  app.add_option("--model-dir", model_dir, "Look for the official checkpoint here instead of the hub cache");
  app.add_option("--threads", threads, "Compute threads for the model (default 1 or the config's)")
      ->check(CLI::Range(1, 64));
  app.add_option("--io-threads", io_threads, "Network I/O threads (default 2 or the config's)")
      ->check(CLI::Range(1, 64));
  app.add_option("--log-level", log_level, "trace, debug, info (default), warn, error or off");
  app.add_flag("--random-weights", random_weights,
               "Official-size model with random weights (benchmarks; codes are meaningless)")
      ->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }

  try {
    config::ServerConfig config = config_path.empty() ? default_server_config()
                                                      : load_server_config(config_path);
    if (!udp.empty()) config.set_udp_listen(udp);
    if (!tcp.empty()) config.set_tcp_listen(tcp);
    if (!http.empty()) config.set_http_listen(http);
    if (!checkpoint.empty()) config.set_checkpoint(checkpoint);
    if (threads > 0) config.set_compute_threads(static_cast<uint32_t>(threads));
    if (io_threads > 0) config.set_io_threads(static_cast<uint32_t>(io_threads));
    if (!log_level.empty()) config.set_log_level(log_level);
    validate_server_config(config, config_path.empty() ? "command line" : config_path + " and the command line");
    spdlog::set_level(spdlog::level::from_str(config.log_level()));

    LiveModelOptions model_options;
    model_options.checkpoint = config.checkpoint();
    model_options.model_dir = model_dir;
    model_options.random_weights = random_weights;
    LiveModel live = load_live_model(model_options);
    spdlog::info("model {} from {} (sha256 {})", live.model.name(), live.source, live.checksum);

    Server server(live.model, live.checksum, to_options(config));
    server.start();
    spdlog::info("listening on UDP {}:{} and TCP {}:{}",
                 config.udp_listen().substr(0, config.udp_listen().rfind(':')), server.udp_port(),
                 config.tcp_listen().substr(0, config.tcp_listen().rfind(':')), server.tcp_port());
    std::unique_ptr<HttpEndpoint> http_endpoint;
    if (!config.http_listen().empty()) {
      HttpOptions http_options = to_http_options(config, model_dir, random_weights);
      // The HTTP transcoder uses the same demo model as the live streams.
      if (live.demo) http_options.models.demo_checkpoint_24khz = find_demo_checkpoint().value_or("");
      http_endpoint = std::make_unique<HttpEndpoint>(server, std::move(http_options));
      http_endpoint->start();
      spdlog::info("serving HTTP (/healthz, /metrics, /v1/encode, /v1/decode, /v1/jobs) on {}:{}",
                   config.http_listen().substr(0, config.http_listen().rfind(':')), http_endpoint->port());
    }
    server.wait(/*handle_signals=*/true);
    if (http_endpoint) http_endpoint->stop();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "encodecd: error: " << error.what() << "\n";
    return 1;
  }
}

}  // namespace encodec::server
