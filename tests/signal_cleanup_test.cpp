// Interrupted runs leave nothing behind: the registry of temporary files in a
// forked child, and the built `encodec` command interrupted with SIGINT /
// SIGTERM while it writes (compress, compress to .wav, decompress with -r).
#include "signal_cleanup.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sndfile.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "golden.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;

void touch(const std::string& path) { std::ofstream(path) << "x"; }

// Runs `child` in a forked process and returns its wait status.
template <typename Fn>
int run_forked(Fn&& child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    child();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(RemoveOnSignal, RegisteredFilesAreRemovedAndTheProcessDiesOfTheSignal) {
  const std::string dir = testing::make_temp_dir("signal_registry");
  const std::string registered = dir + "/registered.tmp";
  const std::string released = dir + "/released.tmp";
  const std::string bystander = dir + "/bystander";
  const int status = run_forked([&] {
    install_signal_cleanup();
    touch(registered);
    touch(released);
    touch(bystander);
    RemoveOnSignal keep(registered);
    RemoveOnSignal let_go(released);
    let_go.release();
    ::raise(SIGTERM);
    ::_exit(0);  // not reached: the default action ends the process
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_EQ(testing::files_in(dir), (std::vector<std::string>{"bystander", "released.tmp"}));
}

TEST(RemoveOnSignal, AnIgnoredSignalStaysIgnored) {
  const std::string dir = testing::make_temp_dir("signal_ignored");
  const std::string registered = dir + "/registered.tmp";
  const int status = run_forked([&] {
    ::signal(SIGHUP, SIG_IGN);  // as under nohup
    install_signal_cleanup();
    touch(registered);
    RemoveOnSignal keep(registered);
    ::raise(SIGHUP);
    keep.release();
    ::_exit(7);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_EQ(testing::files_in(dir), std::vector<std::string>{"registered.tmp"});
}

// A stereo 48 kHz 16-bit WAV of `seconds` (tones and a little noise).
void write_long_input(const std::string& path, int seconds) {
  constexpr int kRateHz = 48000;
  SF_INFO info{};
  info.samplerate = kRateHz;
  info.channels = 2;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr) << sf_strerror(nullptr);
  std::vector<float> block(2 * kRateHz);
  uint32_t noise = 12345;
  for (int second = 0; second < seconds; ++second) {
    for (int i = 0; i < kRateHz; ++i) {
      const double t = second + static_cast<double>(i) / kRateHz;
      noise = noise * 1664525u + 1013904223u;
      const float hiss = 0.02f * (static_cast<float>(noise >> 8) / (1 << 24) - 0.5f);
      block[2 * i] = 0.3f * static_cast<float>(std::sin(2 * M_PI * 440 * t)) + hiss;
      block[2 * i + 1] = 0.2f * static_cast<float>(std::sin(2 * M_PI * 660 * t)) - hiss;
    }
    ASSERT_EQ(sf_writef_float(file, block.data(), kRateHz), kRateHz);
  }
  sf_close(file);
}

bool has_temporary_file(const std::string& dir) {
  for (const std::string& name : testing::files_in(dir)) {
    if (name.find(".tmp-") != std::string::npos) return true;
  }
  return false;
}

struct Interruption {
  std::string label;
  std::vector<std::string> args;  // after the binary; {dir} stands for the test folder
  int signal_number;
};

void PrintTo(const Interruption& run, std::ostream* out) { *out << run.label; }

class InterruptedCommand : public ::testing::TestWithParam<Interruption> {};

// Starts the command, waits until it has a temporary file (it is writing),
// sends the signal, and checks that it died of it leaving only the inputs.
TEST_P(InterruptedCommand, LeavesNothingBehind) {
  ENCODEC_REQUIRE_GOLDEN();
  const Interruption& run = GetParam();
  const std::string dir = testing::make_temp_dir("signal_cli_" + run.label);
  // Long enough that the golden (small) model takes a few seconds on it.
  write_long_input(dir + "/long.wav", 120);
  std::vector<std::string> inputs = {"long.wav"};
  std::vector<std::string> args = {ENCODEC_CLI_PATH, "-q", "--checkpoint",
                                   testing::golden_path("encodec_48khz-random.th")};
  bool decompress = false;
  for (const std::string& arg : run.args) {
    decompress |= arg == "{dir}/long.ecdc";
    args.push_back(arg.rfind("{dir}", 0) == 0 ? dir + arg.substr(5) : arg);
  }
  if (decompress) {
    // The .ecdc input is made first, by an uninterrupted run.
    const std::string command = std::string(ENCODEC_CLI_PATH) + " -q --hq --checkpoint " +
                                testing::golden_path("encodec_48khz-random.th") + " " + dir +
                                "/long.wav " + dir + "/long.ecdc";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    inputs.push_back("long.ecdc");
    std::sort(inputs.begin(), inputs.end());
  }

  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool writing = false;
  int status = 0;
  bool exited = false;
  while (!writing && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    writing = has_temporary_file(dir);
    if (!writing) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_FALSE(exited) << "the command ended before it was interrupted (status " << status
                       << "); give it a longer input";
  ASSERT_TRUE(writing) << "the command never created a temporary file";
  // Let it get into the work (encoding, decoding, the -r scratch pass).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(::kill(pid, run.signal_number), 0);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the command exited normally with status "
                                   << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  EXPECT_EQ(WTERMSIG(status), run.signal_number);
  EXPECT_EQ(testing::files_in(dir), inputs);
}

INSTANTIATE_TEST_SUITE_P(
    Cli, InterruptedCommand,
    ::testing::Values(Interruption{"compress", {"--hq", "{dir}/long.wav", "{dir}/out.ecdc"}, SIGINT},
                      Interruption{"compress_to_wav", {"--hq", "{dir}/long.wav", "{dir}/out.wav"},
                                   SIGTERM},
                      Interruption{"decompress_rescaled", {"-r", "{dir}/long.ecdc", "{dir}/out.wav"},
                                   SIGINT}),
    [](const ::testing::TestParamInfo<Interruption>& info) { return info.param.label; });

}  // namespace
}  // namespace encodec
