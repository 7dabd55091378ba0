#include "encodec/server_config.h"

#include "encodec/net/auth.h"

#include <fcntl.h>
#include <unistd.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <boost/asio/ip/address.hpp>

#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace encodec::server {
namespace {
namespace pb = google::protobuf;
using config::ServerConfig;
using Location = pb::TextFormat::ParseLocation;
using LocationTree = pb::TextFormat::ParseInfoTree;

constexpr char kDefaultUdpListen[] = "127.0.0.1:7700";
constexpr char kDefaultTcpListen[] = "127.0.0.1:7701";
constexpr uint32_t kDefaultIoThreads = 2;
constexpr uint32_t kDefaultComputeThreads = 1;
constexpr char kDefaultLogLevel[] = "info";
constexpr char kDefaultServerName[] = "encodecd";
constexpr uint32_t kDefaultKeepAliveIntervalMs = 1000;
constexpr uint32_t kDefaultSessionTimeoutMs = 5000;
constexpr uint32_t kDefaultMaxSessions = 256;
constexpr uint32_t kDefaultMaxRooms = 64;
constexpr uint32_t kDefaultMaxMembersPerRoom = 16;
constexpr uint32_t kDefaultPacketsPerSecond = 400;
constexpr uint32_t kDefaultBurstPackets = 400;

constexpr uint32_t kDefaultHttpWorkers = 1;
constexpr uint32_t kDefaultHttpThreads = 1;
constexpr uint32_t kDefaultHttpQueueCapacity = 8;
constexpr uint32_t kDefaultMaxUploadMib = 64;
constexpr uint32_t kDefaultMaxAudioSeconds = 3600;
constexpr uint32_t kDefaultSyncLimitSeconds = 30;
constexpr uint32_t kDefaultJobTtlSeconds = 600;
constexpr uint32_t kDefaultHttpRequestTimeoutMs = 10000;
constexpr uint32_t kDefaultHttpMaxConnections = 256;
constexpr uint32_t kDefaultHttpRequestsPerSecond = 20;
constexpr uint32_t kDefaultHttpRequestBurst = 40;
// An upload is held in memory while its job waits; beyond this it should not be one request.
constexpr uint32_t kMaxUploadMib = 4096;

// More threads than this is a typo rather than a machine's core count.
constexpr uint32_t kMaxThreads = 64;
constexpr size_t kMaxRoomNameChars = 64;
// Welcome.server_name must fit in a datagram next to the rest of the Welcome.
constexpr size_t kMaxServerNameBytes = 64;
// A configuration is a page of text; this stops `--config /dev/zero` from eating the memory.
constexpr size_t kMaxConfigFileBytes = 1 << 20;
constexpr std::array<const char*, 6> kLogLevels = {"trace", "debug", "info", "warn", "error",
                                                   "off"};
// The 24 kHz model's bandwidths (EncodecConfig::target_bandwidths): the server lowers a
// member's bandwidth by dropping codebooks, so a room's limit must be one of them.
constexpr std::array<double, 5> kRoomBandwidthsKbps = {1.5, 3.0, 6.0, 12.0, 24.0};
constexpr char kEndpointForm[] = "expected IPV4:PORT or [IPV6]:PORT, port 0 to 65535";

// The shortest text that reads back as the same double, so that 1.4999999 is not shown as 1.5.
std::string format_double(double value) {
  std::array<char, 32> buffer{};
  const std::to_chars_result result =
      std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return std::string(buffer.data(), result.ptr);
}

bool is_valid_utf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t length = 0;
    uint32_t code_point = 0;
    if (lead < 0x80) {
      length = 1;
      code_point = lead;
    } else if ((lead & 0xe0) == 0xc0) {
      length = 2;
      code_point = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3;
      code_point = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4;
      code_point = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3f);
    }
    // Overlong forms, surrogates and values past Unicode are invalid UTF-8 too.
    static constexpr uint32_t kMinCodePoint[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < kMinCodePoint[length] || code_point > 0x10ffff ||
        (code_point >= 0xd800 && code_point <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

// A string value as the messages show it: quoted, and the bytes that would garble a terminal
// escaped (control characters; bytes past ASCII unless they are UTF-8), since the value may be
// exactly what is wrong.
std::string quoted(const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  const bool utf8 = is_valid_utf8(text);
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte == 0x7f || (byte >= 0x80 && !utf8)) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// "SOURCE:LINE:COL: " from a 0-based location (the tokenizer's), or "SOURCE: " without one.
std::string location_prefix(const std::string& source, int line, int column) {
  if (line < 0) return source + ": ";
  return source + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": ";
}

// Swallows the errors of the second tokenizing pass: the parser has reported them already.
class IgnoringErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int, pb::io::ColumnNumber, const std::string&) override {}
};

