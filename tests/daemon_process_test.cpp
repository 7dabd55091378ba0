// The built `encodecd` and `encodec-client` executables as a user runs them: a
// call between two client processes through a daemon process, a client killed
// with SIGKILL mid-call, and SIGTERM ending every session with a goodbye and
// exit status 0.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "encodec/cli.h"
#include "golden.h"
#include "http_client.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

// A child process running `argv`, its stderr in a file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path) : log_path_(log_path) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(log, STDERR_FILENO);
      ::dup2(log, STDOUT_FILENO);
      std::vector<char*> args;
      for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void signal(int number) const { ::kill(pid_, number); }
  // The wait status, or nullopt if it is still running after the timeout.
  std::optional<int> wait(milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return status;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return std::nullopt;
  }
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string log_path_;
};

class DaemonProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    dir_ = make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    checkpoint_ = golden_path("encodec_24khz-random.th");
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{ENCODEC_DAEMON_PATH, "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                                 "--http", "127.0.0.1:0", "--checkpoint", checkpoint_},
        dir_ + "/encodecd.log");
    // The daemon logs the ports it bound.
    const std::regex listening(
        "listening on UDP [0-9.]+:([0-9]+) and TCP [0-9.]+:([0-9]+)[^]*serving HTTP [^\\n]* on [0-9.]+:([0-9]+)");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    std::smatch match;
    std::string log;
    while (std::chrono::steady_clock::now() < deadline) {
      log = daemon_->log();
      if (std::regex_search(log, match, listening)) break;
      std::this_thread::sleep_for(milliseconds(20));
    }
    ASSERT_FALSE(match.empty()) << "encodecd did not start:\n" << log;
    udp_port_ = static_cast<uint16_t>(std::stoi(match[1]));
    tcp_port_ = static_cast<uint16_t>(std::stoi(match[2]));
    http_port_ = static_cast<uint16_t>(std::stoi(match[3]));
  }

  std::vector<std::string> client(const std::vector<std::string>& arguments) const {
    std::vector<std::string> argv = {ENCODEC_CLIENT_PATH, "--server", "127.0.0.1:" + std::to_string(udp_port_),
                                     "--checkpoint", checkpoint_};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return argv;
  }

  std::string dir_, checkpoint_;
  std::unique_ptr<Process> daemon_;
  uint16_t udp_port_ = 0, tcp_port_ = 0, http_port_ = 0;
};

// The daemon's HTTP side: POST /v1/encode gives the `encodec` command's bytes
// (the daemon's --checkpoint serves the 24 kHz model), /healthz and /metrics
// count a session opened meanwhile; SIGTERM still exits 0.
TEST_F(DaemonProcessTest, HttpEncodeGivesTheCommandsBytes) {
  const std::string input = golden_path("inputs/speech_24k.wav");
  const std::string out = dir_ + "/cli.ecdc";
  const std::vector<const char*> argv = {"encodec", "-q", "--threads", "1", "-b", "3", "--checkpoint",
                                         checkpoint_.c_str(), input.c_str(), out.c_str()};
  ASSERT_EQ(run_encodec_cli(static_cast<int>(argv.size()), argv.data()), 0);
  const HttpReply encoded = http_request(http_port_, "/v1/encode?bandwidth=3", "POST", read_file_bytes(input));
  ASSERT_EQ(encoded.status, 200) << encoded.body.substr(0, 300);
  EXPECT_EQ(encoded.body, read_file_bytes(out));

  RawPeer peer(udp_port_, /*tcp=*/false);
  ASSERT_NE(peer.hello(), 0u);
  EXPECT_EQ(nlohmann::json::parse(http_request(http_port_, "/healthz").body).at("sessions"), 1);
  const auto metrics = parse_metrics(http_request(http_port_, "/metrics").body);
  EXPECT_EQ(metrics.at("encodecd_sessions_opened_total"), 1);
  EXPECT_EQ(metrics.at("encodecd_transcode_jobs_total{code=\"200\",kind=\"encode\"}"), 1);
  daemon_->signal(SIGTERM);
  const auto status = daemon_->wait(std::chrono::seconds(10));
  ASSERT_TRUE(status) << "encodecd still running after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon_->log();
}

