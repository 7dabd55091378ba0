// The progress line: drawn on a terminal (a pseudo-terminal here), throttled,
// ended with a newline; silent when stderr is not a terminal or when disabled.
#include "progress_line.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>

#include "golden.h"

namespace encodec {
namespace {

// Runs `body` with stderr on the descriptor `fd` and restores it.
void with_stderr_on(int fd, const std::function<void()>& body) {
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  body();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
}

// What `body` writes to stderr when stderr is a terminal.
std::string terminal_output(const std::function<void()>& body) {
  int master = -1;
  int slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty failed";
    return "";
  }
  with_stderr_on(slave, body);
  ::close(slave);
  std::string text;
  char buffer[4096];
  pollfd ready{master, POLLIN, 0};
  while (::poll(&ready, 1, 100) > 0 && (ready.revents & POLLIN)) {
    const ssize_t got = ::read(master, buffer, sizeof(buffer));
    if (got <= 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  ::close(master);
  return text;
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << text << "' lacks '" << part << "'";
}

TEST(AudioProgress, DrawsSecondsPercentAndSpeedOnATerminal) {
  const std::string text = terminal_output([] {
    AudioProgress progress("Compressing", 60.0, /*enabled=*/true);
    ::usleep(20000);  // some wall time, so that the speed is finite
    progress.update(12.0);
    progress.finish();
  });
  expect_contains(text, "Compressing");
  expect_contains(text, "12.0 / 60.0 s");
  expect_contains(text, " 20%");
  expect_contains(text, "x real time");
  ASSERT_FALSE(text.empty());
  // The terminal turns "\n" into "\r\n".
  EXPECT_EQ(text.substr(text.size() - 2), "\r\n");
}

TEST(AudioProgress, RedrawsAtMostEvery100Milliseconds) {
  const std::string text = terminal_output([] {
    AudioProgress progress("Decompressing", 10.0, true);
    for (int i = 1; i <= 50; ++i) progress.update(0.1 * i);  // well under 100 ms
    progress.finish();
  });
  // The first update, then the final state at finish().
  EXPECT_EQ(std::count(text.begin(), text.end(), '\033'), 2) << text;
  expect_contains(text, "5.0 / 10.0 s");
}

TEST(AudioProgress, SilentWhenDisabledOrNotATerminal) {
  EXPECT_EQ(terminal_output([] {
              AudioProgress progress("Compressing", 60.0, /*enabled=*/false);
              progress.update(30.0);
              progress.finish();
            }),
            "");
  const std::string dir = testing::make_temp_dir("progress_not_a_terminal");
  const std::string path = dir + "/stderr.txt";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  with_stderr_on(fd, [] {
    AudioProgress progress("Compressing", 60.0, true);
    progress.update(30.0);
    progress.finish();
  });
  ::close(fd);
  EXPECT_EQ(testing::read_file_bytes(path), "");
}

}  // namespace
}  // namespace encodec