struct Token {
  int line = -1;  // 0-based, as the parser reports
  int column = -1;
  std::string text;
};

// Every token of `text`, tokenized as the text-format parser does.
std::vector<Token> tokenize(const std::string& text) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoringErrorCollector ignored;
  pb::io::Tokenizer tokenizer(&input, &ignored);
  tokenizer.set_allow_f_after_float(true);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  tokenizer.set_require_space_after_number(false);
  std::vector<Token> tokens;
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& token = tokenizer.current();
    tokens.push_back({token.line, token.column, token.text});
  }
  return tokens;
}

// Collects the parser's errors with the file's name, as a compiler prints them.
class PathErrorCollector : public pb::io::ErrorCollector {
 public:
  PathErrorCollector(const std::string& path, const std::string& text)
      : path_(path), text_(text) {}

  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    std::string located = message;
    if (line >= 0) {
      relocate(message, &line, &column);
      // "Expected integer, got: two" alone leaves the reader to work out which field.
      const std::string field = field_of_value_at(line, column);
      if (!field.empty() && message.find("\"" + field + "\"") == std::string::npos) {
        located = field + ": " + message;
      }
    }
    errors_.push_back(location_prefix(path_, line, column) + located);
  }

  // One error a line (the parser stops at the first, but be ready for more).
  std::string joined() const {
    std::string text;
    for (const std::string& error : errors_) {
      if (!text.empty()) text += '\n';
      text += error;
    }
    return text;
  }

 private:
  const std::vector<Token>& tokens() {
    if (!tokenized_) {
      tokens_ = tokenize(text_);
      tokenized_ = true;
    }
    return tokens_;
  }

  // The index of the last token that starts before (line, column), or -1.
  int token_before(int line, int column) {
    int index = -1;
    const std::vector<Token>& all = tokens();
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i].line > line || (all[i].line == line && all[i].column >= column)) break;
      index = static_cast<int>(i);
    }
    return index;
  }

  // The parser reports an unknown field name or enum value, or a repeated singular field, once
  // it has read the name: at the token after it, which is often on the next line ("kind: X"
  // then "}"). Such errors move back to the token they name. Only when the token before the
  // reported place is the one quoted in the message, so that a parser reporting the right
  // place already is left alone.
  void relocate(const std::string& message, int* line, int* column) {
    static constexpr const char* kReportedAfterTheToken[] = {
        "has no field named", "Unknown enumeration value", "is specified multiple times"};
    bool after = false;
    for (const char* form : kReportedAfterTheToken) {
      after = after || message.find(form) != std::string::npos;
    }
    if (!after) return;
    const int previous = token_before(*line, *column);
    if (previous < 0) return;
    const Token& token = tokens()[previous];
    if (message.find("\"" + token.text + "\"") == std::string::npos) return;
    *line = token.line;
    *column = token.column;
  }

  // The field whose value starts at (line, column), when the error is at a value ("NAME:"
  // comes just before it); "" otherwise.
  std::string field_of_value_at(int line, int column) {
    const int previous = token_before(line, column);
    if (previous < 1) return "";
    const Token& colon = tokens()[previous];
    const Token& name = tokens()[previous - 1];
    if (colon.text != ":" || name.text.empty()) return "";
    const auto first = static_cast<unsigned char>(name.text.front());
    if (std::isalpha(first) == 0 && first != '_') return "";
    return name.text;
  }

  std::string path_;
  const std::string& text_;
  bool tokenized_ = false;
  std::vector<Token> tokens_;
  std::vector<std::string> errors_;
};

