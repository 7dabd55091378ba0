// Process start-up: the `encodec` command from exec to its output on a tiny
// file, against a bare process (`/bin/true`) and a bare LibTorch process (this
// program re-run with --bare-libtorch: the libraries loaded, their static
// operator registries run, one tensor added), all in one run; each figure the
// median of --repeats runs, with the child's peak RSS. Then, in this process,
// where the command's loading goes: reading the checkpoints and building the
// models from them.
//
//   build/bench/startup [--repeats 7] [--seconds 0.5] [--threads 1] [--dir /tmp]
//
// The checkpoints are official-size with random weights, written here as
// torch.save archives (tests/support/checkpoint_writer.h), so the command
// parses files of the official size.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench_common.h"
#include "checkpoint_writer.h"  // tests/support
#include "child_process.h"
#include "encodec/checkpoint.h"
#include "encodec/encodec.h"
#include "encodec/lm.h"

namespace {
namespace fs = std::filesystem;
using encodec::bench::ChildResult;
using encodec::bench::run_child;

// A torch.save archive of random tensors of `shapes` (weight-norm gains
// positive, so that every layer has a non-zero weight).
void write_random_checkpoint(const std::string& path,
                             const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  torch::manual_seed(7);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, shape] : shapes) {
    torch::Tensor value = torch::rand(shape) * 0.1 - 0.05;
    if (name.size() > 9 && name.compare(name.size() - 9, 9, ".weight_g") == 0) value = value.abs() + 0.5;
    tensors.emplace_back(name, value);
  }
  encodec::testing::write_state_dict(path, tensors);
}

