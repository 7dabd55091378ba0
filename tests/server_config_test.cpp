// encodecd's configuration file: the shipped configurations load, syntax errors and unknown
// fields come out as "PATH:LINE:COL: message", every bad value is reported with its field path
// and the place it was written, the defaults are filled in, and endpoints parse.
#include "encodec/server_config.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#ifndef ENCODEC_SOURCE_DIR
#error "ENCODEC_SOURCE_DIR must name the project root (the build defines it)"
#endif

namespace encodec::server {
namespace {
namespace fs = std::filesystem;
using config::ServerConfig;

// A directory of its own under the system's temporary directory, removed with its contents,
// so that parallel runs and earlier failures cannot collide.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    while (true) {
      path_ = fs::temp_directory_path() /
              ("encodec_server_config_test-" + std::to_string(::getpid()) + "-" +
               std::to_string(now) + "-" + std::to_string(counter++));
      if (fs::create_directory(path_)) break;
    }
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }

  std::string write(const std::string& name, const std::string& text) const {
    const fs::path file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out << text;
    out.close();
    EXPECT_TRUE(out) << "cannot write " << file;
    return file.string();
  }

 private:
  fs::path path_;
};

// "LINE:COL" (1-based) of the first `needle` in `text`, computed from the text itself so that
// the tests keep working when a case's text changes.
std::string position_of(const std::string& text, const std::string& needle) {
  const size_t offset = text.find(needle);
  EXPECT_NE(offset, std::string::npos) << "no " << needle << " in the test's text";
  if (offset == std::string::npos) return "?:?";
  int line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(offset - line_start + 1);
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// What parse_endpoint throws for `text` ("" and a failure when it accepts it).
std::string endpoint_error(const std::string& text, const std::string& what) {
  try {
    parse_endpoint(text, what);
  } catch (const ConfigError& error) {
    return error.what();
  }
  ADD_FAILURE() << "accepted " << text;
  return "";
}

class ServerConfigTest : public ::testing::Test {
 protected:
  // Loads `text` from a file and returns the ConfigError's message ("" and a failure if none).
  std::string load_error(const std::string& text) {
    path_ = dir_.write("config.textproto", text);
    try {
      load_server_config(path_);
    } catch (const ConfigError& error) {
      return error.what();
    }
    ADD_FAILURE() << "no error for:\n" << text;
    return "";
  }

  // Expects the error of `text` to start "PATH:LINE:COL: " at `needle` and to contain each of
  // `parts` (the field path, the value, what was expected).
  void expect_error_at(const std::string& text, const std::string& needle,
                       const std::vector<std::string>& parts) {
    SCOPED_TRACE(text);
    const std::string message = load_error(text);
    const std::string prefix = path_ + ":" + position_of(text, needle) + ": ";
    EXPECT_TRUE(starts_with(message, prefix)) << message << "\ndoes not start with " << prefix;
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << message << "\nhas no " << part;
    }
  }

  TempDir dir_;
  std::string path_;
};

TEST_F(ServerConfigTest, EveryShippedConfigLoads) {
  const fs::path configs = fs::path(ENCODEC_SOURCE_DIR) / "configs";
  int loaded = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(configs)) {
    if (entry.path().extension() != ".textproto") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW({
      const ServerConfig config = load_server_config(entry.path().string());
      parse_endpoint(config.udp_listen(), "udp_listen");
      parse_endpoint(config.tcp_listen(), "tcp_listen");
    });
    ++loaded;
  }
  EXPECT_GE(loaded, 2) << "the configurations are missing from " << configs;
}

TEST_F(ServerConfigTest, ExampleConfigShowsTheDefaultsAndTwoRooms) {
  ServerConfig config =
      load_server_config((fs::path(ENCODEC_SOURCE_DIR) / "configs/encodecd.textproto").string());
  ASSERT_EQ(config.rooms_size(), 2);
  EXPECT_EQ(config.rooms(0).name(), "lobby");
  EXPECT_EQ(config.rooms(0).kind(), config::ROOM_KIND_CALL);
  EXPECT_EQ(config.rooms(1).name(), "radio");
  EXPECT_EQ(config.rooms(1).kind(), config::ROOM_KIND_BROADCAST);
  // Apart from its rooms, the example is the defaults: it must not drift from the code.
  config.clear_rooms();
  EXPECT_EQ(config.DebugString(), default_server_config().DebugString());
}

