// JitterBuffer driven by a fake clock: packets arrive on schedules the tests
// build (in order, swapped, jittered, lost, duplicated, late), and the results
// are checked against what the schedule implies: which frame each slot plays,
// that every sequence is accounted for exactly once, and that the target delay
// covers the 95th percentile of the relative delays, computed here on its own.
// This binary also replaces operator new to check that playout allocates
// nothing after construction.
#include "encodec/net/jitter_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

namespace {
std::atomic<bool> counting_allocations{false};
std::atomic<long> allocations{0};

void* counted_malloc(std::size_t size) noexcept {
  if (counting_allocations.load(std::memory_order_relaxed)) {
    allocations.fetch_add(1, std::memory_order_relaxed);
  }
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace

// Every non-aligned form, so that each allocation and its release meet in
// malloc and free (a sanitizer's own operator new must not pair with this free).
void* operator new(std::size_t size) {
  if (void* memory = counted_malloc(size)) return memory;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
// Out of line: inlined, GCC would see free() meet a new-expression and warn.
__attribute__((noinline)) void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete[](void* memory) noexcept { operator delete(memory); }
void operator delete(void* memory, std::size_t) noexcept { operator delete(memory); }
void operator delete[](void* memory, std::size_t) noexcept { operator delete(memory); }
void operator delete(void* memory, const std::nothrow_t&) noexcept { operator delete(memory); }
void operator delete[](void* memory, const std::nothrow_t&) noexcept { operator delete(memory); }

namespace encodec::net {
namespace {

using Insert = JitterBuffer::Insert;
using Playout = JitterBuffer::Playout;

constexpr double kFrameUs = 40000.0 / 3.0;

int64_t frame_time_us(double frames) { return std::llround(frames * kFrameUs); }

// The payload of a sequence: its four bytes, then a length that varies with it.
std::vector<uint8_t> payload_of(uint32_t sequence) {
  std::vector<uint8_t> bytes(4 + sequence % 7, static_cast<uint8_t>(sequence * 31));
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(sequence >> (8 * i));
  return bytes;
}

// Without allocating (the allocation test checks payloads too).
bool slot_carries(const JitterBuffer::Slot& slot, uint32_t sequence) {
  if (slot.payload == nullptr || slot.size != 4 + sequence % 7) return false;
  for (size_t i = 0; i < slot.size; ++i) {
    const uint8_t expected =
        i < 4 ? static_cast<uint8_t>(sequence >> (8 * i)) : static_cast<uint8_t>(sequence * 31);
    if (slot.payload[i] != expected) return false;
  }
  return true;
}

// Uniform on [0, 1) from the generator's raw bits: the same schedule with every
// standard library (std::uniform_real_distribution's output is not specified).
class UnitRandom {
 public:
  explicit UnitRandom(uint64_t seed) : random_(seed) {}
  double operator()() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

 private:
  std::mt19937_64 random_;
};

struct FakeClock {
  int64_t now_us = 0;
  ClockUs clock() {
    return [this] { return now_us; };
  }
};

class JitterBufferTest : public ::testing::Test {
 protected:
  JitterBuffer make(JitterBufferOptions options) { return JitterBuffer(options, clock_.clock()); }
  Insert insert_at(JitterBuffer& buffer, int64_t time_us, uint32_t sequence) {
    clock_.now_us = time_us;
    const std::vector<uint8_t> bytes = payload_of(sequence);
    return buffer.insert(sequence, bytes.data(), bytes.size());
  }
  Playout next_at(JitterBuffer& buffer, int64_t time_us, JitterBuffer::Slot* slot) {
    clock_.now_us = time_us;
    return buffer.next(slot);
  }

  // Pairs swapped on the way (2k+1 arrives at frame 2k, 2k at frame 2k+1), the
  // first pair included: within a three-frame delay every frame plays in order.
  void expect_swapped_pairs_play_in_order(uint32_t first_sequence);

  FakeClock clock_;
  JitterBufferOptions options_;
};

void JitterBufferTest::expect_swapped_pairs_play_in_order(uint32_t first_sequence) {
  JitterBufferOptions options;
  options.min_delay_frames = 3;
  JitterBuffer buffer = make(options);
  constexpr int kPackets = 60;
  std::vector<std::pair<int64_t, uint32_t>> arrivals;
  for (int k = 0; k < kPackets; ++k) {
    arrivals.push_back({frame_time_us(k ^ 1), first_sequence + static_cast<uint32_t>(k)});
  }
  std::sort(arrivals.begin(), arrivals.end());
  std::vector<uint32_t> played;
  size_t arrived = 0;
  // Playout starts at slot 2 (1, 0 and 3 are in), so slot kPackets + 1 plays the last.
  for (int slot_index = 0; slot_index < kPackets + 2; ++slot_index) {
    const int64_t slot_us = frame_time_us(slot_index + 0.5);
    for (; arrived < arrivals.size() && arrivals[arrived].first <= slot_us; ++arrived) {
      ASSERT_EQ(insert_at(buffer, arrivals[arrived].first, arrivals[arrived].second),
                Insert::kAccepted);
    }
    JitterBuffer::Slot slot;
    const Playout playout = next_at(buffer, slot_us, &slot);
    if (playout == Playout::kFrame) {
      ASSERT_TRUE(slot_carries(slot, slot.sequence));
      played.push_back(slot.sequence);
    }
  }
  ASSERT_EQ(played.size(), size_t{kPackets});
  for (int k = 0; k < kPackets; ++k) EXPECT_EQ(played[k], first_sequence + k);
  EXPECT_EQ(buffer.stats().concealed + buffer.stats().stretched, 0u);
  EXPECT_EQ(buffer.next_sequence(), first_sequence + kPackets);
}

TEST_F(JitterBufferTest, InOrderStreamPlaysEveryFrameAfterTheInitialDelay) {
  for (const int min_delay_frames : {1, 3}) {
    SCOPED_TRACE(min_delay_frames);
    JitterBufferOptions options;
    options.min_delay_frames = min_delay_frames;
    JitterBuffer buffer = make(options);
    constexpr int kPackets = 300;
    // Packet k arrives at frame k, and the player asks right after it: slot k
    // plays the frame that has waited min_delay_frames.
    for (int k = 0; k < kPackets; ++k) {
      ASSERT_EQ(insert_at(buffer, frame_time_us(k), 5000 + k), Insert::kAccepted);
      JitterBuffer::Slot slot;
      const Playout playout = next_at(buffer, frame_time_us(k), &slot);
      if (k < min_delay_frames) {
        ASSERT_EQ(playout, Playout::kWaiting) << k;
        ASSERT_FALSE(buffer.started());
        continue;
      }
      ASSERT_EQ(playout, Playout::kFrame) << k;
      ASSERT_EQ(slot.sequence, 5000u + k - min_delay_frames);
      ASSERT_TRUE(slot_carries(slot, slot.sequence));
      ASSERT_EQ(buffer.pending_frames(), min_delay_frames);
    }
    const JitterBufferStats stats = buffer.stats();
    EXPECT_EQ(stats.inserted, uint64_t{kPackets});
    EXPECT_EQ(stats.played, static_cast<uint64_t>(kPackets - min_delay_frames));
    EXPECT_EQ(stats.concealed + stats.stretched + stats.discarded + stats.skipped_concealments, 0u);
    // No jitter: the percentile adds nothing to the one frame of margin.
    EXPECT_EQ(stats.target_delay_frames, std::max(1, min_delay_frames));
    EXPECT_EQ(stats.depth_frames, min_delay_frames);
    EXPECT_NEAR(stats.jitter_ms, 0.0, 1e-3);  // arrival times are rounded to microseconds
  }
}

// The streaming encoder's first 7 frames leave together (its start delay):
// the playout starts 6 frames late and must not keep that delay for long.
// A player that sets its own clock (a file) ticks at due_time_us(): the band's
// lower edge, the fastest arrival plus the target less half a frame. Just
// before it the slot is a stretch; at it the frame plays, having waited half a
// frame after a packet on time and less after a jittered one, never more.
TEST_F(JitterBufferTest, APlayerTickingAtTheDueTimePlaysEveryFrameAtTheBandsLowerEdge) {
  JitterBuffer buffer = make(JitterBufferOptions{});
  constexpr int kPackets = 200, kCalmPackets = 100;
  constexpr int64_t kTransitUs = 1700, kJitterUs = 3000;
  UnitRandom random(11);
  std::vector<int64_t> arrival(kPackets);
  for (int k = 0; k < kPackets; ++k) {
    const int64_t jitter_us = k < kCalmPackets ? 0 : std::llround(kJitterUs * random());
    arrival[k] = frame_time_us(k) + kTransitUs + jitter_us;
  }
  int arrived = 0;
  const auto arrive_until = [&](int64_t time_us) {
    for (; arrived < kPackets && arrival[arrived] <= time_us; ++arrived) {
      ASSERT_EQ(insert_at(buffer, arrival[arrived], static_cast<uint32_t>(arrived)), Insert::kAccepted);
    }
  };
  // Until playout starts, ticks at an arbitrary phase.
  JitterBuffer::Slot slot;
  int64_t tick_us = frame_time_us(0.3);
  for (; !buffer.started(); tick_us += frame_time_us(1)) {
    arrive_until(tick_us);
    next_at(buffer, tick_us, &slot);
  }
  const uint32_t first_due = buffer.next_sequence();
  ASSERT_LE(first_due, 2u);
  for (uint32_t k = first_due; k < kPackets; ++k) {
    SCOPED_TRACE(k);
    // Every packet of the window is on time or later, and the calm ones are in
    // it (150 packets): its fastest is the transit time; the target stays one
    // frame (3 ms of jitter is under half a frame).
    const double expected_due_us = k * kFrameUs + kTransitUs + 0.5 * kFrameUs;
    // (Packets arriving until then may move the fastest by the clock's rounding.)
    arrive_until(buffer.due_time_us());
    const int64_t due_us = buffer.due_time_us();
    ASSERT_NEAR(static_cast<double>(due_us), expected_due_us, 1.5);
    const uint64_t stretched = buffer.stats().stretched;
    ASSERT_EQ(next_at(buffer, due_us - 2, &slot), Playout::kConceal);
    ASSERT_EQ(buffer.stats().stretched, stretched + 1);
    ASSERT_EQ(buffer.next_sequence(), k);
    ASSERT_EQ(next_at(buffer, due_us, &slot), Playout::kFrame);
    ASSERT_EQ(slot.sequence, k);
    ASSERT_TRUE(slot_carries(slot, k));
    const int64_t waited_us = due_us - arrival[k];
    ASSERT_LE(waited_us, frame_time_us(0.5) + 2);
    if (k < kCalmPackets) ASSERT_GE(waited_us, frame_time_us(0.5) - 2);
  }
  EXPECT_EQ(buffer.stats().concealed, 0u);
  EXPECT_EQ(buffer.stats().target_delay_frames, 1);
}

TEST_F(JitterBufferTest, SenderStartBurstShrinksBackQuickly) {
  JitterBuffer buffer = make(JitterBufferOptions{});
  constexpr int kBurst = 7, kFrames = 120;
  int64_t worst_delay_us = 0;  // once the burst is played
  for (int tick = kBurst - 1; tick < kFrames; ++tick) {
    const int64_t now_us = frame_time_us(tick);
    if (tick == kBurst - 1) {
      for (int k = 0; k < kBurst; ++k) ASSERT_EQ(insert_at(buffer, now_us, k), Insert::kAccepted);
    } else {
      ASSERT_EQ(insert_at(buffer, now_us, static_cast<uint32_t>(tick)), Insert::kAccepted);
    }
    JitterBuffer::Slot slot;
    Playout playout = next_at(buffer, now_us + 100, &slot);
    while (playout == Playout::kDiscard) playout = next_at(buffer, now_us + 100, &slot);
    ASSERT_NE(playout, Playout::kConceal) << tick;
    if (playout == Playout::kFrame) {
      // Frame s arrived at frame time max(s, 6): how long it waited.
      const int64_t delay_us = now_us - frame_time_us(std::max<int>(slot.sequence, kBurst - 1));
      if (tick > kBurst) worst_delay_us = std::max(worst_delay_us, delay_us);
    }
  }
  const JitterBufferStats stats = buffer.stats();
  // The burst is decoded and dropped at the start down to the target (one
  // frame): from then on no frame waits more than the target, and none is lost.
  // (The start may come one slot late: before it, the burst counts as jitter.)
  EXPECT_GE(stats.discarded, static_cast<uint64_t>(kBurst - 2));
  EXPECT_LE(stats.discarded, static_cast<uint64_t>(kBurst - 1));
  EXPECT_EQ(stats.target_delay_frames, 1);
  EXPECT_EQ(stats.concealed + stats.stretched, 0u);
  EXPECT_LE(worst_delay_us, frame_time_us(stats.target_delay_frames) + 100);
  EXPECT_EQ(stats.played + stats.discarded, static_cast<uint64_t>(buffer.next_sequence()));
}

TEST_F(JitterBufferTest, FirstPacketPlaysOnceItHasWaitedTheTargetThenSilenceIsConcealed) {
  JitterBufferOptions options;
  options.min_delay_frames = 2;
  JitterBuffer buffer = make(options);
  JitterBuffer::Slot slot;
  EXPECT_EQ(next_at(buffer, 0, &slot), Playout::kWaiting);  // nothing inserted yet
  const int64_t arrival_us = 1000;
  ASSERT_EQ(insert_at(buffer, arrival_us, 77), Insert::kAccepted);
  const int64_t ready_us = arrival_us + static_cast<int64_t>(std::ceil(2 * kFrameUs));
  EXPECT_EQ(next_at(buffer, ready_us - 1, &slot), Playout::kWaiting);
  EXPECT_FALSE(buffer.started());
  ASSERT_EQ(next_at(buffer, ready_us, &slot), Playout::kFrame);
  EXPECT_TRUE(buffer.started());
  EXPECT_EQ(slot.sequence, 77u);
  EXPECT_TRUE(slot_carries(slot, 77));
  // The sender stopped: the slots go on, concealed, past the highest sequence.
  for (uint32_t sequence = 78; sequence < 90; ++sequence) {
    ASSERT_EQ(next_at(buffer, ready_us + frame_time_us(sequence - 77), &slot), Playout::kConceal);
    ASSERT_EQ(slot.sequence, sequence);
    ASSERT_EQ(slot.payload, nullptr);
  }
  EXPECT_EQ(buffer.pending_frames(), 0);
  EXPECT_EQ(buffer.next_sequence(), 90u);
  EXPECT_EQ(buffer.stats().concealed, 12u);
  EXPECT_EQ(buffer.stats().stretched, 0u);
}

TEST_F(JitterBufferTest, DuplicatesAreCountedAndPlayedOnce) {
  JitterBuffer buffer = make(options_);
  EXPECT_EQ(insert_at(buffer, 0, 10), Insert::kAccepted);
  EXPECT_EQ(insert_at(buffer, 100, 10), Insert::kDuplicate);  // while buffered
  EXPECT_EQ(insert_at(buffer, frame_time_us(1), 11), Insert::kAccepted);
  JitterBuffer::Slot slot;
  ASSERT_EQ(next_at(buffer, frame_time_us(1), &slot), Playout::kFrame);
  EXPECT_EQ(slot.sequence, 10u);
  EXPECT_EQ(insert_at(buffer, frame_time_us(1.5), 10), Insert::kDuplicate);  // after playing
  EXPECT_EQ(insert_at(buffer, frame_time_us(1.6), 11), Insert::kDuplicate);
  ASSERT_EQ(next_at(buffer, frame_time_us(2), &slot), Playout::kFrame);
  EXPECT_EQ(slot.sequence, 11u);
  ASSERT_EQ(next_at(buffer, frame_time_us(3), &slot), Playout::kConceal);
  EXPECT_EQ(slot.sequence, 12u);
  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.inserted, 2u);
  EXPECT_EQ(stats.duplicates, 3u);
  EXPECT_EQ(stats.played, 2u);
  EXPECT_EQ(stats.late, 0u);
}

TEST_F(JitterBufferTest, ReorderedPacketsWithinTheDelayPlayInOrder) {
  expect_swapped_pairs_play_in_order(1000);
}

TEST_F(JitterBufferTest, SequencesWrapAroundPastUint32Max) {
  expect_swapped_pairs_play_in_order(std::numeric_limits<uint32_t>::max() - 20);
}

TEST_F(JitterBufferTest, MissingPacketIsConcealedAndItsLateArrivalRaisesTheTarget) {
  JitterBuffer buffer = make(options_);
  JitterBuffer::Slot slot;
  // Packet k arrives at frame k and slot k plays k - 1, but packet kMissing
  // comes only at frame kMissing + 3.5. The run-in fills the delay window with
  // on-time packets, so the one late packet is outside its 95th percentile.
  constexpr int kMissing = 200;
  for (int k = 0; k <= kMissing + 3; ++k) {
    if (k != kMissing) {
      ASSERT_EQ(insert_at(buffer, frame_time_us(k), k), Insert::kAccepted);
    }
    const Playout playout = next_at(buffer, frame_time_us(k), &slot);
    if (k == 0) continue;
    ASSERT_EQ(playout, k == kMissing + 1 ? Playout::kConceal : Playout::kFrame) << k;
    ASSERT_EQ(slot.sequence, uint32_t(k - 1));
  }
  EXPECT_EQ(buffer.stats().target_delay_frames, 1);
  const int64_t late_arrival_us = frame_time_us(kMissing + 3.5);
  EXPECT_EQ(insert_at(buffer, late_arrival_us, kMissing), Insert::kLate);
  EXPECT_EQ(insert_at(buffer, late_arrival_us + 10, kMissing), Insert::kDuplicate);  // once
  // Its relative delay (against the others, which came on time) needs this many frames.
  const double relative_delay_us = static_cast<double>(late_arrival_us) - kMissing * kFrameUs;
  const int expected_target = static_cast<int>(std::ceil(relative_delay_us / kFrameUs + 0.5));
  EXPECT_EQ(expected_target, 4);
  EXPECT_EQ(buffer.stats().target_delay_frames, expected_target);

  // Slot kMissing + 4 is due to play kMissing + 3, one frame after its nominal
  // time. The delay grows by stretching (the playout point holds) until it is
  // within half a frame of the target: at delays 1, 2 and 3 frames.
  const uint32_t due = kMissing + 3;
  int k = kMissing + 4;
  ASSERT_EQ(insert_at(buffer, frame_time_us(k), k), Insert::kAccepted);
  int stretches = 0;
  for (;; ++k) {
    const Playout playout = next_at(buffer, frame_time_us(k), &slot);
    if (playout == Playout::kFrame) {
      EXPECT_EQ(slot.sequence, due);
      break;
    }
    ASSERT_EQ(playout, Playout::kConceal);
    EXPECT_EQ(slot.sequence, due);
    EXPECT_EQ(buffer.next_sequence(), due);
    ASSERT_LT(++stretches, 10);
  }
  EXPECT_EQ(stretches, expected_target - 1);
  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.stretched, static_cast<uint64_t>(expected_target - 1));
  EXPECT_EQ(stats.concealed, 1u);
  EXPECT_EQ(stats.late, 1u);
  EXPECT_EQ(stats.duplicates, 1u);
  EXPECT_EQ(stats.played, uint64_t{kMissing + 3});  // 0..kMissing + 3 but kMissing

  // The boost holds while the late packet is in the window: it leaves it with
  // the delay_window_packets-th arrival after it (kMissing + 4 was the first).
  for (int after = 2; after <= options_.delay_window_packets; ++after) {
    ++k;
    ASSERT_EQ(insert_at(buffer, frame_time_us(k), k), Insert::kAccepted);
    next_at(buffer, frame_time_us(k), &slot);
    ASSERT_EQ(buffer.stats().target_delay_frames,
              after < options_.delay_window_packets ? expected_target : 1)
        << after;
  }
}

TEST_F(JitterBufferTest, PacketsTooFarAheadAreRefused) {
  JitterBuffer buffer = make(options_);
  const uint32_t first = 1000;
  const uint32_t capacity = static_cast<uint32_t>(options_.capacity_frames);
  EXPECT_EQ(insert_at(buffer, 0, first), Insert::kAccepted);
  EXPECT_EQ(insert_at(buffer, 1, first + capacity), Insert::kTooFarAhead);
  EXPECT_EQ(insert_at(buffer, 2, first + capacity - 1), Insert::kAccepted);
  EXPECT_EQ(buffer.pending_frames(), options_.capacity_frames);
  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.too_far_ahead, 1u);
  EXPECT_EQ(stats.inserted, 2u);
  EXPECT_EQ(stats.depth_frames, 2);
}

TEST_F(JitterBufferTest, OversizedPayloadsAreRefused) {
  JitterBufferOptions options;
  options.max_payload_bytes = 16;
  JitterBuffer buffer = make(options);
  std::vector<uint8_t> bytes(17, 0xab);
  EXPECT_EQ(buffer.insert(3, bytes.data(), bytes.size()), Insert::kTooLarge);
  EXPECT_EQ(buffer.stats().too_large, 1u);
  EXPECT_EQ(buffer.stats().inserted, 0u);
  bytes.pop_back();
  EXPECT_EQ(buffer.insert(3, bytes.data(), bytes.size()), Insert::kAccepted);
  JitterBuffer::Slot slot;
  ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kFrame);
  ASSERT_EQ(slot.size, bytes.size());
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), slot.payload));
}

