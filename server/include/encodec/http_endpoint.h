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

struct HttpOptions {
  std::string listen = "127.0.0.1:7780";  // ADDR:PORT (port 0: any free port)
  int request_timeout_ms = 10000;         // to read a request, and to write its answer
  size_t max_request_bytes = 16 * 1024;   // header and body
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
