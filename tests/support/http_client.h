// Real HTTP requests for the tests of encodecd's HTTP endpoint: libcurl for
// well-formed ones, a raw socket for what curl will not send (garbage, a
// client that stalls), and a reader of the Prometheus text format.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace encodec::testing {

struct HttpReply {
  long status = 0;  // 0: no answer (the connection failed or was closed)
  std::string content_type;
  std::string body;
  std::map<std::string, std::string> headers;  // lowercase field names
};

// `path` with its query; `headers` as "Name: value".
HttpReply http_request(uint16_t port, const std::string& path, const char* method = "GET",
                       const std::string& body = "", const std::vector<std::string>& headers = {});

// Sample values of the Prometheus text format: "name{labels} value" lines.
std::map<std::string, double> parse_metrics(const std::string& text);

// A TCP connection to 127.0.0.1:port that sends `bytes`, then waits `stall_ms`,
// and returns what comes back until the server closes it (or 10 s pass).
std::string raw_exchange(uint16_t port, const std::string& bytes, int stall_ms = 0);

}  // namespace encodec::testing