TEST_F(JitterBufferTest, NextInOrderConcealsOnlyWithTheReorderWindowOrAtTheEnd) {
  JitterBuffer buffer = make(options_);  // reorder_window_frames = 4
  ASSERT_EQ(options_.reorder_window_frames, 4);
  JitterBuffer::Slot slot;
  EXPECT_EQ(buffer.next_in_order(&slot, false), Playout::kWaiting);
  for (uint32_t sequence : {0u, 1u}) insert_at(buffer, 0, sequence);
  for (uint32_t sequence : {0u, 1u}) {
    ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kFrame);
    EXPECT_EQ(slot.sequence, sequence);
  }
  // 2 is missing: three later frames are not enough, the fourth is.
  for (uint32_t sequence : {3u, 4u, 5u}) {
    insert_at(buffer, 0, sequence);
    EXPECT_EQ(buffer.next_in_order(&slot, false), Playout::kWaiting) << sequence;
  }
  insert_at(buffer, 0, 6);
  ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kConceal);
  EXPECT_EQ(slot.sequence, 2u);
  for (uint32_t sequence = 3; sequence <= 6; ++sequence) {
    ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kFrame);
    EXPECT_EQ(slot.sequence, sequence);
    EXPECT_TRUE(slot_carries(slot, sequence));
  }
  // 7 and 8 are missing, 9 is in: only the end of the stream gives up on them.
  insert_at(buffer, 0, 9);
  EXPECT_EQ(buffer.next_in_order(&slot, false), Playout::kWaiting);
  ASSERT_EQ(buffer.next_in_order(&slot, true), Playout::kConceal);
  EXPECT_EQ(slot.sequence, 7u);
  ASSERT_EQ(buffer.next_in_order(&slot, true), Playout::kConceal);
  EXPECT_EQ(slot.sequence, 8u);
  ASSERT_EQ(buffer.next_in_order(&slot, true), Playout::kFrame);
  EXPECT_EQ(slot.sequence, 9u);
  // Nothing later is in: nothing to conceal, even at the end.
  EXPECT_EQ(buffer.next_in_order(&slot, true), Playout::kWaiting);
  EXPECT_EQ(insert_at(buffer, 0, 8), Insert::kLate);
  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.played, 7u);
  EXPECT_EQ(stats.concealed, 3u);
  EXPECT_EQ(stats.late, 1u);
}