// Parses an endpoint; on failure returns false with `problem` saying what is wrong with `text`.
bool parse_endpoint_text(const std::string& text, Endpoint* endpoint, std::string* problem) {
  if (text.empty()) {
    *problem = "empty";
    return false;
  }
  std::string address_text;
  std::string port_text;
  bool bracketed = false;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos) {
      *problem = "no ']' after the IPv6 address";
      return false;
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      *problem = "no ':PORT' after the ']'";
      return false;
    }
    bracketed = true;
    address_text = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      *problem = "no ':PORT'";
      return false;
    }
    address_text = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    // Without brackets "::1:7700" could split in two places.
    if (address_text.find(':') != std::string::npos) {
      *problem = "an IPv6 address goes in brackets, as in [::1]:7700";
      return false;
    }
  }

  // Five digits at most, so that the value cannot overflow; no sign, no spaces.
  uint32_t port = 0;
  bool port_ok = !port_text.empty() && port_text.size() <= 5;
  for (const char c : port_text) {
    if (c < '0' || c > '9') {
      port_ok = false;
      break;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!port_ok || port > 65535) {
    *problem = "port " + quoted(port_text) + " is not a number from 0 to 65535";
    return false;
  }

  boost::system::error_code error;
  std::string canonical;
  if (bracketed) {
    const boost::asio::ip::address_v6 address =
        boost::asio::ip::make_address_v6(address_text, error);
    if (!error) canonical = address.to_string();
  } else {
    const boost::asio::ip::address_v4 address =
        boost::asio::ip::make_address_v4(address_text, error);
    if (!error) canonical = address.to_string();
  }
  if (error) {
    *problem = quoted(address_text) + " is not an " + (bracketed ? "IPv6" : "IPv4") + " address";
    // A listener binds an address: "localhost" could mean several.
    bool has_letter = false;
    for (const char c : address_text) has_letter = has_letter || std::isalpha(c & 0xff) != 0;
    if (has_letter && !bracketed) *problem += "; host names are not accepted";
    return false;
  }
  endpoint->address = canonical;
  endpoint->port = static_cast<uint16_t>(port);
  return true;
}

// Where the fields of one message of the configuration were written, to put the line of a bad
// value in its error. Without a tree (a configuration not read from a file) it knows nothing.
struct Scope {
  const pb::Descriptor* descriptor = nullptr;
  const LocationTree* tree = nullptr;
  std::string path_prefix;  // "" at the top, "rooms[2]." in a room
  Location self;            // where this message was written (line -1: not written)

  // The field's location, or this message's when the field was not written (a defaulted field
  // or a missing one: the message is the closest place to look).
  Location where(const char* field_name) const {
    if (tree != nullptr) {
      const pb::FieldDescriptor* field = descriptor->FindFieldByName(field_name);
      if (field != nullptr && !field->is_repeated()) {
        const Location location = tree->GetLocation(field, -1);
        if (location.line >= 0) return location;
      }
    }
    return self;
  }

  // The scope of the index-th value of a repeated message field (index -1: a singular one).
  Scope nested(const char* field_name, int index) const {
    Scope scope;
    const pb::FieldDescriptor* field = descriptor->FindFieldByName(field_name);
    scope.descriptor = field->message_type();
    scope.path_prefix = path_prefix + field_name;
    if (index >= 0) scope.path_prefix += "[" + std::to_string(index) + "]";
    scope.path_prefix += ".";
    scope.self = self;
    if (tree != nullptr) {
      const Location location = tree->GetLocation(field, index);
      if (location.line >= 0) scope.self = location;
      scope.tree = tree->GetTreeForNested(field, index);
    }
    return scope;
  }
};

