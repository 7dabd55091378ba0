// Offline encode/decode speed of official-size models (random weights: speed
// does not depend on the values), as real-time factors (audio seconds per wall
// second) on 1 and 2 threads.
//
//   build/bench/offline_throughput [--seconds 10] [--repeats 3] [--threads 1,2]
//                                  [--kernels reference,fast] [--models 24khz,48khz]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "encodec/encodec.h"

namespace {

using encodec::bench::best_time;
using encodec::bench::cpu_model;

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  int repeats = 3;
  std::vector<int> thread_counts = {1, 2};
  std::vector<std::string> kernel_names = {"reference", "fast"};
  std::vector<std::string> model_names = {"24khz", "48khz"};
  CLI::App app{"Offline EnCodec throughput (real-time factors)"};
  app.add_option("--seconds", seconds, "Audio length per run")->capture_default_str();
  app.add_option("--repeats", repeats, "Runs per measurement (best is reported)")->capture_default_str();
  app.add_option("--threads", thread_counts, "Thread counts to measure")->delimiter(',');
  app.add_option("--kernels", kernel_names, "Kernel sets: reference (the baseline), fast")
      ->delimiter(',')
      ->check(CLI::IsMember({"reference", "fast"}));
  app.add_option("--models", model_names, "Models: 24khz, 48khz")
      ->delimiter(',')
      ->check(CLI::IsMember({"24khz", "48khz"}));
  CLI11_PARSE(app, argc, argv);

  torch::NoGradGuard no_grad;
  std::printf("machine: %s, %u hardware threads; %.0f s of audio, best of %d\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), seconds, repeats);
  std::printf("%-14s %-5s %-10s %8s %12s %12s\n", "model", "kbps", "kernels", "threads",
              "encode RTF", "decode RTF");
  for (const std::string& model_name : model_names) {
    const encodec::EncodecConfig config = model_name == "24khz"
                                              ? encodec::EncodecConfig::official_24khz()
                                              : encodec::EncodecConfig::official_48khz();
    encodec::EncodecModel model = encodec::EncodecModel::with_random_weights(config);
    model.set_target_bandwidth(6.0);
    const torch::Tensor wav = encodec::bench::test_signal(config.channels, config.sample_rate_hz,
                                    static_cast<int64_t>(seconds * config.sample_rate_hz));
    for (int threads : thread_counts) {
      // The reference kernels are the baseline: the Python package's own operations.
      for (const std::string& kernel_name : kernel_names) {
        const auto kernels =
            kernel_name == "fast" ? encodec::Kernels::kFast : encodec::Kernels::kReference;
        torch::set_num_threads(threads);
        model.set_kernels(kernels);
        std::vector<encodec::EncodedFrame> frames = model.encode(wav);  // warm-up
        model.decode(frames);
        const double encode_s = best_time(repeats, [&] { frames = model.encode(wav); });
        const double decode_s = best_time(repeats, [&] { model.decode(frames); });
        std::printf("%-14s %-5.1f %-10s %8d %11.1fx %11.1fx\n", config.name.c_str(), 6.0,
                    kernel_name.c_str(), threads,
                    seconds / encode_s, seconds / decode_s);
      }
    }
  }
  return 0;
}
