// encodecd's HTTP side (Boost.Beast, HTTP/1.1, keep-alive): GET /healthz and
// GET /metrics (Prometheus text format, written by prometheus-cpp from the
// media server's counters at each scrape). Errors are JSON naming what was
// wrong. Every request must arrive whole within request_timeout_ms and within
// max_request_bytes, so a slow or oversized client costs one connection for a
// bounded time.
//
// Usage:
//   encodec::server::HttpEndpoint http(server, {"127.0.0.1:7780"});  // binds
//   http.start();
//   ... curl http://127.0.0.1:7780/metrics ...
//   http.stop();
//
// Thread safety: start, stop and port from any thread; one I/O thread serves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace encodec::server {

class Server;

// Where POST /v1/encode and /v1/decode find their models: a checkpoint file,
// or "" for the official one when it is in model_dir (default: the torch hub
// cache; the server never downloads). Loaded on first use.
struct TranscodeModelSources {
  std::string checkpoint_24khz;
  std::string checkpoint_48khz;
  std::string lm_checkpoint_24khz;
  std::string lm_checkpoint_48khz;
  std::string model_dir;
  bool random_weights = false;  // official-size codecs with random weights (benchmarks)
  // The demo model (demo_model.h), for a server without the official one:
  // when set, 24 kHz encodes use it (their files name encodec_demo_24khz), and
  // files naming it decode with it. Files naming encodec_24khz still need the
  // official model.
  std::string demo_checkpoint_24khz;
};

struct HttpOptions {
  std::string listen = "127.0.0.1:7780";  // ADDR:PORT (port 0: any free port)
  // A request's header must arrive within this, and an answer leave within it
  // (plus 1 s per MB of body either way).
  int request_timeout_ms = 10000;
  size_t max_request_bytes = 16 * 1024;   // header, and the body of other requests than uploads
  size_t max_upload_bytes = 64 << 20;     // the body of POST /v1/encode and /v1/decode
  double max_audio_seconds = 3600;        // longer inputs are refused (413)
  // Inputs with more audio than this get 202 and a job id (GET /v1/jobs/ID);
  // shorter ones are answered when done.
  double sync_limit_seconds = 30;
  int transcode_workers = 1;              // jobs run at once
  int transcode_threads = 1;              // LibTorch threads of each
  size_t queue_capacity = 8;              // jobs waiting beyond the running ones; then 503
  int job_ttl_seconds = 600;              // a finished job's result is kept this long
  int max_connections = 256;              // open at once; more are closed at once
  // Per client address: requests per second (token bucket of `burst`); over it, 429.
  double requests_per_second = 20;
  double request_burst = 40;
  // Required as "Authorization: Bearer TOKEN" on everything but /healthz; "" = open.
  std::string auth_token;
  TranscodeModelSources models;
  std::string work_dir;                   // scratch files of decode jobs (default: $TMPDIR or /tmp)
};

class HttpEndpoint {
 public:
  // Throws ConfigError (server_config.h) for a listening address that does not
  // parse, std::runtime_error naming the address when it cannot be bound.
  HttpEndpoint(Server& server, HttpOptions options);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  void start();
  void stop();
  uint16_t port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace encodec::server
