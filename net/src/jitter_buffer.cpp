#include "encodec/net/jitter_buffer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace encodec::net {

int64_t steady_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
namespace {

constexpr int kMaxCapacityFrames = 1 << 16;

size_t power_of_two_at_least(int count) {
  size_t size = 1;
  while (size < static_cast<size_t>(count)) size <<= 1;
  return size;
}

void validate(const JitterBufferOptions& options) {
  const bool valid = options.frame_duration_us > 0.0 && options.min_delay_frames >= 0 &&
                     options.min_delay_frames <= options.max_delay_frames &&
                     options.max_delay_frames < options.capacity_frames &&
                     options.capacity_frames <= kMaxCapacityFrames &&
                     options.delay_window_packets >= 1 && options.shrink_after_frames >= 1 &&
                     options.fast_shrink_after_frames >= 1 && options.fast_shrink_excess_frames >= 2 &&
                     options.reorder_window_frames >= 1;
  if (!valid) throw std::invalid_argument("JitterBufferOptions out of range");
}

// Signed distance from `from` to `to` on the wrapping uint32 sequence circle.
int32_t distance(uint32_t from, uint32_t to) { return static_cast<int32_t>(to - from); }

}  // namespace

JitterBuffer::JitterBuffer(JitterBufferOptions options, ClockUs clock_us)
    : options_(options), clock_us_(std::move(clock_us)) {
  validate(options_);
  if (!clock_us_) throw std::invalid_argument("JitterBuffer needs a clock");
  const size_t ring_size = power_of_two_at_least(options_.capacity_frames);
  entries_.resize(ring_size);
  for (Entry& slot : entries_) slot.bytes.resize(options_.max_payload_bytes);
  history_.resize(ring_size);
  delay_window_.resize(static_cast<size_t>(options_.delay_window_packets));
  sorted_scratch_.resize(delay_window_.size());
  reset();
}

void JitterBuffer::reset() {
  for (Entry& slot : entries_) slot.present = false;
  for (History& past : history_) past = History{};
  delay_window_count_ = 0;
  delay_window_next_ = 0;
  window_min_offset_us_ = 0.0;
  percentile_target_frames_ = options_.min_delay_frames;
  target_delay_frames_ = options_.min_delay_frames;
  have_first_ = false;
  started_ = false;
  first_sequence_ = 0;
  first_arrival_us_ = 0;
  next_sequence_ = 0;
  highest_sequence_ = 0;
  highest_extended_ = 0;
  buffered_frames_ = 0;
  last_arrival_us_ = 0;
  last_arrival_extended_ = 0;
  jitter_us_ = 0.0;
  late_boost_frames_ = 0;
  late_boost_packets_left_ = 0;
  above_target_slots_ = 0;
  far_above_target_slots_ = 0;
  catching_up_ = false;
  stats_ = JitterBufferStats{};
}

int64_t JitterBuffer::extended(uint32_t sequence) const {
  return highest_extended_ + distance(highest_sequence_, sequence);
}

JitterBuffer::Insert JitterBuffer::insert(uint32_t sequence, const uint8_t* payload, size_t size) {
  if (size > options_.max_payload_bytes) {
    ++stats_.too_large;
    return Insert::kTooLarge;
  }
  const int64_t now_us = clock_us_();
  if (!have_first_) {
    have_first_ = true;
    first_sequence_ = sequence;
    first_arrival_us_ = now_us;
    next_sequence_ = sequence;
    highest_sequence_ = sequence;
    highest_extended_ = 0;
  }

  const int32_t ahead = distance(next_sequence_, sequence);
  if (ahead < 0) {
    // Before any slot has passed, an older packet still fits if the buffer can
    // span it and the newest one: start from it instead.
    const bool can_rewind =
        !started_ && distance(sequence, highest_sequence_) < options_.capacity_frames;
    if (!can_rewind) {
      History& past = history(sequence);
      if (past.outcome == Outcome::kNone || past.sequence != sequence) {
        ++stats_.too_old;
        return Insert::kLate;
      }
      if (past.outcome != Outcome::kConcealed) {
        ++stats_.duplicates;
        return Insert::kDuplicate;
      }
      past.outcome = Outcome::kLateArrived;
      ++stats_.late;
      observe_arrival(sequence, now_us, /*late=*/true);
      return Insert::kLate;
    }
    next_sequence_ = sequence;
    first_sequence_ = sequence;
  } else if (ahead >= options_.capacity_frames) {
    ++stats_.too_far_ahead;
    return Insert::kTooFarAhead;
  }

  Entry& slot = entry(sequence);
  if (slot.present) {  // all present entries are within one ring, so this is `sequence`
    ++stats_.duplicates;
    return Insert::kDuplicate;
  }
  slot.present = true;
  slot.sequence = sequence;
  slot.size = size;
  if (size > 0) std::memcpy(slot.bytes.data(), payload, size);
  ++buffered_frames_;
  ++stats_.inserted;
  if (distance(highest_sequence_, sequence) > 0) {
    highest_extended_ = extended(sequence);
    highest_sequence_ = sequence;
  }
  observe_arrival(sequence, now_us, /*late=*/false);
  return Insert::kAccepted;
}

