// What every benchmark program prints or feeds: the machine it ran on, how busy
// the machine was, percentiles, and a test signal like real audio.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace encodec::bench {

inline std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// The 1, 5 and 15 minute load averages: figures are noisy when they near the core count.
inline std::string load_average() {
  std::ifstream loadavg("/proc/loadavg");
  std::string one, five, fifteen;
  loadavg >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// The value at fraction p (0..1) of the sorted values (nearest rank); NaN when empty.
inline double percentile(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(p * (values.size() - 1) + 0.5));
  return values[index];
}

// Best of `repeats` runs of `fn`, in seconds.
template <typename Fn>
double best_time(int repeats, Fn&& fn) {
  double best = INFINITY;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// Noise plus a few tones, like real audio in level and spectrum: [1, channels, length].
inline torch::Tensor test_signal(int channels, int sample_rate_hz, int64_t length) {
  torch::manual_seed(1234);
  torch::Tensor t = torch::arange(length, torch::kFloat32) / static_cast<float>(sample_rate_hz);
  torch::Tensor tones = 0.2 * torch::sin(2 * M_PI * 220 * t) + 0.1 * torch::sin(2 * M_PI * 1375 * t);
  torch::Tensor wav = tones.unsqueeze(0).repeat({channels, 1}) + 0.05 * torch::randn({channels, length});
  return wav.unsqueeze(0).contiguous();
}

}  // namespace encodec::bench