TEST_F(ServerConfigTest, LoopbackConfigUsesEphemeralLoopbackPorts) {
  const ServerConfig config = load_server_config(
      (fs::path(ENCODEC_SOURCE_DIR) / "configs/loopback-test.textproto").string());
  for (const std::string& text : {config.udp_listen(), config.tcp_listen()}) {
    const Endpoint endpoint = parse_endpoint(text, "listen");
    EXPECT_EQ(endpoint.address, "127.0.0.1");
    EXPECT_EQ(endpoint.port, 0);
  }
  EXPECT_LT(config.session_timeout_ms(), 5000u);
}

TEST_F(ServerConfigTest, DefaultsAreFilledIn) {
  const ServerConfig config = default_server_config();
  EXPECT_EQ(config.udp_listen(), "127.0.0.1:7700");
  EXPECT_EQ(config.tcp_listen(), "127.0.0.1:7701");
  EXPECT_EQ(config.checkpoint(), "");
  EXPECT_EQ(config.lm_checkpoint(), "");
  EXPECT_EQ(config.io_threads(), 2u);
  EXPECT_EQ(config.compute_threads(), 1u);
  EXPECT_EQ(config.log_level(), "info");
  EXPECT_EQ(config.server_name(), "encodecd");
  EXPECT_EQ(config.keep_alive_interval_ms(), 1000u);
  EXPECT_EQ(config.session_timeout_ms(), 5000u);
  EXPECT_EQ(config.max_sessions(), 256u);
  EXPECT_EQ(config.max_rooms(), 64u);
  EXPECT_EQ(config.max_members_per_room(), 16u);
  EXPECT_EQ(config.rate_limit().packets_per_second(), 400u);
  EXPECT_EQ(config.rate_limit().burst(), 400u);
  EXPECT_EQ(config.rooms_size(), 0);
  EXPECT_EQ(config.http_listen(), "");
  EXPECT_EQ(config.http().workers(), 1u);
  EXPECT_EQ(config.http().threads(), 1u);
  EXPECT_EQ(config.http().queue_capacity(), 8u);
  EXPECT_EQ(config.http().max_upload_mib(), 64u);
  EXPECT_EQ(config.http().max_audio_seconds(), 3600u);
  EXPECT_EQ(config.http().sync_limit_seconds(), 30u);
  EXPECT_EQ(config.http().job_ttl_seconds(), 600u);
  EXPECT_EQ(config.http().request_timeout_ms(), 10000u);
  EXPECT_EQ(config.http().max_connections(), 256u);
  EXPECT_EQ(config.http().requests_per_second(), 20u);
  EXPECT_EQ(config.http().request_burst(), 40u);
  EXPECT_NO_THROW(validate_server_config(config, "defaults"));

  // An empty file is the defaults.
  EXPECT_EQ(load_server_config(dir_.write("empty.textproto", "")).DebugString(),
            config.DebugString());
  EXPECT_EQ(load_server_config(dir_.write("comment.textproto", "# nothing\n")).DebugString(),
            config.DebugString());
}

