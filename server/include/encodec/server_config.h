// The configuration of encodecd: the Protobuf text-format file (proto/encodecd_config.proto,
// examples in configs/), its defaults and its validation.
//
// Usage:
//   config::ServerConfig config = path.empty() ? default_server_config()
//                                              : load_server_config(path);  // throws ConfigError
//   Endpoint udp = parse_endpoint(config.udp_listen(), "udp_listen");
//
// Errors read like a compiler's, so that an editor can jump to them:
//   configs/x.textproto:7:3: Message type "encodec.config.ServerConfig" has no field named "io".
//   configs/x.textproto:12:5: rooms[1].max_bandwidth_kbps: 5 is not allowed (expected ...)
//
// Thread safety: pure functions (no shared state).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "encodecd_config.pb.h"

namespace encodec::server {

// An unreadable file, a syntax error, an unknown field or a bad value. The message names the
// file (or other source), the line and column where known, the field and what was expected.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A listening address. `address` is the canonical text of an IPv4 or IPv6 address (no
// brackets); port 0 asks the system for an ephemeral port.
struct Endpoint {
  std::string address;
  uint16_t port = 0;

  // "ADDR:PORT", or "[ADDR]:PORT" for IPv6: the form parse_endpoint reads.
  std::string to_string() const;
};

// Reads "IPV4:PORT" or "[IPV6]:PORT" (port 0 to 65535). Host names are not accepted: a
// listener binds an address, and a name resolving to several would be ambiguous. Throws
// ConfigError naming `what` (the option or field, e.g. "--udp" or "udp_listen") and the text.
Endpoint parse_endpoint(const std::string& text, const std::string& what);

// Every field at its default (see proto/encodecd_config.proto); no rooms.
config::ServerConfig default_server_config();

// Replaces every field left at 0 or "" by its default (proto3 cannot tell those from absent),
// rate_limit's included. For configurations built in code or changed by command-line options.
void fill_server_config_defaults(config::ServerConfig* config);

// Reads and parses `path`, fills the defaults, validates. Throws ConfigError: an unreadable
// file names the path; syntax errors and unknown fields come as "PATH:LINE:COL: message"
// (1-based); bad values as "PATH:LINE:COL: FIELD: ..." with the line of the offending field.
config::ServerConfig load_server_config(const std::string& path);

// Checks every field of a configuration whose defaults are filled in: endpoints parse, threads
// 1 to 64, a known log level, session_timeout_ms > 2 x keep_alive_interval_ms, limits above 0,
// no more rooms than max_rooms, room names valid and unique, kinds set, bandwidths allowed.
// Throws ConfigError "SOURCE: FIELD: ..." naming the field path (e.g.
// "rooms[2].max_bandwidth_kbps") and the value. `source` says where the configuration came
// from (a path, "defaults", "command line").
void validate_server_config(const config::ServerConfig& config, const std::string& source);

}  // namespace encodec::server