TEST_F(JitterBufferTest, PacketsBehindTheKeptHistoryAreTooOld) {
  JitterBufferOptions options;
  options.capacity_frames = 16;
  options.max_delay_frames = 8;
  JitterBuffer buffer = make(options);
  ASSERT_EQ(insert_at(buffer, 0, 100), Insert::kAccepted);
  JitterBuffer::Slot slot;
  ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kFrame);
  EXPECT_EQ(insert_at(buffer, 1, 99), Insert::kLate);  // before the first, once started
  for (uint32_t sequence = 101; sequence <= 140; ++sequence) {
    insert_at(buffer, 2, sequence);
    ASSERT_EQ(buffer.next_in_order(&slot, false), Playout::kFrame);
  }
  ASSERT_EQ(buffer.next_sequence(), 141u);
  EXPECT_EQ(insert_at(buffer, 3, 110), Insert::kLate);       // 31 behind a 16-entry history
  EXPECT_EQ(insert_at(buffer, 3, 130), Insert::kDuplicate);  // still in it
  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.too_old, 2u);
  EXPECT_EQ(stats.late, 0u);
  EXPECT_EQ(stats.duplicates, 1u);
}

TEST_F(JitterBufferTest, InvalidOptionsAreRejected) {
  auto with = [](auto change) {
    JitterBufferOptions options;
    change(options);
    return options;
  };
  FakeClock clock;
  const JitterBufferOptions invalid[] = {
      with([](JitterBufferOptions& o) { o.frame_duration_us = 0; }),
      with([](JitterBufferOptions& o) { o.min_delay_frames = 30; }),
      with([](JitterBufferOptions& o) { o.capacity_frames = o.max_delay_frames; }),
      with([](JitterBufferOptions& o) { o.delay_window_packets = 0; }),
      with([](JitterBufferOptions& o) { o.reorder_window_frames = 0; }),
  };
  for (const JitterBufferOptions& options : invalid) {
    EXPECT_THROW(JitterBuffer(options, clock.clock()), std::invalid_argument);
  }
  EXPECT_THROW(JitterBuffer(JitterBufferOptions{}, ClockUs{}), std::invalid_argument);
}

