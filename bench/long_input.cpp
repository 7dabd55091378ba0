// Long inputs through the `encodec` command: wall time, real-time factor and
// peak resident memory of compress and decompress, each run as a child process
// (peak RSS from wait4's rusage of that child), for inputs it generates itself
// (noise plus tones at the model's rate and channels, 16-bit WAV in a temporary
// folder). Models: official-size with random weights (the command's hidden
// --random-weights; speed and memory do not depend on the values), 6 kbps.
//
//   build/bench/long_input [--minutes 10,60] [--models 24khz,48khz] [--threads 1] [--reference]
//                          [--baseline-minutes 0.5] [--encodec build/core/encodec] [--dir /tmp]
//                          [--memory-limit-mb 8192]
//
// Baseline in the same run: for the 24 kHz model, the same command with
// --whole-file (the offline fast path: the whole input at once, same process
// start-up) on a short input, against the default streaming path on that input.
// (The 48 kHz model runs chunk by chunk either way.)
//
// Each child runs under an address-space limit so that a run that would not fit
// fails alone instead of pushing a shared machine into the OOM killer.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "child_process.h"

namespace {
namespace fs = std::filesystem;
using encodec::bench::ChildResult;
using encodec::bench::run_child;

struct ModelSetup {
  std::string name;  // as printed
  int sample_rate_hz;
  int channels;
  bool hq;
};

void write_input(const std::string& path, const ModelSetup& model, double minutes) {
  encodec::bench::write_test_wav(path, model.sample_rate_hz, model.channels, minutes * 60);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<double> minutes_list = {10, 60};
  std::vector<std::string> model_names = {"24khz", "48khz"};
  int threads = 1;
  bool reference = false;
  double baseline_minutes = 0.5;
  std::string encodec_path = encodec::bench::built_program(argv[0], "core/encodec");
  std::string dir = fs::temp_directory_path().string();
  long memory_limit_mb = 8192;
  CLI::App app{"Long inputs through the encodec command: wall time, real-time factor, peak RSS"};
  app.add_option("--minutes", minutes_list, "Input lengths in minutes")->delimiter(',');
  app.add_option("--models", model_names, "Models: 24khz, 48khz")
      ->delimiter(',')
      ->check(CLI::IsMember({"24khz", "48khz"}));
  app.add_option("--threads", threads, "Compute threads of the command")->capture_default_str();
  app.add_flag("--reference", reference,
               "Run the command with --reference (the default runs only; the baseline runs the "
               "fast kernels)");
  app.add_option("--baseline-minutes", baseline_minutes,
                 "Length of the input on which the 24 kHz streaming path is compared with "
                 "--whole-file (0: no baseline)")
      ->capture_default_str();
  app.add_option("--encodec", encodec_path, "The encodec command")->capture_default_str();
  app.add_option("--dir", dir, "Where the temporary inputs and outputs go")->capture_default_str();
  app.add_option("--memory-limit-mb", memory_limit_mb,
                 "Address-space limit of each child (0: none)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::string work_template = (fs::path(dir) / "encodec_long_input-XXXXXX").string();
  if (::mkdtemp(work_template.data()) == nullptr) {
    std::fprintf(stderr, "cannot create a folder in %s\n", dir.c_str());
    return 1;
  }
  const fs::path work(work_template);
  std::printf("encodec: %s, %d thread(s), %s, 6 kbps, random official-size weights\n",
              encodec_path.c_str(), threads,
              reference ? "--reference (24 kHz over 5 min: streaming, fast kernels)"
                        : "default: fast kernels, 24 kHz streaming");
  std::printf("%-14s %-11s %8s %-10s %10s %8s %12s\n", "model", "path", "minutes", "step",
              "wall s", "RTF", "peak RSS MB");
  int failures = 0;
  // Compresses and decompresses `minutes` of generated audio; the RTFs (0 when failed).
  auto run_case = [&](const ModelSetup& model, double minutes, const std::string& label,
                      const std::vector<std::string>& extra) {
    const std::string input = (work / "input.wav").string();
    const std::string compressed = (work / "input.ecdc").string();
    const std::string decoded = (work / "decoded.wav").string();
    write_input(input, model, minutes);
    std::vector<std::string> common = {encodec_path, "-q", "-f", "--random-weights",
                                       "--threads", std::to_string(threads)};
    common.insert(common.end(), extra.begin(), extra.end());
    std::vector<std::string> compress = common;
    if (model.hq) compress.push_back("--hq");
    compress.insert(compress.end(), {"-b", "6", input, compressed});
    std::vector<std::string> decompress = common;
    decompress.insert(decompress.end(), {compressed, decoded});
    std::vector<double> rtfs;
    for (const auto& [step, args] : {std::pair{"compress", compress}, {"decompress", decompress}}) {
      const std::string log = (work / "stderr.txt").string();
      const ChildResult result = run_child(args, memory_limit_mb, log);
      if (result.ok) {
        rtfs.push_back(minutes * 60 / result.wall_s);
        std::printf("%-14s %-11s %8.1f %-10s %10.1f %7.1fx %12.0f\n", model.name.c_str(),
                    label.c_str(), minutes, step, result.wall_s, rtfs.back(), result.peak_rss_mb);
      } else {
        ++failures;
        rtfs.push_back(0);
        std::printf("%-14s %-11s %8.1f %-10s failed (%s) after %.1f s, peak RSS %.0f MB\n",
                    model.name.c_str(), label.c_str(), minutes, step, result.failure.c_str(),
                    result.wall_s, result.peak_rss_mb);
        std::ifstream messages(log);
        std::printf("%s", std::string(std::istreambuf_iterator<char>(messages), {}).c_str());
      }
      std::fflush(stdout);
      if (!result.ok) break;  // no .ecdc to decompress
    }
    fs::remove(input);
    fs::remove(compressed);
    fs::remove(decoded);
    fs::remove(work / "stderr.txt");
    rtfs.resize(2, 0.0);
    return rtfs;
  };
  for (const std::string& model_name : model_names) {
    const ModelSetup model = model_name == "24khz" ? ModelSetup{"encodec_24khz", 24000, 1, false}
                                                   : ModelSetup{"encodec_48khz", 48000, 2, true};
    if (model_name == "24khz" && baseline_minutes > 0) {
      const std::vector<double> bounded = run_case(model, baseline_minutes, "streaming", {});
      const std::vector<double> offline = run_case(model, baseline_minutes, "whole-file", {"--whole-file"});
      if (offline[0] > 0 && offline[1] > 0) {
        std::printf("%-14s streaming / whole-file RTF: compress %.2f, decompress %.2f\n",
                    model.name.c_str(), bounded[0] / offline[0], bounded[1] / offline[1]);
      }
    }
    for (const double minutes : minutes_list) {
      run_case(model, minutes, reference ? "reference" : "default",
               reference ? std::vector<std::string>{"--reference"} : std::vector<std::string>{});
    }
  }
  fs::remove_all(work);
  return failures == 0 ? 0 : 1;
}
