// Streaming-engine measurements shared by the benchmarks (streaming_latency,
// precision): per-frame latency of one stream, and how many duplex streams a
// StreamBatcher keeps real time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench_common.h"
#include "encodec/encodec.h"
#include "encodec/streaming.h"
#include "fast/ordered_matrix.h"

namespace encodec::bench {

using Clock = std::chrono::steady_clock;

inline constexpr double kStreamBandwidthKbps = 6.0;
inline constexpr int64_t kWarmupFrames = 10;       // after the start delay, for caches and primitives
inline constexpr int64_t kWarmupTicks = 20;        // at least; more until every stream is batched
inline constexpr int64_t kMaxWarmupTicks = 200;    // the start delay is ~15 ticks: beyond this, something is wrong
inline constexpr int64_t kAudioBufferSamples = 8192;  // larger than the start delay's burst of audio

inline double ms_between(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

struct FrameTimes {
  std::vector<double> encode_ms, decode_ms, both_ms;
};

inline void print_row(const char* label, const std::vector<double>& ms) {
  std::printf("  %-38s %8.3f %8.3f %8.3f\n", label, percentile(ms, 0.5), percentile(ms, 0.99),
              *std::max_element(ms.begin(), ms.end()));
}

inline void print_frame_times(const FrameTimes& times) {
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

// What this machine delivers now, on the calling thread: the ordered kernel's
// multiply-adds per second on a product that stays in cache (a 64-channel
// conv's shape), and the bytes per second of one-row products over 64 MB of
// fp32 weights (a single stream's situation). On a shared machine both drift
// with the neighbours' load; printed before and after the measurements, they
// tell a slow machine from a slow engine.
struct MachineProbe {
  double gmac_per_s = 0, weight_gb_per_s = 0;
};

inline MachineProbe probe_machine() {
  MachineProbe probe;
  {
    const int64_t rows = 1200, depth = 128, columns = 64;
    std::vector<float> weights(columns * depth, 0.01f), input(rows * depth, 0.5f), output(rows * columns);
    const encodec::fast::OrderedMatrix matrix(weights.data(), columns, depth, encodec::Precision::kFp32);
    const double seconds = best_time(20, [&] {
      encodec::fast::ordered_gemm(input.data(), depth, rows, matrix, output.data(), columns);
    });
    probe.gmac_per_s = static_cast<double>(rows * depth * columns) / seconds / 1e9;
  }
  {
    const int64_t depth = 1024, columns = 2048, count = 8;  // 8 MB each
    std::vector<float> weights(columns * depth, 0.01f), input(depth, 0.5f), output(columns);
    std::vector<encodec::fast::OrderedMatrix> matrices;
    for (int64_t i = 0; i < count; ++i) {
      matrices.emplace_back(weights.data(), columns, depth, encodec::Precision::kFp32);
    }
    const double seconds = best_time(10, [&] {
      for (const auto& matrix : matrices) {
        encodec::fast::ordered_gemm(input.data(), depth, 1, matrix, output.data(), columns);
      }
    });
    probe.weight_gb_per_s = static_cast<double>(count * depth * columns * 4) / seconds / 1e9;
  }
  return probe;
}

inline void print_machine_probe(const char* when) {
  const MachineProbe probe = probe_machine();
  std::printf("machine probe (%s, 1 thread): ordered kernel %.1f GMAC/s in cache; one-row products over "
              "64 MB of weights %.1f GB/s; load average %s\n",
              when, probe.gmac_per_s, probe.weight_gb_per_s, load_average().c_str());
  std::fflush(stdout);
}

// One stream through StreamingEncoder and StreamingDecoder, a frame at a time.
// The decoder gets each frame's codes as soon as they are out, so a measured
// frame is one full round trip: 320 samples in, 320 samples out.
inline FrameTimes measure_streaming(const encodec::EncodecModel& model, const FrameSource& source,
                             int64_t frames) {
  const int64_t hop = model.config().hop_length();
  encodec::StreamingEncoder encoder(model);
  encoder.set_bandwidth(kStreamBandwidthKbps);
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

// What a batcher measurement runs: the model, its input, the thread count and
// the batcher's lane setting, how many ticks, and the frame's duration.
struct BatcherSetup {
  const encodec::EncodecModel& model;
  const FrameSource& source;
  int threads = 1;
  int64_t ticks = 300;
  double frame_ms = 0;
  int64_t min_streams_per_lane = encodec::StreamBatcher::kDefaultMinStreamsPerLane;
  // true: StreamBatcher::tick(), both sides at once, each tick decoding the
  // codes the previous one encoded (a server: the codes it decodes come from
  // the network, not from the frame it encodes). false: encode_tick(), the
  // codes handed over, then decode_tick() on them in the same tick.
  bool combined_tick = true;
};

struct BatcherTicks {
  std::vector<double> tick_ms;  // empty when the streams never all joined the batch
  int64_t encoder_lanes = 0, decoder_lanes = 0;  // at the last tick
};

// Tick times of `streams` duplex streams in one StreamBatcher: every tick
// pushes a frame of audio per stream, encodes it, decodes a frame of codes per
// stream (see BatcherSetup::combined_tick for which) and pops the audio, as a
// server's 13.3 ms tick would.
inline BatcherTicks measure_batcher_ticks(const BatcherSetup& setup, int64_t streams) {
  const int64_t hop = setup.model.config().hop_length();
  encodec::StreamBatcher batcher(setup.model, setup.min_streams_per_lane);
  std::vector<encodec::StreamBatcher::StreamId> ids;
  for (int64_t s = 0; s < streams; ++s) {
    ids.push_back(batcher.open_stream());
    batcher.set_bandwidth(ids.back(), kStreamBandwidthKbps);
  }
  std::vector<float> audio(kAudioBufferSamples);
  auto tick = [&](int64_t t) {
    // Streams read the signal at different offsets, so they are not identical.
    for (int64_t s = 0; s < streams; ++s) batcher.push_audio(ids[s], setup.source.frame(t + 7 * s), hop);
    // tick() decodes the codes pushed after the previous tick; decode_tick()
    // those of this one.
    setup.combined_tick ? batcher.tick() : batcher.encode_tick();
    encodec::CodeFrame codes;
    for (const auto id : ids) {
      while (batcher.pop_codes(id, &codes)) batcher.push_codes(id, codes);
    }
    if (!setup.combined_tick) batcher.decode_tick();
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
  BatcherTicks result;
  for (int64_t i = 0; i < setup.ticks; ++i, ++t) {
    const auto start = Clock::now();
    tick(t);
    result.tick_ms.push_back(ms_between(start, Clock::now()));
  }
  if (!all_batched()) return {};  // a stream left the batch: the numbers mix both modes
  result.encoder_lanes = batcher.encoder_lanes();
  result.decoder_lanes = batcher.decoder_lanes();
  return result;
}

inline void print_batcher_header() {
  std::printf("  %7s %7s %13s %8s %8s %8s %14s %6s   %s\n", "threads", "streams", "enc+dec lanes", "p50 ms", "p99 ms",
              "max ms", "p50 ms/stream", "p99/fr", "real time");
}

// Measures and prints one batch size; true when its p99 tick fits in a frame.
inline bool batch_is_real_time(const BatcherSetup& setup, int64_t streams) {
  const BatcherTicks ticks = measure_batcher_ticks(setup, streams);
  const std::vector<double>& tick_ms = ticks.tick_ms;
  if (tick_ms.empty()) {
    std::printf("  %7d %7lld   streams did not all join the batch\n", setup.threads,
                static_cast<long long>(streams));
    return false;
  }
  const double p50 = percentile(tick_ms, 0.5), p99 = percentile(tick_ms, 0.99);
  const bool real_time = p99 < setup.frame_ms;
  const std::string lanes = std::to_string(ticks.encoder_lanes) + "+" + std::to_string(ticks.decoder_lanes);
  std::printf("  %7d %7lld %13s %8.3f %8.3f %8.3f %14.3f %5.0f%%   %s\n", setup.threads,
              static_cast<long long>(streams), lanes.c_str(), p50, p99,
              *std::max_element(tick_ms.begin(), tick_ms.end()), p50 / streams, 100 * p99 / setup.frame_ms,
              real_time ? "yes" : "no");
  std::fflush(stdout);
  return real_time;
}

// The largest real-time batch size up to `max_streams`: upward over a coarse
// list until one fails, then a bisection between the last success and it.
// LibTorch's thread count must be setup.threads.
inline int64_t real_time_capacity(const BatcherSetup& setup, int64_t max_streams) {
  const std::vector<int64_t> coarse = {1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128};
  int64_t passed = 0, failed = max_streams + 1;
  for (int64_t streams : coarse) {
    if (streams > max_streams) break;
    if (!batch_is_real_time(setup, streams)) {
      failed = streams;
      break;
    }
    passed = streams;
  }
  while (failed - passed > 1) {  // failed == max_streams + 1: nothing failed yet
    const int64_t middle = (passed + failed) / 2;
    (batch_is_real_time(setup, middle) ? passed : failed) = middle;
  }
  return passed;
}

}  // namespace encodec::bench