class Validator {
 public:
  Validator(const std::string& source, const LocationTree* tree) : source_(source) {
    top_.descriptor = ServerConfig::descriptor();
    top_.tree = tree;
  }

  void validate(const ServerConfig& config) const {
    validate_endpoint(top_, "udp_listen", config.udp_listen());
    validate_endpoint(top_, "tcp_listen", config.tcp_listen());
    if (!config.http_listen().empty()) validate_endpoint(top_, "http_listen", config.http_listen());
    validate_path(top_, "checkpoint", config.checkpoint());
    validate_path(top_, "lm_checkpoint", config.lm_checkpoint());
    validate_threads(top_, "io_threads", config.io_threads());
    validate_threads(top_, "compute_threads", config.compute_threads());
    validate_log_level(config.log_level());
    validate_server_name(config.server_name());

    validate_positive(top_, "keep_alive_interval_ms", config.keep_alive_interval_ms());
    validate_positive(top_, "session_timeout_ms", config.session_timeout_ms());
    const uint64_t twice_keep_alive_ms = 2 * uint64_t{config.keep_alive_interval_ms()};
    if (config.session_timeout_ms() <= twice_keep_alive_ms) {
      // When the timeout was left at its default, the keep-alive is what was written.
      Location location = top_.where("session_timeout_ms");
      if (location.line < 0) location = top_.where("keep_alive_interval_ms");
      fail_at(location, top_, "session_timeout_ms",
              std::to_string(config.session_timeout_ms()) +
                  " does not exceed 2 x keep_alive_interval_ms = " +
                  std::to_string(twice_keep_alive_ms) +
                  " (one lost keep-alive must not end a session)");
    }

    validate_positive(top_, "max_sessions", config.max_sessions());
    validate_positive(top_, "max_rooms", config.max_rooms());
    validate_positive(top_, "max_members_per_room", config.max_members_per_room());
    const Scope rate_limit = top_.nested("rate_limit", -1);
    validate_positive(rate_limit, "packets_per_second", config.rate_limit().packets_per_second());
    validate_positive(rate_limit, "burst", config.rate_limit().burst());

    if (static_cast<uint64_t>(config.rooms_size()) > config.max_rooms()) {
      // Left at its default, max_rooms has no line: point at the first room that does not fit.
      Location location = top_.where("max_rooms");
      if (location.line < 0) {
        location = top_.nested("rooms", static_cast<int>(config.max_rooms())).self;
      }
      fail_at(location, top_, "max_rooms",
              std::to_string(config.max_rooms()) + " is fewer than the " +
                  std::to_string(config.rooms_size()) + " rooms listed");
    }
    std::map<std::string, int> room_by_name;
    for (int i = 0; i < config.rooms_size(); ++i) {
      validate_room(top_.nested("rooms", i), config.rooms(i), i, &room_by_name);
    }
    validate_http(top_.nested("http", -1), config.http());
    validate_auth(top_.nested("auth", -1), config.auth(), room_by_name);
  }

 private:
  [[noreturn]] void fail_at(const Location& location, const Scope& scope, const char* field_name,
                            const std::string& problem) const {
    throw ConfigError(location_prefix(source_, location.line, location.column) +
                      scope.path_prefix + field_name + ": " + problem);
  }

  [[noreturn]] void fail(const Scope& scope, const char* field_name,
                         const std::string& problem) const {
    fail_at(scope.where(field_name), scope, field_name, problem);
  }

  void validate_endpoint(const Scope& scope, const char* field_name,
                         const std::string& text) const {
    Endpoint endpoint;
    std::string problem;
    if (!parse_endpoint_text(text, &endpoint, &problem)) {
      fail(scope, field_name, quoted(text) + ": " + problem + " (" + kEndpointForm + ")");
    }
  }

  // Paths are used as written (relative ones from the daemon's working directory); a NUL
  // would silently cut the path short at open().
  void validate_path(const Scope& scope, const char* field_name, const std::string& path) const {
    if (path.find('\0') != std::string::npos) {
      fail(scope, field_name, quoted(path) + " contains a NUL byte");
    }
  }

