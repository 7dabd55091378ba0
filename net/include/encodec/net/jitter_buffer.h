// An adaptive jitter buffer for one incoming stream of fixed-length frames, in
// the spirit of WebRTC NetEq: packets go in as they arrive (in any order, some
// twice, some never), and once per frame period the player asks what to play:
// a frame, a concealment (the frame did not come in time), or nothing yet.
//
// Sequences are uint32 and may start anywhere and wrap. The first packet
// inserted sets the playout point; until playout starts, an older packet within
// capacity_frames of the newest moves it back (the first two packets swapped
// lose nothing). After that, a packet older than the playout point is a
// duplicate (its slot played it) or late (its slot was concealed).
//
// Target delay: each packet's relative delay (arrival time minus its sequence's
// nominal time, sequence * frame_duration_us, against the fastest packet of the
// window) goes into a window of the last delay_window_packets arrivals; the
// target is the 95th percentile of that window plus half a frame (a frame may
// play half a frame early, see Playout), rounded up to frames (to within the
// clock's microsecond), clamped to [min_delay_frames, max_delay_frames]: a
// stream with under half a frame of jitter plays one frame behind its fastest
// packet. A late packet raises the target at once to cover its own
// relative delay, until it has left the window. Duplicates and refused packets
// are not measured.
//
// Playout: next() waits (kWaiting) until the first packet has waited the
// target (now >= its arrival + target * frame_duration_us) or the target's
// number of later sequences are in. Then each call is one slot. The playout
// delay, how long after its earliest expected arrival (the window's fastest
// packet shifted to its nominal time) the frame due now is played, is held
// between half a frame under and one frame over the target (the
// band keeps a caller's timer wobble from acting). Under it, the slot is a
// stretch: kConceal without advancing the playout point, which adds a frame of
// delay. Over it for shrink_after_frames slots in a row (or, when it is
// fast_shrink_excess_frames or more over, as after a sender's start burst, for
// fast_shrink_after_frames slots), one frame is dropped:
// kDiscard (the caller decodes it to keep its decoder's state and throws the
// audio away, then calls next() again for this period's frame) or, if the
// frame due is missing, its concealment is skipped. When nothing is buffered
// (the sender paused or stopped) slots keep concealing: the caller decides when
// the stream ended.
//
// Accounting (stats()): every sequence from the first to the one before the
// playout point is exactly one of played, discarded, concealed or
// skipped_concealments, so their sum is next_sequence() minus the first
// sequence. Stretch slots are no sequence's: the caller's kConceal count is
// concealed + stretched. A packet arriving for a sequence already concealed or
// skipped counts as late, once, so never-arrived = concealed +
// skipped_concealments - late (packets older than the kept history count as
// too_old instead: see Insert::kLate).
//
// Time is injected: the clock returns microseconds (any monotonic origin), so
// tests drive it with a fake clock. No allocation after construction (the
// packet slots, the history of played sequences and the delay window are
// preallocated).
//
// Usage:
//   JitterBuffer buffer(options, [] { return steady_now_us(); });
//   buffer.insert(sequence, payload, size);       // network thread or loop
//   // every frame period:
//   JitterBuffer::Slot slot;
//   switch (buffer.next(&slot)) {
//     case kFrame: decode(slot.payload) ...; case kConceal: decoder.push_lost(); ...
//   }
//
// Thread safety: one thread at a time (the caller serializes insert and next).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace encodec::net {

using ClockUs = std::function<int64_t()>;

// The steady clock in microseconds: what the daemon and client pass as ClockUs.
int64_t steady_now_us();

// The constructor throws std::invalid_argument unless frame_duration_us > 0,
// 0 <= min_delay_frames <= max_delay_frames < capacity_frames <= 65536, and the
// window, shrink and reorder counts are at least 1.
struct JitterBufferOptions {
  double frame_duration_us = 40000.0 / 3.0;  // 320 samples at 24 kHz
  int min_delay_frames = 1;
  int max_delay_frames = 25;
  // Packets further ahead of the playout point than this are refused (kTooFarAhead);
  // outcomes of this many sequences behind it are kept to tell late from duplicate.
  int capacity_frames = 128;
  size_t max_payload_bytes = 1200;
  // Packets in the relative-delay window (NetEq uses about 2 s).
  int delay_window_packets = 150;
  // Slots in a row with the playout delay over the target before one frame is dropped.
  int shrink_after_frames = 75;
  // A delay this many frames over the target (a sender's start burst, a spike
  // that passed) shrinks faster: one frame dropped every fast_shrink_after_frames slots.
  int fast_shrink_excess_frames = 2;
  int fast_shrink_after_frames = 4;
  // next_in_order(): a missing frame is concealed once this many later frames are in.
  int reorder_window_frames = 4;
};

struct JitterBufferStats {
  uint64_t inserted = 0;              // packets accepted into the buffer
  uint64_t duplicates = 0;            // a sequence already buffered, played or counted late
  uint64_t late = 0;                  // arrived after its slot was concealed or skipped
  uint64_t too_old = 0;               // refused: behind the kept history, outcome unknown
  uint64_t too_far_ahead = 0;         // refused: beyond capacity_frames
  uint64_t too_large = 0;             // refused: over max_payload_bytes
  uint64_t played = 0;                // slots that played a packet
  uint64_t discarded = 0;             // packets dropped to shrink the delay (decoded, not played)
  uint64_t concealed = 0;             // slots with no packet in time
  uint64_t skipped_concealments = 0;  // missing sequences passed without a slot (shrinking)
  uint64_t stretched = 0;             // kConceal slots that held the playout point (growing)
  int target_delay_frames = 0;
  int depth_frames = 0;    // frames buffered at or after the playout point
  double jitter_ms = 0.0;  // RFC 3550 inter-arrival jitter estimate
};