TEST_F(ServerConfigTest, UnsetAndZeroFieldsTakeDefaultsNextToSetOnes) {
  const ServerConfig config = load_server_config(dir_.write("partial.textproto",
                                                            "io_threads: 3\n"
                                                            "max_sessions: 0\n"
                                                            "log_level: \"\"\n"
                                                            "rate_limit { burst: 50 }\n"
                                                            "rooms { name: \"a\" kind: "
                                                            "ROOM_KIND_CALL }\n"));
  EXPECT_EQ(config.io_threads(), 3u);
  EXPECT_EQ(config.max_sessions(), 256u);
  EXPECT_EQ(config.log_level(), "info");
  EXPECT_EQ(config.rate_limit().burst(), 50u);
  EXPECT_EQ(config.rate_limit().packets_per_second(), 400u);
  EXPECT_EQ(config.compute_threads(), 1u);
  ASSERT_EQ(config.rooms_size(), 1);
  EXPECT_EQ(config.rooms(0).max_bandwidth_kbps(), 0.0);

  // Filling twice changes nothing, and set fields are kept.
  ServerConfig again = config;
  fill_server_config_defaults(&again);
  EXPECT_EQ(again.DebugString(), config.DebugString());
}

TEST_F(ServerConfigTest, SyntaxErrorsNameTheLineAndColumn) {
  const std::string missing_colon =
      "# a comment\n"
      "udp_listen: \"127.0.0.1:7700\"\n"
      "\n"
      "io_threads 2\n";
  expect_error_at(missing_colon, "2\n", {"Expected \":\""});

  const std::string not_a_number =
      "io_threads: 2\n"
      "rooms {\n"
      "  name: \"a\"\n"
      "  kind: ROOM_KIND_CALL\n"
      "  max_bandwidth_kbps: fast\n"
      "}\n";
  expect_error_at(not_a_number, "fast", {"fast"});

  // Errors at a value name the field it belongs to.
  const std::string negative = "log_level: \"info\"\nio_threads: -1\n";
  expect_error_at(negative, "-1", {"io_threads: Expected integer"});
  const std::string too_large = "max_sessions: 99999999999\n";
  expect_error_at(too_large, "9", {"max_sessions: Integer out of range (99999999999)"});
  const std::string not_a_string = "server_name: 5\n";
  expect_error_at(not_a_string, "5", {"server_name: Expected string"});

  // A block left open is reported where the file ends, after its last newline.
  const std::string unclosed = "rooms {\n  name: \"a\"\n";
  const std::string message = load_error(unclosed);
  EXPECT_TRUE(starts_with(message, path_ + ":3:1: ")) << message;

  const std::string twice = "io_threads: 2\ncompute_threads: 1\nio_threads: 3\n";
  expect_error_at(twice, "io_threads: 3", {"io_threads"});
}

TEST_F(ServerConfigTest, UnknownFieldsAndEnumValuesAreNamed) {
  const std::string top = "log_level: \"info\"\nio_thread: 2\n";
  expect_error_at(top, "io_thread: 2", {"\"io_thread\"", "ServerConfig"});

  const std::string nested =
      "rooms {\n"
      "  name: \"a\"\n"
      "  kind: ROOM_KIND_CALL\n"
      "}\n"
      "rooms {\n"
      "  nmae: \"b\"\n"
      "}\n";
  expect_error_at(nested, "nmae", {"\"nmae\"", "Room"});

  const std::string rate = "rate_limit {\n  bursts: 10\n}\n";
  expect_error_at(rate, "bursts", {"\"bursts\"", "RateLimit"});

  // The parser notices these after reading the next token, here on the next line: the error
  // must still point at the name.
  const std::string kind = "rooms {\n  name: \"a\"\n  kind: ROOM_KIND_PARTY\n}\n";
  expect_error_at(kind, "ROOM_KIND_PARTY", {"ROOM_KIND_PARTY", "\"kind\""});
  const std::string block = "max_rooms: 4\nroom\n{\n  name: \"a\"\n}\n";
  expect_error_at(block, "room\n", {"\"room\""});
  const std::string after_comment = "log_level: \"info\"\nlog_levle  # a typo\n  : \"x\"\n";
  expect_error_at(after_comment, "log_levle", {"\"log_levle\""});
}

struct BadValue {
  const char* name;
  std::string text;
  std::string needle;              // where the error must point
  std::vector<std::string> parts;  // what it must say
};