void JitterBuffer::observe_arrival(uint32_t sequence, int64_t now_us, bool late) {
  const int64_t sequence_extended = extended(sequence);
  const double nominal_us = static_cast<double>(sequence_extended) * options_.frame_duration_us;
  const double offset_us = static_cast<double>(now_us) - nominal_us;

  if (delay_window_count_ > 0) {  // not the first arrival
    // RFC 3550 6.4.1: D is the change in transit time between consecutive arrivals.
    const double transit_change_us =
        static_cast<double>(now_us - last_arrival_us_) -
        static_cast<double>(sequence_extended - last_arrival_extended_) *
            options_.frame_duration_us;
    jitter_us_ += (std::abs(transit_change_us) - jitter_us_) / 16.0;
  }
  last_arrival_us_ = now_us;
  last_arrival_extended_ = sequence_extended;

  delay_window_[delay_window_next_] = offset_us;
  delay_window_next_ = (delay_window_next_ + 1) % delay_window_.size();
  delay_window_count_ = std::min(delay_window_count_ + 1, delay_window_.size());
  update_target();

  if (late) {
    late_boost_frames_ =
        std::max(late_boost_frames_, frames_covering(offset_us - window_min_offset_us_));
    late_boost_packets_left_ = options_.delay_window_packets;
  } else if (late_boost_packets_left_ > 0 && --late_boost_packets_left_ == 0) {
    late_boost_frames_ = 0;
  }
  target_delay_frames_ = std::clamp(std::max(percentile_target_frames_, late_boost_frames_),
                                    options_.min_delay_frames, options_.max_delay_frames);
}

void JitterBuffer::update_target() {
  const auto begin = sorted_scratch_.begin();
  const auto end = begin + static_cast<std::ptrdiff_t>(delay_window_count_);
  std::copy_n(delay_window_.begin(), delay_window_count_, begin);
  window_min_offset_us_ = *std::min_element(begin, end);
  // The smallest value with at least 95% of the window at or under it.
  const size_t rank = (95 * delay_window_count_ + 99) / 100 - 1;
  std::nth_element(begin, begin + static_cast<std::ptrdiff_t>(rank), end);
  percentile_target_frames_ = frames_covering(sorted_scratch_[rank] - window_min_offset_us_);
}

int JitterBuffer::frames_covering(double delay_us) const {
  // A frame may play up to half a frame before the target's time (the playout
  // band), so half a frame is added before rounding up. The clock counts whole
  // microseconds while frame times are fractional: a delay within a microsecond
  // of a whole number of half frames is that number.
  const double frames = std::ceil((delay_us - 1.0) / options_.frame_duration_us + 0.5);
  const double capped = std::min(frames, static_cast<double>(options_.max_delay_frames));
  return static_cast<int>(std::max(capped, 0.0));
}

void JitterBuffer::start_playout() {
  // The arrivals before the start are the burst or the first reordering: only
  // the fastest of them stays as the window's reference, so that they do not
  // count as jitter.
  if (delay_window_count_ > 0) {
    const double fastest_us = *std::min_element(
        delay_window_.begin(), delay_window_.begin() + static_cast<std::ptrdiff_t>(delay_window_count_));
    delay_window_[0] = fastest_us;
    delay_window_count_ = 1;
    delay_window_next_ = 1 % delay_window_.size();
    update_target();
    target_delay_frames_ = std::clamp(std::max(percentile_target_frames_, late_boost_frames_),
                                      options_.min_delay_frames, options_.max_delay_frames);
  }
  catching_up_ = true;
}

double JitterBuffer::playout_delay_frames(int64_t now_us) const {
  const double due_nominal_us =
      static_cast<double>(extended(next_sequence_)) * options_.frame_duration_us;
  return (static_cast<double>(now_us) - window_min_offset_us_ - due_nominal_us) /
         options_.frame_duration_us;
}

void JitterBuffer::pass(Outcome outcome) {
  History& past = history(next_sequence_);
  past.sequence = next_sequence_;
  past.outcome = outcome;
  ++next_sequence_;
  started_ = true;
}

