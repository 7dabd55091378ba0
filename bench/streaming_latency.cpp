// Streaming engine speed with the official-size 24 kHz model (random weights:
// speed does not depend on the values) at 6 kbps:
//  1. per-frame latency of one stream on one thread (StreamingEncoder,
//     StreamingDecoder, both), p50 / p99 / max;
//  2. the baseline: the offline path (EncodecModel::encode / decode) called on
//     single 320-sample frames, with the fast and the reference kernels;
//  3. StreamBatcher capacity: how many duplex streams (a full encode + decode
//     tick for all of them) stay under one frame's 13.3 ms at p99, per thread count.
// The targets are printed beside the results.
//
//   build/bench/streaming_latency [--frames 2000] [--reference-frames 300]
//                                 [--threads 1,2] [--max-streams 128] [--ticks 300]
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
#include "encodec/streaming.h"

namespace {

using encodec::bench::cpu_model;
using encodec::bench::load_average;
using encodec::bench::percentile;

using Clock = std::chrono::steady_clock;

constexpr double kBandwidthKbps = 6.0;
constexpr int64_t kWarmupFrames = 10;       // after the start delay, for caches and primitives
constexpr int64_t kWarmupTicks = 20;        // at least; more until every stream is batched
constexpr int64_t kMaxWarmupTicks = 200;    // the start delay is ~15 ticks: beyond this, something is wrong
constexpr int64_t kAudioBufferSamples = 8192;  // larger than the start delay's burst of audio

// Issue 4's targets.
constexpr double kTargetP50Ms = 1.5, kTargetP99Ms = 3.0;
constexpr int64_t kTargetStreams = 24, kTargetStreamsThreads = 2;

double ms_between(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

struct FrameTimes {
  std::vector<double> encode_ms, decode_ms, both_ms;
};

void print_row(const char* label, const std::vector<double>& ms) {
  std::printf("  %-38s %8.3f %8.3f %8.3f\n", label, percentile(ms, 0.5), percentile(ms, 0.99),
              *std::max_element(ms.begin(), ms.end()));
}

void print_frame_times(const FrameTimes& times) {
  print_row("encode", times.encode_ms);
  print_row("decode", times.decode_ms);
  print_row("encode+decode", times.both_ms);
}

// The test signal as frames; frame numbers wrap around, so any number of
// frames and streams can read it.
class FrameSource {
 public:
  FrameSource(const torch::Tensor& signal, int64_t hop)
      : signal_(signal), hop_(hop), frames_(signal.size(2) / hop) {}
  const float* frame(int64_t index) const { return signal_.data_ptr<float>() + (index % frames_) * hop_; }
  torch::Tensor frame_tensor(int64_t index) const {
    return signal_.narrow(2, (index % frames_) * hop_, hop_);
  }

 private:
  torch::Tensor signal_;
  int64_t hop_, frames_;
};

// One stream through StreamingEncoder and StreamingDecoder, a frame at a time.
// The decoder gets each frame's codes as soon as they are out, so a measured
// frame is one full round trip: 320 samples in, 320 samples out.
FrameTimes measure_streaming(const encodec::EncodecModel& model, const FrameSource& source,
                             int64_t frames) {
  const int64_t hop = model.config().hop_length();
  encodec::StreamingEncoder encoder(model);
  encoder.set_bandwidth(kBandwidthKbps);
  encodec::StreamingDecoder decoder(model);
  std::vector<float> audio(kAudioBufferSamples);
  std::vector<encodec::CodeFrame> code_frames;
  code_frames.reserve(16);  // the start delay's burst at most: nothing allocates in the timed loop
  FrameTimes times;
  // Not measured: the start delay (the first frames run with reflection
  // padding and emit nothing) and kWarmupFrames frames after the first audio.
  int64_t warmup_left = -1;  // -1: no audio out yet
  for (int64_t frame = 0; static_cast<int64_t>(times.both_ms.size()) < frames; ++frame) {
    const auto start = Clock::now();
    encoder.push(source.frame(frame), hop);
    code_frames.clear();
    encodec::CodeFrame codes;
    while (encoder.pop(&codes)) code_frames.push_back(codes);
    const auto encoded = Clock::now();
    for (const encodec::CodeFrame& code_frame : code_frames) decoder.push(code_frame);
    int64_t samples_out = 0;
    while (decoder.samples_ready() > 0) samples_out += decoder.pop(audio.data(), kAudioBufferSamples);
    const auto decoded = Clock::now();

    if (warmup_left < 0 && samples_out > 0) warmup_left = kWarmupFrames;
    if (warmup_left > 0) {
      --warmup_left;
    } else if (warmup_left == 0 && code_frames.size() == 1 && samples_out == hop) {
      times.encode_ms.push_back(ms_between(start, encoded));
      times.decode_ms.push_back(ms_between(encoded, decoded));
      times.both_ms.push_back(ms_between(start, decoded));
    }
  }
  return times;
}

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

// Tick times of `streams` duplex streams in one StreamBatcher: every tick
// pushes a frame of audio per stream, encodes, hands each stream's codes to
// its decoder side, decodes and pops the audio, as a server's 13.3 ms tick
// would. Empty when the streams never all joined the batch.
std::vector<double> measure_batcher_ticks(const encodec::EncodecModel& model, const FrameSource& source,
                                          int64_t streams, int64_t ticks) {
  const int64_t hop = model.config().hop_length();
  encodec::StreamBatcher batcher(model);
  std::vector<encodec::StreamBatcher::StreamId> ids;
  for (int64_t s = 0; s < streams; ++s) {
    ids.push_back(batcher.open_stream());
    batcher.set_bandwidth(ids.back(), kBandwidthKbps);
  }
  std::vector<float> audio(kAudioBufferSamples);
  auto tick = [&](int64_t t) {
    // Streams read the signal at different offsets, so they are not identical.
    for (int64_t s = 0; s < streams; ++s) batcher.push_audio(ids[s], source.frame(t + 7 * s), hop);
    batcher.encode_tick();
    encodec::CodeFrame codes;
    for (const auto id : ids) {
      while (batcher.pop_codes(id, &codes)) batcher.push_codes(id, codes);
    }
    batcher.decode_tick();
    for (const auto id : ids) {
      while (batcher.pop_audio(id, audio.data(), kAudioBufferSamples) > 0) {
      }
    }
  };
  auto all_batched = [&] {
    return batcher.batched_encoder_streams() == streams && batcher.batched_decoder_streams() == streams;
  };
  // Streams run alone through their start delay, then join the batch; timing
  // before that would measure N single-stream passes, not one batched pass.
  int64_t t = 0;
  for (; t < kMaxWarmupTicks && (t < kWarmupTicks || !all_batched()); ++t) tick(t);
  if (!all_batched()) return {};
  std::vector<double> tick_ms;
  for (int64_t i = 0; i < ticks; ++i, ++t) {
    const auto start = Clock::now();
    tick(t);
    tick_ms.push_back(ms_between(start, Clock::now()));
  }
  if (!all_batched()) return {};  // a stream left the batch: the numbers mix both modes
  return tick_ms;
}

// Measures and prints one batch size; true when its p99 tick fits in a frame.
bool batch_is_real_time(const encodec::EncodecModel& model, const FrameSource& source, int threads,
                        int64_t streams, int64_t ticks, double frame_ms) {
  const std::vector<double> tick_ms = measure_batcher_ticks(model, source, streams, ticks);
  if (tick_ms.empty()) {
    std::printf("  %7d %7lld   streams did not all join the batch\n", threads, static_cast<long long>(streams));
    return false;
  }
  const double p50 = percentile(tick_ms, 0.5), p99 = percentile(tick_ms, 0.99);
  const bool real_time = p99 < frame_ms;
  std::printf("  %7d %7lld %8.3f %8.3f %8.3f %14.3f %5.0f%%   %s\n", threads,
              static_cast<long long>(streams), p50, p99, *std::max_element(tick_ms.begin(), tick_ms.end()),
              p50 / streams, 100 * p99 / frame_ms, real_time ? "yes" : "no");
  std::fflush(stdout);
  return real_time;
}

// The largest real-time batch size up to `max_streams`: upward over a coarse
// list until one fails, then a bisection between the last success and it.
int64_t real_time_capacity(const encodec::EncodecModel& model, const FrameSource& source, int threads,
                           int64_t max_streams, int64_t ticks, double frame_ms) {
  const std::vector<int64_t> coarse = {1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128};
  int64_t passed = 0, failed = max_streams + 1;
  for (int64_t streams : coarse) {
    if (streams > max_streams) break;
    if (!batch_is_real_time(model, source, threads, streams, ticks, frame_ms)) {
      failed = streams;
      break;
    }
    passed = streams;
  }
  while (failed - passed > 1) {  // failed == max_streams + 1: nothing failed yet
    const int64_t middle = (passed + failed) / 2;
    (batch_is_real_time(model, source, threads, middle, ticks, frame_ms) ? passed : failed) = middle;
  }
  return passed;
}

const char* verdict(bool met) { return met ? "met" : "MISSED"; }

}  // namespace

int main(int argc, char** argv) {
  int64_t frames = 2000, reference_frames = 300, max_streams = 128, ticks = 300;
  std::vector<int> thread_counts = {1, 2};
  CLI::App app{"Streaming engine latency and batcher capacity (24 kHz model, 6 kbps)"};
  app.add_option("--frames", frames, "Measured frames per single-stream run (and the fast offline baseline)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reference-frames", reference_frames, "Measured frames for the reference-kernel baseline")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", thread_counts, "Thread counts for the batcher")->delimiter(',');
  app.add_option("--max-streams", max_streams, "Largest batch tried")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--ticks", ticks, "Measured ticks per batch size")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  torch::NoGradGuard no_grad;
  const encodec::EncodecConfig config = encodec::EncodecConfig::official_24khz();
  encodec::EncodecModel model = encodec::EncodecModel::with_random_weights(config);
  model.set_target_bandwidth(kBandwidthKbps);
  model.set_kernels(encodec::Kernels::kFast);  // the streaming engine's kernels
  const int64_t hop = config.hop_length();
  const double frame_ms = 1000.0 * hop / config.sample_rate_hz;
  const FrameSource source(encodec::bench::test_signal(1, config.sample_rate_hz, 3000 * hop), hop);  // 40 s, wraps around

  std::printf("machine: %s, %u hardware threads; load average %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("model: %s official size, random weights, %.1f kbps (%d codebooks); frame %lld samples = %.3f ms\n",
              config.name.c_str(), kBandwidthKbps, config.num_codebooks(kBandwidthKbps),
              static_cast<long long>(hop), frame_ms);

  // 1 and 2: one stream, one thread.
  torch::set_num_threads(1);
  std::printf("\nsingle stream, 1 thread, ms per frame%12s %8s %8s\n", "p50", "p99", "max");
  const FrameTimes streaming = measure_streaming(model, source, frames);
  std::printf(" streaming engine, %lld frames:\n", static_cast<long long>(frames));
  print_frame_times(streaming);
  std::printf(" offline path on single %lld-sample frames, fast kernels, %lld frames:\n",
              static_cast<long long>(hop), static_cast<long long>(frames));
  print_frame_times(measure_offline(model, encodec::Kernels::kFast, source, frames));
  std::printf(" offline path on single %lld-sample frames, reference kernels, %lld frames:\n",
              static_cast<long long>(hop), static_cast<long long>(reference_frames));
  print_frame_times(measure_offline(model, encodec::Kernels::kReference, source, reference_frames));

  // 3: batcher capacity.
  std::printf("\nbatcher: full duplex tick (push, encode_tick, codes to decoder, decode_tick, pop), %lld ticks\n",
              static_cast<long long>(ticks));
  std::printf("  %7s %7s %8s %8s %8s %14s %6s   %s\n", "threads", "streams", "p50 ms", "p99 ms", "max ms",
              "p50 ms/stream", "p99/fr", "real time");
  std::vector<std::pair<int, int64_t>> capacities;
  for (int threads : thread_counts) {
    torch::set_num_threads(threads);
    capacities.emplace_back(threads, real_time_capacity(model, source, threads, max_streams, ticks, frame_ms));
  }

  // 4: the targets.
  const double p50 = percentile(streaming.both_ms, 0.5), p99 = percentile(streaming.both_ms, 0.99);
  std::printf("\ntargets (issue 4):\n");
  std::printf("  single-stream encode+decode p50 <= %.1f ms: %.3f ms  %s\n", kTargetP50Ms, p50,
              verdict(p50 <= kTargetP50Ms));
  std::printf("  single-stream encode+decode p99 <= %.1f ms: %.3f ms  %s\n", kTargetP99Ms, p99,
              verdict(p99 <= kTargetP99Ms));
  for (const auto& [threads, capacity] : capacities) {
    const bool at_limit = capacity >= max_streams;
    std::printf("  real-time duplex streams on %d thread%s: %s%lld", threads, threads == 1 ? "" : "s",
                at_limit ? ">= " : "", static_cast<long long>(capacity));
    if (threads == kTargetStreamsThreads) {
      std::printf("  (target >= %lld: %s)", static_cast<long long>(kTargetStreams),
                  verdict(capacity >= kTargetStreams));
    }
    std::printf("\n");
  }
  return 0;
}
