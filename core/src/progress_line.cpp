#include "progress_line.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace encodec {
namespace {
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
}  // namespace

ProgressLine::ProgressLine(bool enabled) : active_(enabled && ::isatty(STDERR_FILENO) == 1) {}

bool ProgressLine::due() const {
  return active_ && (!drawn_ || std::chrono::steady_clock::now() - last_draw_ >= kRedrawInterval);
}

void ProgressLine::draw(const std::string& text) {
  if (!active_) return;
  // \033[K clears what a longer previous line left behind.
  std::fprintf(stderr, "\r%s\033[K", text.c_str());
  std::fflush(stderr);
  drawn_ = true;
  last_draw_ = std::chrono::steady_clock::now();
}

void ProgressLine::finish() {
  if (active_ && drawn_) {
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  active_ = false;
}

AudioProgress::AudioProgress(std::string label, double total_seconds, bool enabled)
    : line_(enabled),
      label_(std::move(label)),
      total_seconds_(total_seconds),
      start_(std::chrono::steady_clock::now()) {}

void AudioProgress::update(double seconds_done) {
  seconds_done_ = seconds_done;
  if (line_.due()) draw(seconds_done);
}

void AudioProgress::finish() {
  if (line_.active()) draw(seconds_done_);
  line_.finish();
}

void AudioProgress::draw(double seconds_done) {
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int percent =
      total_seconds_ > 0 ? static_cast<int>(100 * std::min(1.0, seconds_done / total_seconds_)) : 100;
  char text[256];
  if (wall_seconds > 0 && seconds_done > 0) {
    std::snprintf(text, sizeof(text), "%s  %.1f / %.1f s  %3d%%  %.1fx real time", label_.c_str(),
                  seconds_done, total_seconds_, percent, seconds_done / wall_seconds);
  } else {
    std::snprintf(text, sizeof(text), "%s  %.1f / %.1f s  %3d%%", label_.c_str(), seconds_done,
                  total_seconds_, percent);
  }
  line_.draw(text);
}

}  // namespace encodec