  void validate_threads(const Scope& scope, const char* field_name, uint32_t threads) const {
    if (threads < 1 || threads > kMaxThreads) {
      fail(scope, field_name,
           std::to_string(threads) + " is out of range (expected 1 to " +
               std::to_string(kMaxThreads) + ")");
    }
  }

  void validate_positive(const Scope& scope, const char* field_name, uint32_t value) const {
    if (value == 0) fail(scope, field_name, "0 (expected above 0)");
  }

  void validate_log_level(const std::string& level) const {
    for (const char* known : kLogLevels) {
      if (level == known) return;
    }
    fail(top_, "log_level",
         quoted(level) + " is not a log level (expected trace, debug, info, warn, error or off)");
  }

  // It travels in Welcome (a proto3 string, which a client refuses unless it is UTF-8) and
  // lands in the clients' logs.
  void validate_server_name(const std::string& name) const {
    if (name.empty()) fail(top_, "server_name", "empty (expected a name)");
    if (name.size() > kMaxServerNameBytes) {
      fail(top_, "server_name",
           quoted(name) + " is " + std::to_string(name.size()) + " bytes (expected at most " +
               std::to_string(kMaxServerNameBytes) + ")");
    }
    for (const char c : name) {
      const auto byte = static_cast<unsigned char>(c);
      if (byte < 0x20 || byte == 0x7f) {
        fail(top_, "server_name", quoted(name) + " contains a control character");
      }
    }
    if (!is_valid_utf8(name)) fail(top_, "server_name", quoted(name) + " is not UTF-8");
  }

  void validate_http(const Scope& scope, const config::ServerConfig::Http& http) const {
    validate_path(scope, "checkpoint_48khz", http.checkpoint_48khz());
    validate_path(scope, "lm_checkpoint_48khz", http.lm_checkpoint_48khz());
    validate_threads(scope, "workers", http.workers());
    validate_threads(scope, "threads", http.threads());
    validate_positive(scope, "queue_capacity", http.queue_capacity());
    validate_positive(scope, "max_upload_mib", http.max_upload_mib());
    if (http.max_upload_mib() > kMaxUploadMib) {
      fail(scope, "max_upload_mib",
           std::to_string(http.max_upload_mib()) + " is over " + std::to_string(kMaxUploadMib) +
               " (uploads are held in memory)");
    }
    validate_positive(scope, "max_audio_seconds", http.max_audio_seconds());
    validate_positive(scope, "sync_limit_seconds", http.sync_limit_seconds());
    validate_positive(scope, "job_ttl_seconds", http.job_ttl_seconds());
    validate_positive(scope, "request_timeout_ms", http.request_timeout_ms());
    validate_positive(scope, "max_connections", http.max_connections());
    validate_positive(scope, "requests_per_second", http.requests_per_second());
    validate_positive(scope, "request_burst", http.request_burst());
  }

  void validate_room(const Scope& scope, const config::ServerConfig::Room& room, int index,
                     std::map<std::string, int>* room_by_name) const {
    const std::string& name = room.name();
    if (name.empty()) {
      fail(scope, "name", "empty (expected 1 to 64 of A-Z a-z 0-9 _ . -)");
    }
    if (name.size() > kMaxRoomNameChars) {
      fail(scope, "name",
           quoted(name) + " is " + std::to_string(name.size()) +
               " characters (expected at most " + std::to_string(kMaxRoomNameChars) + ")");
    }
    for (size_t i = 0; i < name.size(); ++i) {
      const char c = name[i];
      const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
      if (!allowed) {
        fail(scope, "name",
             quoted(name) + " has " + quoted(std::string(1, c)) + " at position " +
                 std::to_string(i) + " (expected only A-Z a-z 0-9 _ . -)");
      }
    }
    const auto [previous, inserted] = room_by_name->emplace(name, index);
    if (!inserted) {
      fail(scope, "name",
           quoted(name) + " is already the name of rooms[" + std::to_string(previous->second) +
               "] (expected unique names)");
    }

    // Text format takes a number for an enum, and proto3 keeps numbers it does not know.
    if (room.kind() == config::ROOM_KIND_UNSPECIFIED || !config::RoomKind_IsValid(room.kind())) {
      const std::string value = config::RoomKind_IsValid(room.kind())
                                    ? config::RoomKind_Name(room.kind())
                                    : std::to_string(room.kind()) + " is not a RoomKind";
      fail(scope, "kind", value + " (expected ROOM_KIND_CALL or ROOM_KIND_BROADCAST)");
    }

    const double bandwidth_kbps = room.max_bandwidth_kbps();
    bool allowed = bandwidth_kbps == 0.0;
    for (const double known_kbps : kRoomBandwidthsKbps) {
      allowed = allowed || bandwidth_kbps == known_kbps;
    }
    if (!allowed) {
      fail(scope, "max_bandwidth_kbps",
           format_double(bandwidth_kbps) +
               " is not allowed (expected 0 for no limit, or 1.5, 3, 6, 12 or 24)");
    }
  }

