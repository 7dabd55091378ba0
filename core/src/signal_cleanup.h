// Temporary files that an interrupted command must not leave behind: while a
// RemoveOnSignal is alive, SIGINT, SIGTERM or SIGHUP unlinks its path before
// the process dies of that signal (exit status 128 + signal, as if unhandled).
//
// Usage:
//   install_signal_cleanup();                  // once, in the command's entry point
//   RemoveOnSignal guard(temp_path);           // beside the code that creates temp_path
//   ... rename(temp_path, final_path); guard.release();
//
// Thread safety: registration and release may happen on any thread; the
// handler only reads a fixed table of atomics and calls unlink(), both
// async-signal-safe.
#pragma once

#include <string>

namespace encodec {

// Installs the handler for SIGINT, SIGTERM and SIGHUP (those not ignored, so
// `nohup` and background jobs keep their dispositions). Idempotent.
void install_signal_cleanup();

// Registers `path` for removal on a signal until release() or destruction.
// Registration is best effort: when the fixed table (64 paths) is full the path
// is simply not registered (normal error paths still remove the file).
class RemoveOnSignal {
 public:
  RemoveOnSignal() = default;
  explicit RemoveOnSignal(const std::string& path);
  ~RemoveOnSignal() { release(); }
  RemoveOnSignal(RemoveOnSignal&& other) noexcept : slot_(other.slot_) { other.slot_ = -1; }
  RemoveOnSignal& operator=(RemoveOnSignal&& other) noexcept;
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;

  // The path is no longer ours to remove (renamed into place or already deleted).
  void release();

 private:
  int slot_ = -1;
};

}  // namespace encodec