TEST_F(JitterBufferTest, JitterFollowsRfc3550) {
  JitterBuffer buffer = make(options_);
  // Transit time alternating between 0 and 6 ms: |D| = 6 ms from the second
  // packet on, and J moves a sixteenth of the way to it each time.
  double expected_ms = 0.0;
  for (int k = 0; k < 50; ++k) {
    insert_at(buffer, frame_time_us(k) + (k % 2) * 6000, k);
    if (k > 0) expected_ms += (6.0 - expected_ms) / 16.0;
    ASSERT_NEAR(buffer.stats().jitter_ms, expected_ms, 2e-3) << k;
  }
}

TEST_F(JitterBufferTest, ResetStartsOver) {
  JitterBuffer buffer = make(options_);
  insert_at(buffer, 0, 7);
  insert_at(buffer, frame_time_us(1), 8);
  JitterBuffer::Slot slot;
  ASSERT_EQ(next_at(buffer, frame_time_us(1), &slot), Playout::kFrame);
  buffer.reset();
  EXPECT_FALSE(buffer.started());
  EXPECT_EQ(buffer.pending_frames(), 0);
  EXPECT_EQ(buffer.stats().played, 0u);
  EXPECT_EQ(buffer.stats().depth_frames, 0);
  EXPECT_EQ(next_at(buffer, frame_time_us(2), &slot), Playout::kWaiting);
  // A new stream at another sequence, earlier than the old one.
  EXPECT_EQ(insert_at(buffer, frame_time_us(3), 2), Insert::kAccepted);
  EXPECT_EQ(next_at(buffer, frame_time_us(4.1), &slot), Playout::kFrame);  // waited a frame
  EXPECT_EQ(slot.sequence, 2u);
}