TEST_F(ServerConfigTest, BadValuesNameTheFieldPathValueAndLine) {
  std::string many_rooms;
  for (int i = 0; i < 65; ++i) {
    many_rooms += "rooms { name: \"r" + std::to_string(i) + "\" kind: ROOM_KIND_CALL }\n";
  }
  const std::vector<BadValue> cases = {
      {"host name", "io_threads: 1\nudp_listen: \"localhost:7700\"\n", "udp_listen",
       {"udp_listen:", "\"localhost:7700\"", "IPv4"}},
      {"port too large", "tcp_listen: \"127.0.0.1:70000\"\n", "tcp_listen",
       {"tcp_listen:", "70000", "0 to 65535"}},
      {"bare IPv6", "tcp_listen: \"::1:7701\"\n", "tcp_listen", {"tcp_listen:", "brackets"}},
      {"NUL in path", "checkpoint: \"model\\000.th\"\n", "checkpoint", {"checkpoint:", "NUL"}},
      {"NUL in LM path", "\nlm_checkpoint: \"lm\\000.th\"\n", "lm_checkpoint",
       {"lm_checkpoint:", "NUL"}},
      {"io threads", "io_threads: 65\n", "io_threads", {"io_threads: 65", "1 to 64"}},
      {"compute threads", "io_threads: 4\ncompute_threads: 1000\n", "compute_threads",
       {"compute_threads: 1000", "1 to 64"}},
      {"log level", "log_level: \"verbose\"\n", "log_level",
       {"log_level: \"verbose\"", "trace, debug, info, warn, error or off"}},
      {"log level case", "log_level: \"INFO\"\n", "log_level", {"log_level: \"INFO\""}},
      {"server name length", "server_name: \"" + std::string(65, 'n') + "\"\n", "server_name",
       {"server_name:", "65 bytes", "at most 64"}},
      {"server name control", "server_name: \"two\\nlines\"\n", "server_name",
       {"server_name: \"two\\x0alines\"", "control"}},
      {"server name UTF-8", "server_name: \"caf\\351\"\n", "server_name",
       {"server_name: \"caf\\xe9\" is not UTF-8"}},
      {"timeout not over twice keep-alive",
       "keep_alive_interval_ms: 1000\nsession_timeout_ms: 2000\n", "session_timeout_ms",
       {"session_timeout_ms: 2000 does not exceed 2 x keep_alive_interval_ms = 2000"}},
      // The timeout left at its default: the error points at the keep-alive that was written.
      {"default timeout under a long keep-alive",
       "max_sessions: 4\nkeep_alive_interval_ms: 3000\n", "keep_alive_interval_ms",
       {"session_timeout_ms: 5000 does not exceed 2 x keep_alive_interval_ms = 6000"}},
      {"more rooms than max_rooms",
       "max_rooms: 1\n"
       "rooms { name: \"a\" kind: ROOM_KIND_CALL }\n"
       "rooms { name: \"b\" kind: ROOM_KIND_CALL }\n",
       "max_rooms", {"max_rooms: 1", "2 rooms"}},
      {"more rooms than the default max_rooms", many_rooms, "rooms { name: \"r64\"",
       {"max_rooms: 64", "65 rooms"}},
      {"room without a name", "rooms {\n  kind: ROOM_KIND_CALL\n}\n", "rooms {",
       {"rooms[0].name:", "empty"}},
      {"room name with a space",
       "rooms { name: \"ok\" kind: ROOM_KIND_CALL }\n"
       "rooms {\n  kind: ROOM_KIND_CALL\n  name: \"bad name\"\n}\n",
       "name: \"bad name\"", {"rooms[1].name: \"bad name\"", "\" \"", "position 3"}},
      {"room name with a slash", "rooms { name: \"a/b\" kind: ROOM_KIND_CALL }\n", "name:",
       {"rooms[0].name: \"a/b\"", "\"/\""}},
      {"room name too long",
       "rooms { name: \"" + std::string(65, 'r') + "\" kind: ROOM_KIND_CALL }\n", "name:",
       {"rooms[0].name:", "65 characters", "at most 64"}},
      {"duplicate room name",
       "rooms { name: \"lobby\" kind: ROOM_KIND_CALL }\n"
       "rooms { name: \"radio\" kind: ROOM_KIND_BROADCAST }\n"
       "rooms {\n  name: \"lobby\"\n  kind: ROOM_KIND_BROADCAST\n}\n",
       "name: \"lobby\"\n", {"rooms[2].name: \"lobby\"", "rooms[0]"}},
      {"room without a kind", "rooms {\n  name: \"a\"\n}\n", "rooms {",
       {"rooms[0].kind: ROOM_KIND_UNSPECIFIED", "ROOM_KIND_CALL or ROOM_KIND_BROADCAST"}},
      {"room of kind unspecified", "rooms {\n  name: \"a\"\n  kind: ROOM_KIND_UNSPECIFIED\n}\n",
       "kind:", {"rooms[0].kind: ROOM_KIND_UNSPECIFIED"}},
      {"room of an unknown kind number", "rooms {\n  name: \"a\"\n  kind: 7\n}\n", "kind:",
       {"rooms[0].kind: 7 is not a RoomKind"}},
      {"bandwidth not a model's",
       "rooms { name: \"a\" kind: ROOM_KIND_CALL max_bandwidth_kbps: 6 }\n"
       "rooms {\n  name: \"b\"\n  kind: ROOM_KIND_CALL\n  max_bandwidth_kbps: 5\n}\n",
       "max_bandwidth_kbps: 5", {"rooms[1].max_bandwidth_kbps: 5 is not allowed", "1.5, 3, 6"}},
      {"bandwidth nearly 1.5",
       "rooms { name: \"a\" kind: ROOM_KIND_CALL\n  max_bandwidth_kbps: 1.4999 }\n",
       "max_bandwidth_kbps", {"rooms[0].max_bandwidth_kbps: 1.4999 "}},
      {"negative bandwidth",
       "rooms { name: \"a\" kind: ROOM_KIND_CALL\n  max_bandwidth_kbps: -6 }\n",
       "max_bandwidth_kbps", {"rooms[0].max_bandwidth_kbps: -6 "}},
      {"bandwidth not a number",
       "rooms { name: \"a\" kind: ROOM_KIND_CALL\n  max_bandwidth_kbps: nan }\n",
       "max_bandwidth_kbps", {"rooms[0].max_bandwidth_kbps: nan "}},
      {"transcoding workers", "http {\n  queue_capacity: 2\n  workers: 65\n}\n", "workers",
       {"http.workers: 65 is out of range", "1 to 64"}},
      {"transcoding threads", "http { threads: 100 }\n", "threads", {"http.threads: 100"}},
      {"uploads over the limit", "http {\n  max_upload_mib: 5000\n}\n", "max_upload_mib",
       {"http.max_upload_mib: 5000 is over 4096"}},
      {"NUL in the 48 kHz path", "http { checkpoint_48khz: \"a\\000b\" }\n", "checkpoint_48khz",
       {"http.checkpoint_48khz:", "NUL"}},
  };
  for (const BadValue& bad : cases) {
    SCOPED_TRACE(bad.name);
    expect_error_at(bad.text, bad.needle, bad.parts);
  }
}