class JitterBuffer {
 public:
  enum class Insert {
    kAccepted,
    kDuplicate,
    // Older than the playout point: counted in stats().late when its slot is known
    // to have been concealed or skipped, else (behind the kept history, or before
    // the first sequence once playout started) in stats().too_old.
    kLate,
    kTooFarAhead,
    kTooLarge,
  };
  enum class Playout {
    kWaiting,  // nothing to play yet (before the first packet has waited its delay)
    kFrame,    // play slot.payload
    kDiscard,  // decode slot.payload, do not play it (delay shrinking)
    kConceal,  // the frame is missing, or a stretch slot: conceal it
  };
  struct Slot {
    // The sequence of this slot; for a stretch, the one due next.
    uint32_t sequence = 0;
    const uint8_t* payload = nullptr;  // valid until the next insert/next call
    size_t size = 0;
  };

  JitterBuffer(JitterBufferOptions options, ClockUs clock_us);

  Insert insert(uint32_t sequence, const uint8_t* payload, size_t size);
  // Real-time playout: call once per frame period. May return kDiscard and then
  // the caller calls next() again in the same period for the frame to play.
  Playout next(Slot* slot);
  // Playout as fast as packets come (files, tests): a present frame plays at
  // once; a missing one is concealed only once reorder_window_frames later
  // frames are in, or when `stream_ended` and a later frame is in; otherwise
  // kWaiting. Use either next() or next_in_order() on one buffer, not both.
  Playout next_in_order(Slot* slot, bool stream_ended);
  // Sequences still expected: the highest inserted + 1 minus the playout point
  // (0 when the playout point has run past it).
  int pending_frames() const;
  bool started() const;
  // The earliest time next() plays the frame due rather than stretching: its
  // earliest expected arrival (the window's fastest packet shifted to its
  // nominal time) plus the target less half a frame, the playout band's lower
  // edge. A player whose clock can be set (a file, not a sound card) ticks just
  // after it, so a frame waits for the jitter it must cover and not for an
  // arbitrary phase of its tick as well. Meaningful once started().
  int64_t due_time_us() const;
  uint32_t next_sequence() const;
  JitterBufferStats stats() const;
  void reset();

 private:
  struct Entry {
    bool present = false;
    uint32_t sequence = 0;
    size_t size = 0;
    std::vector<uint8_t> bytes;
  };
  // What became of a sequence that passed the playout point.
  enum class Outcome : uint8_t { kNone, kPlayed, kConcealed, kLateArrived };
  struct History {
    uint32_t sequence = 0;
    Outcome outcome = Outcome::kNone;
  };
  // Both rings have a power-of-two size, so sequence % size stays contiguous
  // across the uint32 wrap.
  Entry& entry(uint32_t sequence) { return entries_[sequence % entries_.size()]; }
  const Entry& entry(uint32_t sequence) const { return entries_[sequence % entries_.size()]; }
  History& history(uint32_t sequence) { return history_[sequence % history_.size()]; }
  // Sequences unwrapped against the highest one seen (the first packet is 0).
  int64_t extended(uint32_t sequence) const;
  void observe_arrival(uint32_t sequence, int64_t now_us, bool late);
  void update_target();
  int frames_covering(double delay_us) const;
  double playout_delay_frames(int64_t now_us) const;
  void start_playout();
  // Drops the frame due to shrink the delay: true with it in `slot` (kDiscard),
  // false when it is missing (its concealment skipped).
  bool drop_due(Slot* slot);
  void pass(Outcome outcome);
  Playout take(Slot* slot);

  JitterBufferOptions options_;
  ClockUs clock_us_;
  std::vector<Entry> entries_;
  std::vector<History> history_;
  std::vector<double> delay_window_;  // arrival minus nominal time (us), a ring
  std::vector<double> sorted_scratch_;
  size_t delay_window_count_ = 0;
  size_t delay_window_next_ = 0;
  double window_min_offset_us_ = 0.0;  // the fastest packet of the window
  int percentile_target_frames_ = 0;
  int target_delay_frames_ = 0;
  bool have_first_ = false;
  bool started_ = false;
  bool catching_up_ = false;  // dropping a start burst
  uint32_t first_sequence_ = 0;
  int64_t first_arrival_us_ = 0;
  uint32_t next_sequence_ = 0;  // playout point
  uint32_t highest_sequence_ = 0;
  int64_t highest_extended_ = 0;
  int buffered_frames_ = 0;
  int64_t last_arrival_us_ = 0;
  int64_t last_arrival_extended_ = 0;
  double jitter_us_ = 0.0;
  int late_boost_frames_ = 0;
  int late_boost_packets_left_ = 0;  // observations until the late packet leaves the window
  int above_target_slots_ = 0;
  int far_above_target_slots_ = 0;
  JitterBufferStats stats_;
};

}  // namespace encodec::net