// A packet schedule replayed against a buffer: arrivals in time order (ties in
// the order given), slots once per frame period at first_slot_us + s frames
// (arrivals at the same time go first), a kDiscard followed by another next().
struct Arrival {
  int64_t time_us;
  uint32_t sequence;
};

struct SlotRecord {
  Playout playout;
  uint32_t sequence;
  bool stretch;
  int64_t time_us;
};

struct InsertRecord {
  int64_t time_us;
  uint32_t sequence;
  Insert result;
};

class Replay {
 public:
  Replay(JitterBufferOptions options, std::vector<Arrival> arrivals, double first_slot_us)
      : buffer_(options, clock_.clock()),
        arrivals_(std::move(arrivals)),
        first_slot_us_(first_slot_us) {
    std::stable_sort(arrivals_.begin(), arrivals_.end(),
                     [](const Arrival& a, const Arrival& b) { return a.time_us < b.time_us; });
    payloads_.reserve(arrivals_.size());
    for (const Arrival& arrival : arrivals_) payloads_.push_back(payload_of(arrival.sequence));
    slots_.reserve(arrivals_.size() * 3);
    inserts_.reserve(arrivals_.size());
  }

  // Everything up to and including `until_us`.
  void run_until(int64_t until_us) {
    for (;;) {
      const int64_t slot_us = std::llround(first_slot_us_ + next_slot_ * kFrameUs);
      if (slot_us > until_us) break;
      for (; next_arrival_ < arrivals_.size() && arrivals_[next_arrival_].time_us <= slot_us;
           ++next_arrival_) {
        const Arrival& arrival = arrivals_[next_arrival_];
        clock_.now_us = arrival.time_us;
        const std::vector<uint8_t>& bytes = payloads_[next_arrival_];
        inserts_.push_back({arrival.time_us, arrival.sequence,
                            buffer_.insert(arrival.sequence, bytes.data(), bytes.size())});
      }
      clock_.now_us = slot_us;
      for (;;) {
        const uint64_t stretched_before = buffer_.stats().stretched;
        JitterBuffer::Slot slot;
        const Playout playout = buffer_.next(&slot);
        if (playout == Playout::kFrame || playout == Playout::kDiscard) {
          payload_mismatches_ += slot_carries(slot, slot.sequence) ? 0 : 1;
        }
        if (playout != Playout::kWaiting) {
          slots_.push_back(
              {playout, slot.sequence, buffer_.stats().stretched != stretched_before, slot_us});
        }
        if (playout != Playout::kDiscard) break;
      }
      ++next_slot_;
    }
  }