TEST_F(ServerConfigTest, ValidateNamesTheSourceAndFieldOfConfigsBuiltInCode) {
  // Zeros cannot come from a file (they mean "default" there) but can from code that skipped
  // fill_server_config_defaults.
  struct ZeroField {
    const char* field;
    void (*clear)(ServerConfig*);
  };
  const std::vector<ZeroField> cases = {
      {"io_threads", [](ServerConfig* c) { c->set_io_threads(0); }},
      {"compute_threads", [](ServerConfig* c) { c->set_compute_threads(0); }},
      {"keep_alive_interval_ms", [](ServerConfig* c) { c->set_keep_alive_interval_ms(0); }},
      {"session_timeout_ms", [](ServerConfig* c) { c->set_session_timeout_ms(0); }},
      {"max_sessions", [](ServerConfig* c) { c->set_max_sessions(0); }},
      {"max_rooms", [](ServerConfig* c) { c->set_max_rooms(0); }},
      {"max_members_per_room", [](ServerConfig* c) { c->set_max_members_per_room(0); }},
      {"rate_limit.packets_per_second",
       [](ServerConfig* c) { c->mutable_rate_limit()->set_packets_per_second(0); }},
      {"rate_limit.burst", [](ServerConfig* c) { c->mutable_rate_limit()->set_burst(0); }},
      {"udp_listen", [](ServerConfig* c) { c->set_udp_listen(""); }},
      {"tcp_listen", [](ServerConfig* c) { c->set_tcp_listen(""); }},
      {"log_level", [](ServerConfig* c) { c->set_log_level(""); }},
      {"server_name", [](ServerConfig* c) { c->set_server_name(""); }},
  };
  for (const ZeroField& zero : cases) {
    SCOPED_TRACE(zero.field);
    ServerConfig config = default_server_config();
    zero.clear(&config);
    try {
      validate_server_config(config, "command line");
      ADD_FAILURE() << "no error";
    } catch (const ConfigError& error) {
      const std::string message = error.what();
      EXPECT_TRUE(starts_with(message, std::string("command line: ") + zero.field + ": "))
          << message;
    }
  }

  ServerConfig config = default_server_config();
  config::ServerConfig::Room* room = config.add_rooms();
  room->set_name("a");
  room->set_kind(config::ROOM_KIND_CALL);
  room->set_max_bandwidth_kbps(12);
  EXPECT_NO_THROW(validate_server_config(config, "code"));
  room->set_max_bandwidth_kbps(13);
  EXPECT_THROW(validate_server_config(config, "code"), ConfigError);
}

