// LM entropy coding speed (--lm) with an official-size LM (dim 200, 5 layers, 8
// heads, 32 codebooks, random weights: speed does not depend on the values):
// encode and decode real-time factors at 1.5, 6 and 24 kbps of the 24 kHz model
// (2, 8 and 32 codebooks, 75 frames per second), and the latency of coding one
// frame (p50 / p99), on one thread. The codes are drawn from the LM's own
// predictions, as a trained LM's would be.
//
//   build/bench/lm_coding [--seconds 10] [--repeats 3] [--kernels fast,det,det-avx2,det-portable,reference]
//
// "det" is the deterministic coder (LmKernels::kDeterministic) on the CPU's
// best tier, "det-avx2" / "det-portable" on a lower one (as ENCODEC_CPU would).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "encodec/lm.h"
#include "bench_common.h"
#include "fast/cpu_tier.h"
#include "lm/lm_stepper.h"

namespace {

using encodec::bench::cpu_model;
using encodec::bench::percentile;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Codes drawn frame by frame from the LM's own probabilities.
std::vector<std::vector<int64_t>> sample_codes(const encodec::LmModel& lm, int num_codebooks,
                                               int64_t frames) {
  auto stepper = encodec::make_lm_stepper(lm, num_codebooks);
  std::mt19937 random(7);
  std::vector<std::vector<int64_t>> codes;
  const int card = lm.config().card;
  for (int64_t t = 0; t < frames; ++t) {
    const float* probabilities = stepper->step(t == 0 ? nullptr : codes.back().data());
    std::vector<int64_t> frame(num_codebooks);
    for (int k = 0; k < num_codebooks; ++k) {
      std::discrete_distribution<int> draw(probabilities + static_cast<size_t>(k) * card,
                                           probabilities + static_cast<size_t>(k + 1) * card);
      frame[k] = draw(random);
    }
    codes.push_back(frame);
  }
  return codes;
}

struct Result {
  double encode_seconds = INFINITY, decode_seconds = INFINITY;
  std::vector<double> encode_frame_ms, decode_frame_ms;
  size_t bytes = 0;
};

Result measure(const encodec::LmModel& lm, const std::vector<std::vector<int64_t>>& codes,
               int num_codebooks, int repeats) {
  Result result;
  std::string bytes;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    encodec::LmStreamEncoder encoder(lm, num_codebooks);
    std::vector<double> frame_ms;
    bytes.clear();
    const auto start = Clock::now();
    for (const auto& frame : codes) {
      const auto frame_start = Clock::now();
      bytes += encoder.push_frame(frame);
      frame_ms.push_back(1e3 * seconds_since(frame_start));
    }
    bytes += encoder.finish();
    const double elapsed = seconds_since(start);
    if (elapsed < result.encode_seconds) {
      result.encode_seconds = elapsed;
      result.encode_frame_ms = frame_ms;
    }
  }
  result.bytes = bytes.size();
  for (int repeat = 0; repeat < repeats; ++repeat) {
    encodec::LmStreamDecoder decoder(lm, num_codebooks);
    std::vector<double> frame_ms;
    const auto start = Clock::now();
    decoder.feed(bytes);
    for (size_t t = 0; t < codes.size(); ++t) {
      const auto frame_start = Clock::now();
      const auto frame = decoder.next_frame();
      frame_ms.push_back(1e3 * seconds_since(frame_start));
      if (!frame || *frame != codes[t]) {
        std::fprintf(stderr, "decode mismatch at frame %zu\n", t);
        std::exit(1);
      }
    }
    const double elapsed = seconds_since(start);
    if (elapsed < result.decode_seconds) {
      result.decode_seconds = elapsed;
      result.decode_frame_ms = frame_ms;
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  int repeats = 3;
  std::vector<std::string> kernel_names = {"fast"};
  CLI::App app{"LM entropy coding speed (real-time factors and per-frame latency)"};
  app.add_option("--seconds", seconds, "Audio length per run")->capture_default_str();
  app.add_option("--repeats", repeats, "Runs per measurement (best is reported)")->capture_default_str();
  app.add_option("--kernels", kernel_names,
                 "Kernel sets: fast, det (deterministic, best tier), det-avx512, det-avx2, det-portable, "
                 "reference (the Python package's operations)")
      ->delimiter(',')
      ->check(CLI::IsMember({"reference", "fast", "det", "det-avx512", "det-avx2", "det-portable"}));
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(1);
  const encodec::EncodecConfig codec = encodec::EncodecConfig::official_24khz();
  const auto setup_start = Clock::now();
  encodec::LmModel lm = encodec::LmModel::with_random_weights(encodec::LmConfig::for_codec(codec), 1);
  const double setup = seconds_since(setup_start);
  const int64_t frames = static_cast<int64_t>(seconds * codec.frame_rate());
  std::printf("machine: %s, %u hardware threads; 1 thread\n", cpu_model().c_str(),
              std::thread::hardware_concurrency());
  std::printf("LM: dim %d, %d layers, %d heads, %d codebooks, past %d frames; load + self-check %.2f s%s%s\n",
              lm.config().dim, lm.config().num_layers, lm.config().num_heads, lm.config().n_q,
              lm.config().past_context, setup, lm.kernels() == encodec::LmKernels::kFast ? "" : "; fast kernels unavailable: ",
              lm.fast_kernels_unavailable_reason().c_str());
  std::printf("%.0f s of audio (%lld frames), best of %d\n", seconds, static_cast<long long>(frames), repeats);
  std::printf("%-12s %5s %4s %11s %11s %8s  %-21s %-21s\n", "kernels", "kbps", "K", "encode RTF",
              "decode RTF", "kbit/s", "encode ms/frame p50/p99", "decode ms/frame p50/p99");
  for (const std::string& kernel_name : kernel_names) {
    if (kernel_name.rfind("det", 0) == 0) {
      const auto tier = kernel_name == "det" ? encodec::fast::best_cpu_tier()
                                             : encodec::fast::parse_cpu_tier(kernel_name.substr(4));
      encodec::fast::set_cpu_tier(tier);
      lm.set_kernels(encodec::LmKernels::kDeterministic);
    } else {
      lm.set_kernels(kernel_name == "fast" ? encodec::LmKernels::kFast : encodec::LmKernels::kReference);
    }
    for (const double kbps : {1.5, 6.0, 24.0}) {
      const int num_codebooks = codec.num_codebooks(kbps);
      const auto codes = sample_codes(lm, num_codebooks, frames);
      const Result r = measure(lm, codes, num_codebooks, repeats);
      std::printf("%-12s %5.1f %4d %10.1fx %10.1fx %8.2f  %9.3f / %-9.3f %9.3f / %-9.3f\n",
                  kernel_name.c_str(), kbps, num_codebooks, seconds / r.encode_seconds,
                  seconds / r.decode_seconds, 8.0 * r.bytes / seconds / 1000,
                  percentile(r.encode_frame_ms, 0.5), percentile(r.encode_frame_ms, 0.99),
                  percentile(r.decode_frame_ms, 0.5), percentile(r.decode_frame_ms, 0.99));
      std::fflush(stdout);
    }
  }
  return 0;
}