  JitterBuffer& buffer() { return buffer_; }
  const std::vector<SlotRecord>& slots() const { return slots_; }
  const std::vector<InsertRecord>& inserts() const { return inserts_; }
  int payload_mismatches() const { return payload_mismatches_; }

 private:
  FakeClock clock_;
  JitterBuffer buffer_;
  std::vector<Arrival> arrivals_;
  std::vector<std::vector<uint8_t>> payloads_;
  double first_slot_us_;
  size_t next_arrival_ = 0;
  int64_t next_slot_ = 0;
  std::vector<SlotRecord> slots_;
  std::vector<InsertRecord> inserts_;
  int payload_mismatches_ = 0;
};

// Sequences as offsets from `base`, for schedules that cross the wrap.
int64_t offset_from(uint32_t base, uint32_t sequence) {
  return static_cast<int32_t>(sequence - base);
}

TEST(JitterBufferScheduleTest, EverySequenceIsAccountedForOnceUnderLossReorderDuplicationJitter) {
  // Starts 1500 before the wrap so the schedule crosses it.
  const uint32_t base = std::numeric_limits<uint32_t>::max() - 1500;
  constexpr int kPackets = 6000;
  UnitRandom unit(20240611);
  std::vector<Arrival> arrivals;
  for (int k = 0; k < kPackets; ++k) {
    if (k >= 3000 && k < 3040) continue;  // an outage
    if (unit() < 0.08) continue;          // loss
    double delay_ms = 30.0 * unit();
    if (unit() < 0.03) delay_ms += 100.0 + 300.0 * unit();  // spikes: late packets
    const uint32_t sequence = base + static_cast<uint32_t>(k);
    arrivals.push_back({frame_time_us(k) + std::llround(delay_ms * 1000), sequence});
    if (unit() < 0.05) {  // a duplicate, up to 200 ms after
      arrivals.push_back({arrivals.back().time_us + std::llround(200000 * unit()), sequence});
    }
  }
  int64_t last_arrival_us = 0;
  for (const Arrival& arrival : arrivals)
    last_arrival_us = std::max(last_arrival_us, arrival.time_us);

  Replay replay(JitterBufferOptions{}, arrivals, 0.37 * kFrameUs);
  replay.run_until(last_arrival_us + frame_time_us(60));
  JitterBuffer& buffer = replay.buffer();
  EXPECT_EQ(replay.payload_mismatches(), 0);

  // What each insert returned, and when each sequence was first accepted.
  std::map<int64_t, int64_t> accepted_at_us;
  std::map<int64_t, int> late_arrivals;
  uint64_t accepted = 0, duplicates = 0, late = 0;
  for (const InsertRecord& record : replay.inserts()) {
    const int64_t offset = offset_from(base, record.sequence);
    switch (record.result) {
      case Insert::kAccepted:
        ++accepted;
        EXPECT_TRUE(accepted_at_us.emplace(offset, record.time_us).second) << offset;
        break;
      case Insert::kDuplicate:
        ++duplicates;
        EXPECT_TRUE(accepted_at_us.count(offset) || late_arrivals.count(offset)) << offset;
        break;
      case Insert::kLate:
        ++late;
        EXPECT_EQ(++late_arrivals[offset], 1) << offset;
        break;
      default:
        ADD_FAILURE() << "refused " << offset;
    }
  }

  // Walk the slots: the passed sequences are contiguous from the first, each
  // once; the ones jumped over are the skipped concealments.
  ASSERT_FALSE(replay.slots().empty());
  std::map<int64_t, Playout> outcome;  // kConceal also for skipped
  std::map<int64_t, int64_t> passed_at_us;
  int64_t expected = -1;
  uint64_t played = 0, discarded = 0, concealed = 0, skipped = 0, stretched = 0;
  for (const SlotRecord& slot : replay.slots()) {
    const int64_t offset = offset_from(base, slot.sequence);
    if (slot.stretch) {
      ASSERT_EQ(slot.playout, Playout::kConceal);
      ++stretched;
      continue;
    }
    if (expected < 0) expected = offset;
    ASSERT_GE(offset, expected) << "a sequence passed twice";
    for (; expected < offset; ++expected, ++skipped) {
      outcome[expected] = Playout::kConceal;
      passed_at_us[expected] = slot.time_us;
    }
    outcome[offset] = slot.playout;
    passed_at_us[offset] = slot.time_us;
    ++expected;
    played += slot.playout == Playout::kFrame;
    discarded += slot.playout == Playout::kDiscard;
    concealed += slot.playout == Playout::kConceal;
  }
  // Playout started from the earliest sequence that came before it.
  const int64_t start_us = replay.slots().front().time_us;
  int64_t earliest = std::numeric_limits<int64_t>::max();
  for (const auto& [offset, time_us] : accepted_at_us) {
    if (time_us <= start_us) earliest = std::min(earliest, offset);
  }
  EXPECT_EQ(outcome.begin()->first, earliest);
  EXPECT_EQ(expected, offset_from(base, buffer.next_sequence()));

  const JitterBufferStats stats = buffer.stats();
  EXPECT_EQ(stats.played, played);
  EXPECT_EQ(stats.discarded, discarded);
  EXPECT_EQ(stats.concealed, concealed);
  EXPECT_EQ(stats.skipped_concealments, skipped);
  EXPECT_EQ(stats.stretched, stretched);
  EXPECT_EQ(stats.played + stats.discarded + stats.concealed + stats.skipped_concealments,
            static_cast<uint64_t>(expected - earliest));
  EXPECT_EQ(stats.inserted, accepted);
  EXPECT_EQ(stats.duplicates, duplicates);
  EXPECT_EQ(stats.late, late);
  EXPECT_EQ(stats.too_old + stats.too_far_ahead + stats.too_large, 0u);

  // Played frames had come; concealed ones had not (and then came late, or never).
  uint64_t never_arrived = 0;
  for (const auto& [offset, playout] : outcome) {
    const bool was_accepted = accepted_at_us.count(offset) > 0;
    if (playout == Playout::kConceal) {
      EXPECT_FALSE(was_accepted) << offset;
      never_arrived += late_arrivals.count(offset) == 0;
    } else {
      ASSERT_TRUE(was_accepted) << offset;
      EXPECT_LE(accepted_at_us[offset], passed_at_us[offset]) << offset;
    }
  }
  for (const auto& [offset, count] : late_arrivals) {
    ASSERT_TRUE(outcome.count(offset)) << offset;
    EXPECT_EQ(outcome[offset], Playout::kConceal) << offset;
  }
  EXPECT_EQ(stats.concealed + stats.skipped_concealments - stats.late, never_arrived);
  // The schedule exercised every path.
  EXPECT_GT(stats.late, 20u);
  EXPECT_GT(stats.duplicates, 100u);
  EXPECT_GT(stats.stretched, 0u);
  EXPECT_GT(stats.discarded + stats.skipped_concealments, 0u);
}