TEST_F(ServerConfigTest, GoodConfigWithEveryFieldLoads) {
  const ServerConfig config = load_server_config(dir_.write("good.textproto",
                                                            "udp_listen: \"[::]:7700\"\n"
                                                            "tcp_listen: \"0.0.0.0:7701\"\n"
                                                            "checkpoint: \"models/e.th\"\n"
                                                            "lm_checkpoint: \"models/lm.th\"\n"
                                                            "io_threads: 64\n"
                                                            "compute_threads: 8\n"
                                                            "log_level: \"off\"\n"
                                                            "server_name: \"caf\xc3\xa9\"\n"
                                                            "keep_alive_interval_ms: 10\n"
                                                            "session_timeout_ms: 21\n"
                                                            "max_sessions: 1\n"
                                                            "max_rooms: 2\n"
                                                            "max_members_per_room: 1\n"
                                                            "rate_limit { packets_per_second: 1 "
                                                            "burst: 1 }\n"
                                                            "rooms { name: \"A-z_0.9\" kind: "
                                                            "ROOM_KIND_BROADCAST "
                                                            "max_bandwidth_kbps: 1.5 }\n"
                                                            "rooms [{ name: \"b\" kind: 1 "
                                                            "max_bandwidth_kbps: 24 }]\n"
                                                            "http_listen: \"127.0.0.1:8080\"\n"
                                                            "http { checkpoint_48khz: \"m/48.th\" "
                                                            "lm_checkpoint_48khz: \"m/lm48.th\" workers: 2 "
                                                            "threads: 3 queue_capacity: 4 max_upload_mib: 4096 "
                                                            "max_audio_seconds: 60 sync_limit_seconds: 5 "
                                                            "job_ttl_seconds: 7 request_timeout_ms: 8 "
                                                            "max_connections: 9 requests_per_second: 10 "
                                                            "request_burst: 11 }\n"));
  EXPECT_EQ(config.udp_listen(), "[::]:7700");
  EXPECT_EQ(config.io_threads(), 64u);
  EXPECT_EQ(config.server_name(), "caf\xc3\xa9");
  ASSERT_EQ(config.rooms_size(), 2);
  EXPECT_EQ(config.rooms(1).kind(), config::ROOM_KIND_CALL);
  EXPECT_EQ(config.rooms(0).max_bandwidth_kbps(), 1.5);
  EXPECT_EQ(config.http().checkpoint_48khz(), "m/48.th");
  EXPECT_EQ(config.http().workers(), 2u);
  EXPECT_EQ(config.http().max_upload_mib(), 4096u);
  EXPECT_EQ(config.http().request_burst(), 11u);
}