  // Errors never show a secret, only its length or which other field it repeats.
  void validate_secret(const Scope& scope, const char* field_name, const std::string& secret) const {
    if (secret.size() < net::kMinSecretBytes) {
      fail(scope, field_name,
           std::to_string(secret.size()) + " bytes (expected at least " +
               std::to_string(net::kMinSecretBytes) + ": a short secret can be guessed)");
    }
  }

  void validate_auth(const Scope& scope, const ServerConfig::AuthConfig& auth,
                     const std::map<std::string, int>& room_by_name) const {
    if (!auth.token().empty()) validate_secret(scope, "token", auth.token());
    std::map<std::string, std::string> field_by_secret;
    if (!auth.token().empty()) field_by_secret.emplace(auth.token(), "auth.token");
    std::map<std::string, int> key_by_room;
    for (int i = 0; i < auth.room_keys_size(); ++i) {
      const Scope key_scope = scope.nested("room_keys", i);
      const ServerConfig::AuthConfig::RoomKey& room_key = auth.room_keys(i);
      if (room_key.room().empty()) {
        fail(key_scope, "room", "empty (expected one of the rooms listed in rooms)");
      }
      if (room_by_name.count(room_key.room()) == 0) {
        fail(key_scope, "room",
             quoted(room_key.room()) + " is not one of the rooms listed in rooms (a key grants a "
             "room configured here)");
      }
      const auto [previous, inserted] = key_by_room.emplace(room_key.room(), i);
      if (!inserted) {
        fail(key_scope, "room",
             quoted(room_key.room()) + " already has a key in auth.room_keys[" +
                 std::to_string(previous->second) + "] (expected one key per room)");
      }
      validate_secret(key_scope, "key", room_key.key());
      const std::string field = "auth.room_keys[" + std::to_string(i) + "].key";
      const auto [same, new_secret] = field_by_secret.emplace(room_key.key(), field);
      if (!new_secret) {
        fail(key_scope, "key", "the same secret as " + same->second + " (expected every key to differ)");
      }
    }
  }

  std::string source_;
  Scope top_;
};

std::string read_config_file(const std::string& path) {
  const auto cannot_read = [&path](const std::string& why) {
    return ConfigError(path + ": cannot read the configuration file: " + why);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw cannot_read(std::strerror(errno));
  std::string text;
  std::array<char, 16384> buffer{};
  while (true) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      ::close(fd);
      throw cannot_read(std::strerror(error));
    }
    if (got == 0) break;
    text.append(buffer.data(), static_cast<size_t>(got));
    if (text.size() > kMaxConfigFileBytes) {
      ::close(fd);
      throw cannot_read("larger than " + std::to_string(kMaxConfigFileBytes >> 20) +
                        " MiB (not a configuration file?)");
    }
  }
  ::close(fd);
  return text;
}

}  // namespace

std::string Endpoint::to_string() const {
  const std::string port_text = std::to_string(port);
  if (address.find(':') != std::string::npos) return "[" + address + "]:" + port_text;
  return address + ":" + port_text;
}