// The target delay the header specifies, for the relative delays of the last
// `window` measured arrivals (offset = arrival - sequence * frame).
int percentile_target(std::vector<double> offsets_us, const JitterBufferOptions& options) {
  const double fastest = *std::min_element(offsets_us.begin(), offsets_us.end());
  std::sort(offsets_us.begin(), offsets_us.end());
  const size_t rank = static_cast<size_t>(std::ceil(0.95 * offsets_us.size())) - 1;
  // Plus half a frame, rounded up to frames, to within the clock's microsecond.
  const int frames = static_cast<int>(std::ceil((offsets_us[rank] - fastest - 1.0) / kFrameUs + 0.5));
  return std::clamp(frames, options.min_delay_frames, options.max_delay_frames);
}

TEST(JitterBufferScheduleTest, TargetDelayGrowsWithJitterAndShrinksBackWhenItStops) {
  // Packets 0..999 on time, 1000..2999 with uniform 0..43 ms of extra delay,
  // 3000..4999 on time again. 43 ms puts a frame boundary (3 frames, 40 ms)
  // between the 90th and the 95th percentiles: the 95th it must be.
  constexpr int kCalmEnd = 1000, kJitterEnd = 3000, kPackets = 5000;
  UnitRandom unit(99);
  std::vector<Arrival> arrivals;
  for (int k = 0; k < kPackets; ++k) {
    const double extra_ms = k >= kCalmEnd && k < kJitterEnd ? 43.0 * unit() : 0.0;
    arrivals.push_back({frame_time_us(k) + std::llround(extra_ms * 1000), uint32_t(k)});
  }
  const JitterBufferOptions options;
  Replay replay(options, arrivals, 0.5 * kFrameUs);
  auto measured_offsets = [&] {
    std::vector<double> offsets_us;
    for (const InsertRecord& record : replay.inserts()) {
      if (record.result == Insert::kAccepted || record.result == Insert::kLate) {
        offsets_us.push_back(static_cast<double>(record.time_us) - record.sequence * kFrameUs);
      }
    }
    return offsets_us;
  };
  auto last_window = [&](const std::vector<double>& offsets_us) {
    const size_t window = static_cast<size_t>(options.delay_window_packets);
    return std::vector<double>(offsets_us.end() - std::min(window, offsets_us.size()),
                               offsets_us.end());
  };
  auto frames_in = [&](int first, int end, Playout playout) {
    int count = 0;
    for (const SlotRecord& slot : replay.slots()) {
      const int64_t sequence = slot.sequence;
      count += !slot.stretch && slot.playout == playout && sequence >= first && sequence < end;
    }
    return count;
  };

  // No jitter: the minimum delay, every frame played, none stretched.
  replay.run_until(frame_time_us(kCalmEnd - 0.5));
  EXPECT_EQ(replay.buffer().stats().target_delay_frames, options.min_delay_frames);
  EXPECT_EQ(replay.buffer().stats().stretched, 0u);
  EXPECT_EQ(frames_in(0, kCalmEnd - 2, Playout::kFrame), kCalmEnd - 2);

  // Jitter: the target covers the 95th percentile of the window, and is exactly
  // it when no late packet in the window boosts it. Few frames are missed.
  replay.run_until(frame_time_us(kJitterEnd - 0.5));
  const std::vector<double> offsets_us = measured_offsets();
  const int percentile_frames = percentile_target(last_window(offsets_us), options);
  EXPECT_EQ(percentile_frames, 4);  // 95% of 43 ms is 3.06 frames, plus a half: 4
  const JitterBufferStats jittered = replay.buffer().stats();
  EXPECT_GE(jittered.target_delay_frames, percentile_frames);
  const double spread_us = *std::max_element(offsets_us.begin(), offsets_us.end()) -
                           *std::min_element(offsets_us.begin(), offsets_us.end());
  EXPECT_LE(jittered.target_delay_frames, static_cast<int>(std::ceil(spread_us / kFrameUs + 0.5)));
  bool late_in_window = false;
  for (size_t i = replay.inserts().size() - options.delay_window_packets;
       i < replay.inserts().size(); ++i) {
    late_in_window |= replay.inserts()[i].result == Insert::kLate;
  }
  if (!late_in_window) {
    EXPECT_EQ(jittered.target_delay_frames, percentile_frames);
  }
  EXPECT_GT(jittered.stretched, 0u);
  EXPECT_LT(frames_in(kCalmEnd + 100, kJitterEnd - 10, Playout::kConceal), 20);
  EXPECT_NEAR(jittered.jitter_ms, 43.0 / 3.0, 5.0);  // E|X - Y| for X, Y uniform on [0, 43]

  // Calm again: back to the minimum target, and the delay shrinks to it by
  // dropping frames, without a single concealment.
  replay.run_until(frame_time_us(kPackets - 0.5));
  const JitterBufferStats calm = replay.buffer().stats();
  EXPECT_EQ(calm.target_delay_frames, options.min_delay_frames);
  EXPECT_EQ(frames_in(kJitterEnd, kPackets, Playout::kConceal), 0);
  EXPECT_GT(calm.discarded + calm.skipped_concealments,
            jittered.discarded + jittered.skipped_concealments);
  const SlotRecord& last = replay.slots().back();
  ASSERT_EQ(last.playout, Playout::kFrame);
  const double latency_frames = (last.time_us - last.sequence * kFrameUs) / kFrameUs;
  EXPECT_GE(latency_frames, options.min_delay_frames - 0.5);
  EXPECT_LT(latency_frames, options.min_delay_frames + 1.5);
}

TEST(JitterBufferScheduleTest, PlayoutAllocatesNothingAfterConstruction) {
  UnitRandom unit(5);
  std::vector<Arrival> arrivals;
  for (int k = 0; k < 3000; ++k) {
    if (unit() < 0.05) continue;
    arrivals.push_back({frame_time_us(k) + std::llround(60000 * unit() * unit()), uint32_t(k)});
    if (unit() < 0.05) arrivals.push_back({arrivals.back().time_us + 5000, uint32_t(k)});
  }
  Replay replay(JitterBufferOptions{}, arrivals, 0.25 * kFrameUs);
  allocations = 0;
  counting_allocations = true;
  replay.run_until(frame_time_us(3100));
  counting_allocations = false;
  EXPECT_EQ(allocations.load(), 0);
  EXPECT_GT(replay.buffer().stats().played, 2500u);
}

}  // namespace
}  // namespace encodec::net