// Access control: secrets of 16 bytes or more, all different, room keys for
// listed rooms, one each. No error shows a secret.
TEST_F(ServerConfigTest, BadAuthValuesNameTheFieldAndNeverTheSecret) {
  const std::string rooms =
      "rooms { name: \"lobby\" kind: ROOM_KIND_CALL }\n"
      "rooms { name: \"radio\" kind: ROOM_KIND_BROADCAST }\n";
  const std::string key = "key-of-sixteen-b";  // 16 bytes: the shortest allowed
  const std::vector<BadValue> cases = {
      {"short token", "auth {\n  token: \"s3cr3t-15-bytes\"\n}\n", "token:",
       {"auth.token: 15 bytes (expected at least 16"}},
      {"room key of an unlisted room",
       rooms + "auth {\n  room_keys {\n    room: \"other\"\n    key: \"" + key + "\"\n  }\n}\n",
       "room: \"other\"",
       {"auth.room_keys[0].room: \"other\" is not one of the rooms listed in rooms"}},
      {"room key without a room", rooms + "auth {\n  room_keys { key: \"" + key + "\" }\n}\n",
       "room_keys {", {"auth.room_keys[0].room: empty"}},
      {"two keys for one room",
       rooms + "auth {\n  room_keys { room: \"lobby\" key: \"" + key + "\" }\n" +
           "  room_keys {\n    key: \"another-key-of-lobby\"\n    room: \"lobby\"\n  }\n}\n",
       "room: \"lobby\"\n",
       {"auth.room_keys[1].room: \"lobby\" already has a key in auth.room_keys[0]"}},
      {"short room key", rooms + "auth {\n  room_keys {\n    room: \"radio\"\n    key: \"tiny-key\"\n  }\n}\n",
       "key: \"tiny", {"auth.room_keys[0].key: 8 bytes (expected at least 16"}},
      {"room key equal to the token",
       rooms + "auth {\n  token: \"" + key + "\"\n  room_keys { room: \"radio\"\n    key: \"" + key +
           "\" }\n}\n",
       "key: \"key", {"auth.room_keys[0].key: the same secret as auth.token"}},
      {"two rooms sharing a key",
       rooms + "auth {\n  room_keys { room: \"radio\" key: \"" + key + "\" }\n" +
           "  room_keys { room: \"lobby\"\n    key: \"" + key + "\" }\n}\n",
       "key: \"" + key + "\" }\n}",
       {"auth.room_keys[1].key: the same secret as auth.room_keys[0].key"}},
  };
  for (const BadValue& bad : cases) {
    SCOPED_TRACE(bad.name);
    expect_error_at(bad.text, bad.needle, bad.parts);
    const std::string message = load_error(bad.text);
    for (const std::string secret : {"s3cr3t-15-bytes", "tiny-key", key.c_str(), "another-key-of-lobby"}) {
      EXPECT_EQ(message.find(secret), std::string::npos) << message << "\nshows the secret " << secret;
    }
  }
}

TEST_F(ServerConfigTest, AuthWithATokenAndRoomKeysLoads) {
  const ServerConfig config = load_server_config(dir_.write(
      "auth.textproto",
      "rooms { name: \"lobby\" kind: ROOM_KIND_CALL }\n"
      "rooms { name: \"radio\" kind: ROOM_KIND_BROADCAST }\n"
      "auth {\n  token: \"the-shared-token-0123\"\n"
      "  room_keys { room: \"radio\" key: \"the-key-of-radio-0123\" }\n}\n"));
  EXPECT_EQ(config.auth().token(), "the-shared-token-0123");
  ASSERT_EQ(config.auth().room_keys_size(), 1);
  EXPECT_EQ(config.auth().room_keys(0).room(), "radio");
  EXPECT_EQ(config.auth().room_keys(0).key(), "the-key-of-radio-0123");
  // Room keys alone (no shared token) are a configuration too; no auth at all is the default.
  EXPECT_NO_THROW(load_server_config(dir_.write(
      "keys.textproto",
      "rooms { name: \"radio\" kind: ROOM_KIND_BROADCAST }\n"
      "auth { room_keys { room: \"radio\" key: \"the-key-of-radio-0123\" } }\n")));
  EXPECT_FALSE(default_server_config().has_auth());
}