Endpoint parse_endpoint(const std::string& text, const std::string& what) {
  Endpoint endpoint;
  std::string problem;
  if (!parse_endpoint_text(text, &endpoint, &problem)) {
    throw ConfigError(what + ": " + quoted(text) + ": " + problem + " (" + kEndpointForm + ")");
  }
  return endpoint;
}

void fill_server_config_defaults(ServerConfig* config) {
  if (config->udp_listen().empty()) config->set_udp_listen(kDefaultUdpListen);
  if (config->tcp_listen().empty()) config->set_tcp_listen(kDefaultTcpListen);
  if (config->io_threads() == 0) config->set_io_threads(kDefaultIoThreads);
  if (config->compute_threads() == 0) config->set_compute_threads(kDefaultComputeThreads);
  if (config->log_level().empty()) config->set_log_level(kDefaultLogLevel);
  if (config->server_name().empty()) config->set_server_name(kDefaultServerName);
  if (config->keep_alive_interval_ms() == 0) {
    config->set_keep_alive_interval_ms(kDefaultKeepAliveIntervalMs);
  }
  if (config->session_timeout_ms() == 0) config->set_session_timeout_ms(kDefaultSessionTimeoutMs);
  if (config->max_sessions() == 0) config->set_max_sessions(kDefaultMaxSessions);
  if (config->max_rooms() == 0) config->set_max_rooms(kDefaultMaxRooms);
  if (config->max_members_per_room() == 0) {
    config->set_max_members_per_room(kDefaultMaxMembersPerRoom);
  }
  ServerConfig::RateLimit* rate_limit = config->mutable_rate_limit();
  if (rate_limit->packets_per_second() == 0) {
    rate_limit->set_packets_per_second(kDefaultPacketsPerSecond);
  }
  if (rate_limit->burst() == 0) rate_limit->set_burst(kDefaultBurstPackets);
  ServerConfig::Http* http = config->mutable_http();
  const auto fill = [](uint32_t value, uint32_t fallback) { return value == 0 ? fallback : value; };
  http->set_workers(fill(http->workers(), kDefaultHttpWorkers));
  http->set_threads(fill(http->threads(), kDefaultHttpThreads));
  http->set_queue_capacity(fill(http->queue_capacity(), kDefaultHttpQueueCapacity));
  http->set_max_upload_mib(fill(http->max_upload_mib(), kDefaultMaxUploadMib));
  http->set_max_audio_seconds(fill(http->max_audio_seconds(), kDefaultMaxAudioSeconds));
  http->set_sync_limit_seconds(fill(http->sync_limit_seconds(), kDefaultSyncLimitSeconds));
  http->set_job_ttl_seconds(fill(http->job_ttl_seconds(), kDefaultJobTtlSeconds));
  http->set_request_timeout_ms(fill(http->request_timeout_ms(), kDefaultHttpRequestTimeoutMs));
  http->set_max_connections(fill(http->max_connections(), kDefaultHttpMaxConnections));
  http->set_requests_per_second(fill(http->requests_per_second(), kDefaultHttpRequestsPerSecond));
  http->set_request_burst(fill(http->request_burst(), kDefaultHttpRequestBurst));
  // Rooms have no defaults to fill: max_bandwidth_kbps 0 already means no limit.
}

ServerConfig default_server_config() {
  ServerConfig config;
  fill_server_config_defaults(&config);
  return config;
}

ServerConfig load_server_config(const std::string& path) {
  const std::string text = read_config_file(path);
  ServerConfig config;
  PathErrorCollector errors(path, text);
  LocationTree locations;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&locations);
  if (!parser.ParseFromString(text, &config)) {
    const std::string message = errors.joined();
    throw ConfigError(message.empty() ? path + ": not a valid ServerConfig in text format"
                                      : message);
  }
  fill_server_config_defaults(&config);
  Validator(path, &locations).validate(config);
  return config;
}

void validate_server_config(const ServerConfig& config, const std::string& source) {
  Validator(source, nullptr).validate(config);
}

}  // namespace encodec::server
