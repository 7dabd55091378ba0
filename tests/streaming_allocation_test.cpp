// The per-frame path allocates nothing once warmed up: this test binary
// counts every allocation of the process (support/count_allocations.h).
#include <gtest/gtest.h>

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include <ATen/Parallel.h>

#include "encodec/encodec.h"
#include "encodec/streaming.h"
#include "count_allocations.h"
#include "golden_cases.h"

namespace encodec {
namespace {

// In both precisions: bf16 products convert their inputs into a per-thread
// scratch that must stop growing once warmed up. On one thread, and on two with
// the batch split into two lanes (each with its own scratch, run at once); the
// batcher's sides one after the other, or at once (StreamBatcher::tick).
class StreamingAllocationTest : public ::testing::TestWithParam<std::tuple<Precision, int, bool>> {};

TEST_P(StreamingAllocationTest, PerFramePathAllocatesNothingAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  const auto [precision, threads, combined_tick] = GetParam();
  if (precision == Precision::kBf16 && !bf16_unavailable_reason().empty()) {
    GTEST_SKIP() << bf16_unavailable_reason();
  }
  at::set_num_threads(threads);
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_target_bandwidth(6.0);
  model.set_precision(precision);
  StreamingEncoder encoder(model);
  StreamingDecoder decoder(model);
  StreamBatcher batcher(model, /*min_streams_per_lane=*/1);
  const int64_t hop = model.config().hop_length();
  std::vector<StreamBatcher::StreamId> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(batcher.open_stream());

  std::vector<float> frame_audio(hop), out(4 * hop);
  CodeFrame frame;
  auto one_frame = [&](int64_t index) {
    for (int64_t i = 0; i < hop; ++i) frame_audio[i] = 0.3f * std::sin(0.01f * (index * hop + i));
    encoder.push(frame_audio.data(), hop);
    while (encoder.pop(&frame)) decoder.push(frame);
    decoder.pop(out.data(), static_cast<int64_t>(out.size()));
    for (StreamBatcher::StreamId id : ids) batcher.push_audio(id, frame_audio.data(), hop);
    if (combined_tick) batcher.tick();
    if (!combined_tick) batcher.encode_tick();
    for (StreamBatcher::StreamId id : ids) {
      while (batcher.pop_codes(id, &frame)) batcher.push_codes(id, frame);
    }
    if (!combined_tick) batcher.decode_tick();
    for (StreamBatcher::StreamId id : ids) batcher.pop_audio(id, out.data(), static_cast<int64_t>(out.size()));
  };
  // Warm-up: the start delay, the batch forming, the buffers reaching their size.
  for (int64_t index = 0; index < 40; ++index) one_frame(index);
  ASSERT_EQ(batcher.batched_encoder_streams(), 3);
  ASSERT_EQ(batcher.batched_decoder_streams(), 3);
  // Combined ticks share the threads between the sides.
  const int64_t lanes_per_side = combined_tick ? std::max(1, threads / 2) : threads;
  ASSERT_EQ(batcher.encoder_lanes(), lanes_per_side);
  ASSERT_EQ(batcher.decoder_lanes(), lanes_per_side);

  // The counter sees allocations (a vector's buffer comes from malloc too).
  testing::allocations_counted = true;
  {
    volatile size_t size = 64;
    std::vector<char> probe(size);
    ASSERT_EQ(probe.size(), 64u);
  }
  testing::allocations_counted = false;
  ASSERT_EQ(testing::allocation_count.exchange(0), 1) << "the malloc replacement is not in use";

  testing::allocations_counted = true;
  for (int64_t index = 40; index < 140; ++index) one_frame(index);
  testing::allocations_counted = false;
  EXPECT_EQ(testing::allocation_count.load(), 0) << "allocations in 100 frames of encode, decode and batched ticks";
}

INSTANTIATE_TEST_SUITE_P(PrecisionsAndThreads, StreamingAllocationTest,
                         ::testing::Combine(::testing::Values(Precision::kFp32, Precision::kBf16),
                                            ::testing::Values(1, 2), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(precision_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "_threads" +
                                  (std::get<2>(info.param) ? "_combined_ticks" : "");
                         });

}  // namespace
}  // namespace encodec