TEST(ParseEndpointTest, ReadsIpv4AndBracketedIpv6) {
  Endpoint endpoint = parse_endpoint("127.0.0.1:7700", "--udp");
  EXPECT_EQ(endpoint.address, "127.0.0.1");
  EXPECT_EQ(endpoint.port, 7700);
  EXPECT_EQ(endpoint.to_string(), "127.0.0.1:7700");

  endpoint = parse_endpoint("0.0.0.0:0", "--udp");
  EXPECT_EQ(endpoint.address, "0.0.0.0");
  EXPECT_EQ(endpoint.port, 0);

  endpoint = parse_endpoint("[::1]:65535", "--tcp");
  EXPECT_EQ(endpoint.address, "::1");
  EXPECT_EQ(endpoint.port, 65535);
  EXPECT_EQ(endpoint.to_string(), "[::1]:65535");

  // The address comes back in canonical form, which is what the listener binds and logs.
  endpoint = parse_endpoint("[2001:DB8:0::0001]:80", "--tcp");
  EXPECT_EQ(endpoint.address, "2001:db8::1");
  EXPECT_EQ(endpoint.to_string(), "[2001:db8::1]:80");

  EXPECT_EQ(parse_endpoint("[::]:7701", "x").to_string(), "[::]:7701");
  EXPECT_EQ(parse_endpoint("[::ffff:10.0.0.1]:9", "x").port, 9);
  EXPECT_EQ(parse_endpoint("10.1.2.3:00080", "x").port, 80);
}

TEST(ParseEndpointTest, RejectsWhatIsNotAddrPort) {
  const std::vector<std::string> bad = {
      "",
      "127.0.0.1",
      "127.0.0.1:",
      ":7700",
      "127.0.0.1:65536",
      "127.0.0.1:123456",
      "127.0.0.1:-1",
      "127.0.0.1:+80",
      "127.0.0.1:80 ",
      " 127.0.0.1:80",
      "127.0.0.1:0x50",
      "1.2.3:80",
      "256.0.0.1:80",
      "localhost:7700",
      "::1:7700",
      "[::1]",
      "[::1]7700",
      "[::1:7700",
      "[]:7700",
      "[127.0.0.1]:7700",
      "[::g]:7700",
  };
  for (const std::string& text : bad) {
    SCOPED_TRACE(text);
    const std::string message = endpoint_error(text, "--udp");
    EXPECT_TRUE(starts_with(message, "--udp: \"" + text + "\": ")) << message;
    EXPECT_NE(message.find("expected IPV4:PORT or [IPV6]:PORT"), std::string::npos) << message;
  }
  // The hint about names comes only where a name was written.
  EXPECT_NE(endpoint_error("localhost:7700", "x").find("host names"), std::string::npos);
  EXPECT_EQ(endpoint_error("1.2.3:7700", "x").find("host names"), std::string::npos);
}

TEST_F(ServerConfigTest, UnreadableFileNamesThePath) {
  const std::string missing = (dir_.path() / "missing.textproto").string();
  try {
    load_server_config(missing);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& error) {
    const std::string message = error.what();
    EXPECT_TRUE(starts_with(message, missing + ": cannot read")) << message;
    EXPECT_NE(message.find("No such file"), std::string::npos) << message;
  }

  const std::string directory = dir_.path().string();
  try {
    load_server_config(directory);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& error) {
    EXPECT_TRUE(starts_with(error.what(), directory + ": cannot read")) << error.what();
  }
}

}  // namespace
}  // namespace encodec::server