TEST_F(DaemonProcessTest, CallBetweenClientProcessesThenSigtermSaysGoodbyeAndExitsZero) {
  Process a(client({"--input", golden_path("inputs/speech_24k.wav"), "--output", dir_ + "/a.wav",
                    "--as-fast-as-possible", "--wait-for", "2", "call", "room"}),
            dir_ + "/a.log");
  Process b(client({"--input", golden_path("inputs/long_24k.wav"), "--output", dir_ + "/b.wav",
                    "--as-fast-as-possible", "--wait-for", "2", "call", "room"}),
            dir_ + "/b.log");
  for (Process* process : {&a, &b}) {
    const auto status = process->wait(std::chrono::seconds(30));
    ASSERT_TRUE(status) << process->log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << process->log();
  }
  const LiveModel* live = golden_live_model();
  const auto expected = [&](const std::string& name) {
    return as_written(decode_codes(live->model, encode_file(live->model, golden_path("inputs/" + name), 6.0)), dir_);
  };
  EXPECT_EQ(read_wav(dir_ + "/a.wav"), expected("long_24k.wav"));
  EXPECT_EQ(read_wav(dir_ + "/b.wav"), expected("speech_24k.wav"));
  EXPECT_NE(a.log().find(": played 345, concealed 0"), std::string::npos) << a.log();  // the summary

  // Two sessions open when SIGTERM comes: both get a goodbye, the daemon exits 0.
  RawPeer udp(udp_port_, /*tcp=*/false), tcp(tcp_port_, /*tcp=*/true);
  ASSERT_NE(udp.hello(), 0u);
  ASSERT_NE(tcp.hello(), 0u);
  daemon_->signal(SIGTERM);
  for (RawPeer* peer : {&udp, &tcp}) {
    const auto bye = peer->receive_until([](const wire::Envelope& e) { return e.has_goodbye(); },
                                         milliseconds(5000));
    ASSERT_TRUE(bye) << daemon_->log();
    EXPECT_EQ(bye->goodbye().reason(), "server shutting down");
  }
  const auto status = daemon_->wait(std::chrono::seconds(10));
  ASSERT_TRUE(status) << "encodecd still running after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon_->log();
}

// `encodec-client --send-opus` is a peer without the model: it starts with no
// checkpoint anywhere (an empty --model-dir), calls a client that runs the model,
// and hears it as the server's Opus (whole 20 ms frames of the decode).
TEST_F(DaemonProcessTest, ClientProcessWithoutTheModelSendsAndHearsOpus) {
  const std::string empty = dir_ + "/no-models";
  std::filesystem::create_directories(empty);
  Process opus({ENCODEC_CLIENT_PATH, "--server", "127.0.0.1:" + std::to_string(udp_port_), "--model-dir", empty,
                "--send-opus", "--input", golden_path("inputs/speech_24k.wav"), "--output", dir_ + "/opus.wav",
                "--as-fast-as-possible", "--wait-for", "2", "call", "mixed"},
               dir_ + "/opus.log");
  Process codes(client({"--input", golden_path("inputs/chirp_odd_24k.wav"), "--output", dir_ + "/codes.wav",
                        "--as-fast-as-possible", "--wait-for", "2", "call", "mixed"}),
                dir_ + "/codes.log");
  for (Process* process : {&opus, &codes}) {
    const auto status = process->wait(std::chrono::seconds(30));
    ASSERT_TRUE(status) << process->log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << process->log();
  }
  const LiveModel* live = golden_live_model();
  const size_t decoded =
      decode_codes(live->model, encode_file(live->model, golden_path("inputs/chirp_odd_24k.wav"), 6.0)).size();
  EXPECT_EQ(read_wav(dir_ + "/opus.wav").size(), decoded / 480 * 480);
  // 2.5 s of speech (60000 samples) in 125 packets of 20 ms reached the other side as
  // codes: as many frames as the file's own codes, so as long a decode.
  EXPECT_NE(opus.log().find("sent 125 frames"), std::string::npos) << opus.log();
  EXPECT_EQ(read_wav(dir_ + "/codes.wav").size(),
            decode_codes(live->model, encode_file(live->model, golden_path("inputs/speech_24k.wav"), 6.0)).size())
      << codes.log();
}