bool JitterBuffer::drop_due(Slot* slot) {
  Entry& due = entry(next_sequence_);
  if (!due.present) {
    ++stats_.skipped_concealments;
    pass(Outcome::kConcealed);
    return false;
  }
  due.present = false;
  --buffered_frames_;
  slot->sequence = next_sequence_;
  slot->payload = due.bytes.data();
  slot->size = due.size;
  ++stats_.discarded;
  pass(Outcome::kPlayed);
  return true;
}

JitterBuffer::Playout JitterBuffer::take(Slot* slot) {
  slot->sequence = next_sequence_;
  Entry& due = entry(next_sequence_);
  if (!due.present) {
    ++stats_.concealed;
    pass(Outcome::kConcealed);
    return Playout::kConceal;
  }
  due.present = false;
  --buffered_frames_;
  slot->payload = due.bytes.data();
  slot->size = due.size;
  ++stats_.played;
  pass(Outcome::kPlayed);
  return Playout::kFrame;
}

JitterBuffer::Playout JitterBuffer::next(Slot* slot) {
  *slot = Slot{};
  if (!have_first_) return Playout::kWaiting;
  const int64_t now_us = clock_us_();
  int target = target_delay_frames_;
  if (!started_) {
    const bool waited =
        static_cast<double>(now_us - first_arrival_us_) >= target * options_.frame_duration_us;
    const bool enough_later = highest_extended_ - extended(first_sequence_) >= target;
    if (!waited && !enough_later) return Playout::kWaiting;
    started_ = true;
    start_playout();
    target = target_delay_frames_;
  }
  // At the start, frames already later than the target are a sender's start
  // burst (the streaming encoder's first 7 frames leave together), not network
  // delay: they are decoded and dropped while the next one would still be
  // within the band (a quarter frame of slack from its lower edge, as below).
  if (catching_up_) {
    if (distance(next_sequence_, highest_sequence_) >= 1 &&
        playout_delay_frames(now_us) >= target + 0.75) {
      return drop_due(slot) ? Playout::kDiscard : next(slot);
    }
    catching_up_ = false;
  }

  const double delay_frames = playout_delay_frames(now_us);
  // Under the band (delay_frames < target - 0.5), decided by due_time_us()'s own
  // rounding, so that a player ticking at it is never stretched.
  if (now_us < due_time_us()) {
    above_target_slots_ = 0;
    slot->sequence = next_sequence_;
    ++stats_.stretched;
    return Playout::kConceal;
  }
  above_target_slots_ = delay_frames >= target + 1.0 ? above_target_slots_ + 1 : 0;
  far_above_target_slots_ =
      // A quarter frame of slack: the caller's timer and the clock's whole
      // microseconds put a delay of n frames a little under n.
      delay_frames >= target + options_.fast_shrink_excess_frames - 0.25 ? far_above_target_slots_ + 1
                                                                          : 0;
  if (above_target_slots_ >= options_.shrink_after_frames ||
      far_above_target_slots_ >= options_.fast_shrink_after_frames) {
    above_target_slots_ = far_above_target_slots_ = 0;
    if (drop_due(slot)) return Playout::kDiscard;
  }
  return take(slot);
}

JitterBuffer::Playout JitterBuffer::next_in_order(Slot* slot, bool stream_ended) {
  *slot = Slot{};
  if (!have_first_) return Playout::kWaiting;
  if (entry(next_sequence_).present) return take(slot);
  // The frame due is missing, so every buffered frame is a later one.
  const bool give_up =
      buffered_frames_ >= options_.reorder_window_frames || (stream_ended && buffered_frames_ > 0);
  return give_up ? take(slot) : Playout::kWaiting;
}

int JitterBuffer::pending_frames() const {
  if (!have_first_) return 0;
  return std::max(0, distance(next_sequence_, highest_sequence_) + 1);
}

bool JitterBuffer::started() const { return started_; }

int64_t JitterBuffer::due_time_us() const {
  const double due_nominal_us =
      static_cast<double>(extended(next_sequence_)) * options_.frame_duration_us;
  const double band_entry_frames = target_delay_frames_ - 0.5;
  return static_cast<int64_t>(
      std::ceil(window_min_offset_us_ + due_nominal_us + band_entry_frames * options_.frame_duration_us));
}

uint32_t JitterBuffer::next_sequence() const { return next_sequence_; }

JitterBufferStats JitterBuffer::stats() const {
  JitterBufferStats result = stats_;
  result.target_delay_frames = target_delay_frames_;
  result.depth_frames = buffered_frames_;
  result.jitter_ms = jitter_us_ / 1000.0;
  return result;
}

}  // namespace encodec::net
