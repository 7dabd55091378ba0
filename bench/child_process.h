// What the benchmarks that run the built commands share: a test WAV written
// block by block, a child process timed from fork to exit with its peak RSS,
// and where the built `encodec` is.
#pragma once

#include <fcntl.h>
#include <sndfile.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace encodec::bench {

// Noise plus a few tones whose levels drift, 16-bit WAV, written block by block.
inline void write_test_wav(const std::string& path, int sample_rate_hz, int channels, double seconds) {
  SF_INFO info{};
  info.samplerate = sample_rate_hz;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  if (!file) throw std::runtime_error("cannot write " + path + ": " + sf_strerror(nullptr));
  const auto total = static_cast<int64_t>(seconds * sample_rate_hz);
  std::mt19937 random(1234);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  std::vector<float> block(static_cast<size_t>(sample_rate_hz * channels));
  for (int64_t done = 0; done < total;) {
    const int64_t count = std::min<int64_t>(sample_rate_hz, total - done);
    for (int64_t i = 0; i < count; ++i) {
      const double t = static_cast<double>(done + i) / sample_rate_hz;
      const double level = 0.5 + 0.5 * std::sin(2 * M_PI * t / 7.0);
      const double tones =
          level * (0.2 * std::sin(2 * M_PI * 220 * t) + 0.1 * std::sin(2 * M_PI * 1375 * t));
      for (int c = 0; c < channels; ++c) {
        block[static_cast<size_t>(i * channels + c)] =
            static_cast<float>(tones * (c == 0 ? 1.0 : 0.8)) + noise(random);
      }
    }
    if (sf_writef_float(file, block.data(), count) != count) {
      sf_close(file);
      throw std::runtime_error("cannot write " + path + ": " + sf_strerror(file));
    }
    done += count;
  }
  sf_close(file);
}

struct ChildResult {
  bool ok = false;
  std::string failure;  // when !ok
  double wall_s = 0;    // fork to exit
  double peak_rss_mb = 0;
};

// Runs `args` (argv[0] a path) with stdout discarded and stderr going to
// `stderr_path` (read it when the child fails), under an address-space limit when memory_limit_mb > 0.
inline ChildResult run_child(std::vector<std::string> args, long memory_limit_mb,
                             const std::string& stderr_path) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (memory_limit_mb > 0) {
      const rlimit limit{static_cast<rlim_t>(memory_limit_mb) << 20,
                         static_cast<rlim_t>(memory_limit_mb) << 20};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    const int log = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) ::dup2(log, STDERR_FILENO);
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    std::perror("exec");
    ::_exit(127);
  }
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  ChildResult result;
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    result.ok = true;
  } else if (WIFEXITED(status)) {
    result.failure = "exit " + std::to_string(WEXITSTATUS(status));
  } else {
    result.failure = "signal " + std::to_string(WTERMSIG(status));
  }
  return result;
}

// A program built beside this benchmark (`relative`: e.g. "core/encodec").
inline std::string built_program(const char* argv0, const std::string& relative) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::canonical("/proc/self/exe", ec);
  const fs::path base = ec ? fs::path(argv0).parent_path() : self.parent_path();
  return (base / ".." / relative).lexically_normal().string();
}

}  // namespace encodec::bench