// SIGKILL leaves no goodbye: the daemon notices the silence and ends the
// session, and the other member keeps its session.
TEST_F(DaemonProcessTest, ClientKilledMidCallIsTimedOut) {
  RawPeer other(udp_port_, false);
  ASSERT_NE(other.hello(), 0u);
  wire::Envelope join;
  join.mutable_join()->set_room("room");
  join.mutable_join()->set_role(wire::ROLE_CALL);
  join.mutable_join()->set_create(true);
  other.send(join);
  ASSERT_TRUE(other.receive_until([](const wire::Envelope& e) { return e.has_joined(); }, milliseconds(2000)));

  Process victim(client({"--input", "tone", "--output", "null", "call", "room"}), dir_ + "/victim.log");
  ASSERT_TRUE(other.receive_until([](const wire::Envelope& e) { return e.has_media(); }, milliseconds(10000)))
      << victim.log();
  victim.signal(SIGKILL);
  ASSERT_TRUE(victim.wait(milliseconds(2000)));
  // The room update that says it is gone comes after the daemon's timeout (5 s by
  // default); meanwhile this session keeps itself alive.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(12);
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    wire::Envelope keep_alive;
    keep_alive.mutable_keep_alive()->set_sent_time_us(1);
    other.send(keep_alive);
    const auto update = other.receive_until([](const wire::Envelope& e) { return e.has_room_update(); },
                                            milliseconds(500));
    gone = update && update->room_update().members_size() == 1;
  }
  EXPECT_TRUE(gone) << daemon_->log();
  // The daemon logs the end after telling the room.
  for (int i = 0; i < 100 && daemon_->log().find("timed out") == std::string::npos; ++i) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_NE(daemon_->log().find("timed out"), std::string::npos) << daemon_->log();
}

TEST(DaemonCommandLine, BadConfigAndMissingModelFailWithAMessageNamingThem) {
  const std::string dir = make_temp_dir("DaemonCommandLine");
  const std::string config = dir + "/bad.textproto";
  std::ofstream(config) << "udp_listen: \"127.0.0.1:7700\"\nio_threads: 500\n";
  Process bad_config({ENCODEC_DAEMON_PATH, "--config", config}, dir + "/bad.log");
  auto status = bad_config.wait(std::chrono::seconds(20));
  ASSERT_TRUE(status);
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_NE(bad_config.log().find("bad.textproto:2"), std::string::npos) << bad_config.log();
  EXPECT_NE(bad_config.log().find("io_threads"), std::string::npos) << bad_config.log();

  Process no_model({ENCODEC_DAEMON_PATH, "--model-dir", dir, "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0"},
                   dir + "/nomodel.log");
  status = no_model.wait(std::chrono::seconds(20));
  ASSERT_TRUE(status);
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_NE(no_model.log().find("--checkpoint"), std::string::npos) << no_model.log();

  // These machines have no audio device: the default input (the microphone) says so in one line.
  ENCODEC_REQUIRE_GOLDEN();
  Process no_device({ENCODEC_CLIENT_PATH, "--checkpoint", golden_path("encodec_24khz-random.th"), "call", "room"},
                    dir + "/client.log");
  status = no_device.wait(std::chrono::seconds(20));
  ASSERT_TRUE(status);
  const std::string log = no_device.log();
  if (log.find("no audio input device") == std::string::npos) GTEST_SKIP() << "this machine has a microphone";
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_NE(log.find("--input FILE"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
}

}  // namespace
}  // namespace encodec::testing
