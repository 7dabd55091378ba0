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
#include "encodec/lm.h"
#include "encodec/streaming.h"
#include "count_allocations.h"
#include "golden_cases.h"
#include "lm/onednn_gelu.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

// The counter sees allocations (a vector's buffer comes from malloc too); the
// count starts over from 0.
bool counter_sees_allocations() {
  testing::allocations_counted = true;
  bool sized = false;
  {
    volatile size_t size = 64;
    std::vector<char> probe(size);
    sized = probe.size() == 64u;
  }
  testing::allocations_counted = false;
  return testing::allocation_count.exchange(0) == 1 && sized;
}

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

  ASSERT_TRUE(counter_sees_allocations()) << "the malloc replacement is not in use";

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

// Streams out of step (as a server's senders are): at every tick one of three
// streams has no frame, so it leaves its lane and rejoins at the next one (its
// state copied out and back, the lane's LSTM state re-laid out, an emptied lane
// kept for the next to join), on both sides.
TEST(StreamBatcherAllocationTest, StreamsLeavingAndRejoiningTheBatchAllocateNothingAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  at::set_num_threads(1);
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_target_bandwidth(6.0);
  StreamBatcher batcher(model, /*min_streams_per_lane=*/1);
  const int64_t hop = model.config().hop_length();
  constexpr int kStreams = 3;
  std::vector<StreamBatcher::StreamId> ids;
  for (int i = 0; i < kStreams; ++i) ids.push_back(batcher.open_stream());
  std::vector<float> frame_audio(hop), out(4 * hop);
  CodeFrame frame;
  int64_t frames_decoded = 0;
  auto one_tick = [&](int64_t index) {
    for (int s = 0; s < kStreams; ++s) {
      if ((index + s) % kStreams == 0) continue;  // this one has no frame this tick
      for (int64_t i = 0; i < hop; ++i) frame_audio[i] = 0.3f * std::sin(0.01f * (index * hop + i) + s);
      batcher.push_audio(ids[s], frame_audio.data(), hop);
    }
    batcher.encode_tick();
    for (StreamBatcher::StreamId id : ids) {
      while (batcher.pop_codes(id, &frame)) batcher.push_codes(id, frame);
    }
    batcher.decode_tick();
    for (StreamBatcher::StreamId id : ids) {
      frames_decoded += batcher.pop_audio(id, out.data(), static_cast<int64_t>(out.size())) > 0;
    }
  };
  for (int64_t index = 0; index < 60; ++index) one_tick(index);
  ASSERT_TRUE(counter_sees_allocations()) << "the malloc replacement is not in use";
  const int64_t decoded_before = frames_decoded;
  testing::allocations_counted = true;
  for (int64_t index = 60; index < 160; ++index) one_tick(index);
  testing::allocations_counted = false;
  EXPECT_EQ(testing::allocation_count.load(), 0) << "allocations in 100 ticks of streams out of step";
  // The streams ran: two of three decoded a frame at each tick.
  EXPECT_EQ(frames_decoded - decoded_before, 100 * (kStreams - 1));
}

// Live LM-coded packets (the client's --lm): a frame's bytes appended to a
// reused string and its codes decoded into an array, a segment ended per frame,
// a new context every 20 frames on the same encoder and decoder. Returns the
// allocations of the counted frames; `mismatches` counts frames that did not
// come back.
constexpr int kLiveCountedFrames = 100;

long live_lm_allocations(const LmModel& lm, int* mismatches) {
  constexpr int kCodebooks = 8;
  constexpr int kContextFrames = 20;
  LmStreamEncoder encoder(lm, kCodebooks);
  LmStreamDecoder decoder(lm, kCodebooks);
  std::string packet;
  packet.reserve(1200);
  int64_t codes[kCodebooks], decoded[kCodebooks];
  *mismatches = 0;
  auto one_frame = [&](int64_t index) {
    if (index > 0 && index % kContextFrames == 0) {
      packet.clear();
      encoder.finish(&packet);
      decoder.finish();
    }
    // Codes that vary like a signal's: a slow walk per codebook.
    for (int k = 0; k < kCodebooks; ++k) codes[k] = (index * (k + 3) / 4 + 37 * k) % lm.config().card;
    packet.clear();
    encoder.push_frame(codes, &packet);
    encoder.end_segment(&packet);
    decoder.feed(packet.data(), packet.size());
    const bool complete = decoder.next_frame(decoded);
    decoder.end_segment();
    *mismatches += !complete || !std::equal(codes, codes + kCodebooks, decoded);
  };
  for (int64_t index = 0; index < 60; ++index) one_frame(index);
  EXPECT_TRUE(counter_sees_allocations()) << "the malloc replacement is not in use";
  testing::allocations_counted = true;
  for (int64_t index = 60; index < 60 + kLiveCountedFrames; ++index) one_frame(index);
  testing::allocations_counted = false;
  return testing::allocation_count.exchange(0);
}

// The protocol's coder (the deterministic kernels, what encodec-client runs):
// nothing at all allocates once warmed up.
TEST(LmAllocationTest, DeterministicLiveLmPacketsAllocateNothingAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  at::set_num_threads(1);
  const LmModel lm = testing::golden_lm("encodec_24khz", LmKernels::kDeterministic);
  int mismatches = 0;
  EXPECT_EQ(live_lm_allocations(lm, &mismatches), 0)
      << "allocations in " << kLiveCountedFrames << " LM-coded frames (5 contexts)";
  // The path really coded: every frame came back.
  EXPECT_EQ(mismatches, 0);
}

// The same on the exact kernels (the Python package's coder) when they pass
// their self-check. One thing in it allocates: oneDNN's primitive execution
// (the GELU, as LibTorch runs it) builds an argument map at every call, inside
// libdnnl. So the LM's count is compared with what the same number of GELU
// executions allocate on their own: anything else allocating once a frame
// would put it 100 over.
TEST(LmAllocationTest, ExactKernelLmPacketsAllocateOnlyInOneDnnAfterWarmUp) {
  ENCODEC_REQUIRE_GOLDEN();
  at::set_num_threads(1);
  LmModel lm = testing::golden_lm("encodec_24khz");
  if (lm.kernels() != LmKernels::kFast) {
    GTEST_SKIP() << "the exact LM kernels are not in use here: " << lm.fast_kernels_unavailable_reason();
  }
  int mismatches = 0;
  const long lm_allocations = live_lm_allocations(lm, &mismatches);

  // The encoder's and the decoder's steps, one GELU a layer each.
  const int gelu_calls = 2 * kLiveCountedFrames * lm.config().num_layers;
  std::vector<float> hidden(static_cast<size_t>(lm.config().hidden_dim()), 0.25f), activated(hidden.size());
  lm::OneDnnGelu gelu(hidden.data(), activated.data(), static_cast<int>(hidden.size()));
  gelu.run();
  testing::allocations_counted = true;
  for (int call = 0; call < gelu_calls; ++call) gelu.run();
  testing::allocations_counted = false;
  const long gelu_allocations = testing::allocation_count.exchange(0);
  EXPECT_NEAR(lm_allocations, gelu_allocations, gelu_calls / 100)
      << "allocations in " << kLiveCountedFrames << " LM-coded frames (5 contexts), against " << gelu_calls
      << " oneDNN GELU executions alone";
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace encodec
