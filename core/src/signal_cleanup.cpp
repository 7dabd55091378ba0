#include "signal_cleanup.h"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <climits>
#include <cstring>

namespace encodec {
namespace {

// A slot is free, being filled (the handler must not read a half-copied path),
// or holds a path to remove.
enum SlotState : int { kFree = 0, kFilling = 1, kArmed = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX];
};

constexpr size_t kSlots = 64;
std::array<Slot, kSlots> g_slots;  // static storage: usable from the handler at any time
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");

constexpr int kCleanedSignals[] = {SIGINT, SIGTERM, SIGHUP};

extern "C" void remove_registered_files_and_die(int signal_number) {
  for (Slot& slot : g_slots) {
    if (slot.state.load(std::memory_order_acquire) == kArmed) ::unlink(slot.path);
  }
  // SA_RESETHAND restored the default action; the re-raised signal is delivered
  // when the handler returns, so the exit status says which signal ended us.
  ::raise(signal_number);
}

}  // namespace

void install_signal_cleanup() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  for (const int signal_number : kCleanedSignals) {
    struct sigaction current {};
    if (::sigaction(signal_number, nullptr, &current) != 0) continue;
    if (current.sa_handler == SIG_IGN) continue;
    struct sigaction action {};
    action.sa_handler = &remove_registered_files_and_die;
    sigemptyset(&action.sa_mask);
    // Block the other cleaned signals while cleaning: a second Ctrl-C must not
    // kill us between two unlinks.
    for (const int other : kCleanedSignals) sigaddset(&action.sa_mask, other);
    action.sa_flags = SA_RESETHAND;
    ::sigaction(signal_number, &action, nullptr);
  }
}

RemoveOnSignal::RemoveOnSignal(const std::string& path) {
  if (path.size() >= PATH_MAX) return;
  for (size_t i = 0; i < kSlots; ++i) {
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kFilling, std::memory_order_acq_rel)) {
      continue;
    }
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    g_slots[i].state.store(kArmed, std::memory_order_release);
    slot_ = static_cast<int>(i);
    return;
  }
}

RemoveOnSignal& RemoveOnSignal::operator=(RemoveOnSignal&& other) noexcept {
  if (this != &other) {
    release();
    slot_ = other.slot_;
    other.slot_ = -1;
  }
  return *this;
}

void RemoveOnSignal::release() {
  if (slot_ < 0) return;
  g_slots[static_cast<size_t>(slot_)].state.store(kFree, std::memory_order_release);
  slot_ = -1;
}

}  // namespace encodec
