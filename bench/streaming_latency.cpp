// Streaming engine speed with the official-size 24 kHz model (random weights:
// speed does not depend on the values) at 6 kbps, in each precision asked for
// (fp32, the exact default; bf16, opt-in, on CPUs with AVX512-BF16):
//  1. per-frame latency of one stream on one thread (StreamingEncoder,
//     StreamingDecoder, both), p50 / p99 / max;
//  2. the baseline: the offline path (EncodecModel::encode / decode) called on
//     single 320-sample frames, with the fast kernels (and, in fp32, the reference ones);
//  3. StreamBatcher capacity: how many duplex streams (a full encode + decode
//     tick for all of them) stay under one frame's 13.3 ms at p99, per thread count.
// The targets are printed beside the results, per precision.
//
//   build/bench/streaming_latency [--precision fp32,bf16] [--frames 2000]
//                                 [--reference-frames 300] [--threads 1,2]
//                                 [--max-streams 128] [--ticks 300]
//                                 [--min-streams-per-lane 4]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "encodec/encodec.h"
#include "encodec/precision.h"
#include "streaming_measure.h"

namespace {

// cpu_model, percentile, ... and the streaming measurements (streaming_measure.h).
using namespace encodec::bench;

constexpr double kBandwidthKbps = kStreamBandwidthKbps;

// Issue 4's targets.
constexpr double kTargetP50Ms = 1.5, kTargetP99Ms = 3.0;
constexpr int64_t kTargetStreams = 24, kTargetStreamsThreads = 2;

// The baseline: what a server without the streaming engine would do, calling
// the offline path on each frame as it arrives (no state carried over, so the
// audio is not what a continuous stream gives; only its cost matters here).
FrameTimes measure_offline(encodec::EncodecModel model, encodec::Kernels kernels,
                           const FrameSource& source, int64_t frames) {
  model.set_kernels(kernels);
  FrameTimes times;
  for (int64_t frame = 0; frame < kWarmupFrames + frames; ++frame) {
    const torch::Tensor wav = source.frame_tensor(frame);
    const auto start = Clock::now();
    const std::vector<encodec::EncodedFrame> codes = model.encode(wav);
    const auto encoded = Clock::now();
    model.decode(codes);
    const auto decoded = Clock::now();
    if (frame < kWarmupFrames) continue;
    times.encode_ms.push_back(ms_between(start, encoded));
    times.decode_ms.push_back(ms_between(encoded, decoded));
    times.both_ms.push_back(ms_between(start, decoded));
  }
  return times;
}

const char* verdict(bool met) { return met ? "met" : "MISSED"; }


struct PrecisionResult {
  encodec::Precision precision;
  double p50_ms = 0, p99_ms = 0;
  std::vector<std::pair<int, int64_t>> capacities;  // threads, streams
};

void print_targets(const PrecisionResult& result, int64_t max_streams) {
  std::printf("\ntargets (issue 4), %s:\n", encodec::precision_name(result.precision));
  std::printf("  single-stream encode+decode p50 <= %.1f ms: %.3f ms  %s\n", kTargetP50Ms, result.p50_ms,
              verdict(result.p50_ms <= kTargetP50Ms));
  std::printf("  single-stream encode+decode p99 <= %.1f ms: %.3f ms  %s\n", kTargetP99Ms, result.p99_ms,
              verdict(result.p99_ms <= kTargetP99Ms));
  for (const auto& [threads, capacity] : result.capacities) {
    const bool at_limit = capacity >= max_streams;
    std::printf("  real-time duplex streams on %d thread%s: %s%lld", threads, threads == 1 ? "" : "s",
                at_limit ? ">= " : "", static_cast<long long>(capacity));
    if (threads == kTargetStreamsThreads) {
      std::printf("  (target >= %lld: %s)", static_cast<long long>(kTargetStreams),
                  verdict(capacity >= kTargetStreams));
    }
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t frames = 2000, reference_frames = 300, max_streams = 128, ticks = 300;
  int64_t min_streams_per_lane = encodec::StreamBatcher::kDefaultMinStreamsPerLane;
  std::vector<int> thread_counts = {1, 2};
  std::vector<std::string> precision_names = {"fp32", "bf16"};
  CLI::App app{"Streaming engine latency and batcher capacity (24 kHz model, 6 kbps)"};
  app.add_option("--precision", precision_names,
                 "Precisions to measure, in order (bf16 is skipped with a note on CPUs without AVX512-BF16)")
      ->delimiter(',')
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--frames", frames, "Measured frames per single-stream run (and the fast offline baseline)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reference-frames", reference_frames, "Measured frames for the reference-kernel baseline (fp32)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", thread_counts, "Thread counts for the batcher")->delimiter(',')->capture_default_str();
  app.add_option("--max-streams", max_streams, "Largest batch tried")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--ticks", ticks, "Measured ticks per batch size")->capture_default_str()->check(CLI::PositiveNumber);
  bool separate_ticks = false;
  app.add_flag("--separate-ticks", separate_ticks,
               "Batcher ticks as encode_tick(), codes handed over, decode_tick() on them (the same frame "
               "encoded and decoded in one tick) instead of tick(), which runs both sides at once and "
               "decodes the codes of the tick before");
  app.add_option("--min-streams-per-lane", min_streams_per_lane,
                 "The batcher's lane setting: a batch splits into one lane per thread once each gets this many "
                 "streams (a large value: one lane, products split across the threads)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  torch::NoGradGuard no_grad;
  const encodec::EncodecConfig config = encodec::EncodecConfig::official_24khz();
  encodec::EncodecModel model = encodec::EncodecModel::with_random_weights(config);
  model.set_target_bandwidth(kBandwidthKbps);
  const int64_t hop = config.hop_length();
  const double frame_ms = 1000.0 * hop / config.sample_rate_hz;
  const FrameSource source(encodec::bench::test_signal(1, config.sample_rate_hz, 3000 * hop), hop);  // 40 s, wraps around

  std::printf("machine: %s, %u hardware threads; load average %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("model: %s official size, random weights, %.1f kbps (%d codebooks); frame %lld samples = %.3f ms\n",
              config.name.c_str(), kBandwidthKbps, config.num_codebooks(kBandwidthKbps),
              static_cast<long long>(hop), frame_ms);
  torch::set_num_threads(1);
  print_machine_probe("before");
  std::printf("batcher: a batch splits into one lane per thread from %lld streams per lane; %s\n",
              static_cast<long long>(min_streams_per_lane),
              separate_ticks ? "encode_tick, codes handed over, decode_tick (separate ticks)"
                             : "tick(): both sides at once, decoding the codes of the tick before");

  std::vector<PrecisionResult> results;
  for (const std::string& name : precision_names) {
    const encodec::Precision precision = name == "bf16" ? encodec::Precision::kBf16 : encodec::Precision::kFp32;
    if (precision == encodec::Precision::kBf16 && !encodec::bf16_unavailable_reason().empty()) {
      std::printf("\n== bf16: skipped (%s)\n", encodec::bf16_unavailable_reason().c_str());
      continue;
    }
    model.set_kernels(encodec::Kernels::kFast);  // the streaming engine's kernels
    model.set_precision(precision);
    std::printf("\n== %s%s\n", name.c_str(),
                precision == encodec::Precision::kFp32 ? " (exact: streams equal the offline fast path bit for bit)"
                                                       : " (opt-in: bf16 streams equal bf16 files bit for bit)");

    // 1 and 2: one stream, one thread.
    torch::set_num_threads(1);
    std::printf("single stream, 1 thread, ms per frame%12s %8s %8s\n", "p50", "p99", "max");
    const FrameTimes streaming = measure_streaming(model, source, frames);
    std::printf(" streaming engine, %lld frames:\n", static_cast<long long>(frames));
    print_frame_times(streaming);
    std::printf(" offline path on single %lld-sample frames, fast kernels, %lld frames:\n",
                static_cast<long long>(hop), static_cast<long long>(frames));
    print_frame_times(measure_offline(model, encodec::Kernels::kFast, source, frames));
    if (precision == encodec::Precision::kFp32) {
      std::printf(" offline path on single %lld-sample frames, reference kernels, %lld frames:\n",
                  static_cast<long long>(hop), static_cast<long long>(reference_frames));
      print_frame_times(measure_offline(model, encodec::Kernels::kReference, source, reference_frames));
    }

    // 3: batcher capacity.
    PrecisionResult result{precision, percentile(streaming.both_ms, 0.5), percentile(streaming.both_ms, 0.99), {}};
    std::printf("batcher: full duplex tick (audio in, encode, decode, audio out, for every stream), %lld ticks\n",
                static_cast<long long>(ticks));
    print_batcher_header();
    for (int threads : thread_counts) {
      torch::set_num_threads(threads);
      const BatcherSetup setup{model, source, threads, ticks, frame_ms, min_streams_per_lane, !separate_ticks};
      result.capacities.emplace_back(threads, real_time_capacity(setup, max_streams));
    }
    results.push_back(result);
  }

  // 4: the targets.
  torch::set_num_threads(1);
  std::printf("\n");
  print_machine_probe("after");
  for (const PrecisionResult& result : results) print_targets(result, max_streams);
  return 0;
}