double median(std::vector<double> values) { return encodec::bench::percentile(std::move(values), 0.5); }

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 7;
  double seconds = 0.5;
  int threads = 1;
  bool bare_libtorch = false;
  std::string dir = fs::temp_directory_path().string();
  CLI::App app{"Start-up of the encodec command on a tiny file, against bare processes"};
  app.add_option("--repeats", repeats, "Runs per case (the median is printed)")->capture_default_str();
  app.add_option("--seconds", seconds, "Length of the tiny input")->capture_default_str();
  app.add_option("--threads", threads, "The command's --threads")->capture_default_str();
  app.add_option("--dir", dir, "Where the temporary files go")->capture_default_str();
  app.add_flag("--bare-libtorch", bare_libtorch, "(child) make one tensor and exit");
  CLI11_PARSE(app, argc, argv);
  if (bare_libtorch) return torch::ones({1}).item<float>() == 1.0f ? 0 : 1;

  std::string work_template = (fs::path(dir) / "encodec_startup-XXXXXX").string();
  if (::mkdtemp(work_template.data()) == nullptr) {
    std::fprintf(stderr, "cannot create a folder in %s\n", dir.c_str());
    return 1;
  }
  const fs::path work(work_template);
  const std::string codec_path = (work / "codec_24khz.th").string();
  const std::string lm_path = (work / "lm_24khz.th").string();
  const std::string input = (work / "tiny.wav").string();
  const encodec::EncodecConfig codec = encodec::EncodecConfig::official_24khz();
  write_random_checkpoint(codec_path, encodec::EncodecModel::tensor_shapes(codec));
  write_random_checkpoint(lm_path, encodec::LmModel::tensor_shapes(encodec::LmConfig::for_codec(codec)));
  encodec::bench::write_test_wav(input, codec.sample_rate_hz, 1, seconds);

  const std::string self = encodec::bench::built_program(argv[0], "bench/startup");
  const std::string encodec_path = encodec::bench::built_program(argv[0], "core/encodec");
  std::printf("CPU: %s, load average %s\n", encodec::bench::cpu_model().c_str(),
              encodec::bench::load_average().c_str());
  std::printf("encodec: %s, --threads %d, %.2f s of 24 kHz audio at 6 kbps, official-size checkpoints "
              "(%.1f MB codec, %.1f MB LM, random weights), median of %d runs\n",
              encodec_path.c_str(), threads, seconds, fs::file_size(codec_path) / 1e6,
              fs::file_size(lm_path) / 1e6, repeats);

  const std::vector<std::string> common = {encodec_path, "-q", "-f", "--threads", std::to_string(threads),
                                           "--checkpoint", codec_path, "--lm-checkpoint", lm_path};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::string ecdc = (work / "tiny.ecdc").string(), lm_ecdc = (work / "tiny_lm.ecdc").string(),
                    det_ecdc = (work / "tiny_det.ecdc").string(), wav = (work / "out.wav").string();
  const struct {
    const char* label;
    std::vector<std::string> args;
  } cases[] = {
      {"/bin/true", {"/bin/true"}},
      {"bare LibTorch process", {self, "--bare-libtorch"}},
      {"encodec --help", {encodec_path, "--help"}},
      {"compress (default: fast kernels)", with({input, ecdc})},
      {"compress --reference", with({"--reference", input, (work / "ref.ecdc").string()})},
      {"compress --lm", with({"--lm", input, lm_ecdc})},
      {"compress --portable-lm", with({"--portable-lm", input, det_ecdc})},
      {"decompress (default)", with({ecdc, wav})},
      {"decompress --lm file", with({lm_ecdc, wav})},
      {"decompress --portable-lm file", with({det_ecdc, wav})},
  };
  std::printf("%-32s %10s %10s %12s\n", "process", "median ms", "min ms", "peak RSS MB");
  int failures = 0;
  const std::string log = (work / "stderr.txt").string();
  for (const auto& test_case : cases) {
    std::vector<double> wall_ms;
    ChildResult result;
    for (int i = 0; i < repeats; ++i) {
      result = run_child(test_case.args, 0, log);
      if (!result.ok) break;
      wall_ms.push_back(result.wall_s * 1e3);
    }
    if (!result.ok) {
      ++failures;
      std::ifstream messages(log);
      std::printf("%-32s failed (%s): %s\n", test_case.label, result.failure.c_str(),
                  std::string(std::istreambuf_iterator<char>(messages), {}).c_str());
      continue;
    }
    std::printf("%-32s %10.0f %10.0f %12.0f\n", test_case.label, median(wall_ms),
                *std::min_element(wall_ms.begin(), wall_ms.end()), result.peak_rss_mb);
    std::fflush(stdout);
  }

  // Where the loading goes, in this process (LibTorch already loaded).
  torch::set_num_threads(threads);
  std::vector<double> parse_codec, build_codec, parse_lm, build_lm, check_lm, det_lm;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    encodec::StateDict state = encodec::load_checkpoint(codec_path);
    parse_codec.push_back(elapsed_ms(start));
    start = std::chrono::steady_clock::now();
    const encodec::EncodecModel model = encodec::EncodecModel::from_state_dict(
        encodec::EncodecConfig::infer_from_state_dict("encodec_24khz", state), std::move(state), codec_path,
        encodec::KernelSet::kFastOnly);
    build_codec.push_back(elapsed_ms(start));
    start = std::chrono::steady_clock::now();
    const encodec::StateDict lm_state = encodec::load_checkpoint(lm_path);
    parse_lm.push_back(elapsed_ms(start));
    start = std::chrono::steady_clock::now();
    encodec::LmModel lm = encodec::LmModel::from_state_dict(encodec::LmConfig::for_codec(codec), lm_state, lm_path);
    build_lm.push_back(elapsed_ms(start));
    start = std::chrono::steady_clock::now();
    lm.fast_kernels_unavailable_reason();  // the exact kernels' self-check (--lm's first frame)
    check_lm.push_back(elapsed_ms(start));
    start = std::chrono::steady_clock::now();
    lm.set_kernels(encodec::LmKernels::kDeterministic);
    det_lm.push_back(elapsed_ms(start));
  }
  std::printf("in-process loading (median ms): codec checkpoint read %.0f, codec built (fast kernels) %.0f, "
              "LM checkpoint read %.0f, LM built %.0f, exact LM kernels' self-check %.0f, "
              "deterministic LM kernels packed %.0f\n",
              median(parse_codec), median(build_codec), median(parse_lm), median(build_lm), median(check_lm),
              median(det_lm));
  fs::remove_all(work);
  return failures == 0 ? 0 : 1;
}
