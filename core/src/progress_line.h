// Progress on a terminal: one status line on stderr, redrawn in place at most
// every 100 ms, drawn only when enabled and stderr is a terminal (so logs and
// pipes stay clean). ProgressLine is the mechanism (model downloads use it);
// AudioProgress says how much audio is done and how fast.
//
// Thread safety: an object belongs to one thread.
#pragma once

#include <chrono>
#include <string>

namespace encodec {

class ProgressLine {
 public:
  // Draws only when `enabled` and stderr is a terminal.
  explicit ProgressLine(bool enabled);
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool active() const { return active_; }
  // True when a redraw is due (the first one, or 100 ms after the last):
  // callers format their text only then.
  bool due() const;
  // Replaces the line with `text` (no newline).
  void draw(const std::string& text);
  // Ends the line, so whatever is printed next (an error, a warning) starts on
  // a fresh one. Further draws are ignored.
  void finish();

 private:
  bool active_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_;
};

// "<label>  12.3 / 3600.0 s  (0%)  4.1x real time", from the audio seconds done.
class AudioProgress {
 public:
  AudioProgress(std::string label, double total_seconds, bool enabled);
  void update(double seconds_done);
  // Draws the final state and ends the line.
  void finish();

 private:
  void draw(double seconds_done);

  ProgressLine line_;
  std::string label_;
  double total_seconds_;
  double seconds_done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace encodec
