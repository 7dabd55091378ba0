// encodec-train's command line: a JSON config (optional) overridden by flags.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <malloc.h>

#include <CLI/CLI.hpp>

#include "encodec/checkpoint.h"
#include "encodec/checkpoint_writer.h"
#include "encodec/train.h"

namespace encodec::train {

namespace {

// Writes `from`'s state_dict to `to` with float16 tensors. A value beyond
// float16's range would become infinite: refused, naming the tensor.
void export_half_precision(const std::string& from, const std::string& to) {
  if (!std::filesystem::exists(from)) throw std::invalid_argument("--export-half: " + from + " does not exist");
  StateDict state = load_checkpoint(from);
  for (auto& [name, tensor] : state) {
    if (!tensor.is_floating_point()) continue;
    torch::Tensor half = tensor.to(torch::kFloat16);
    if (!torch::isfinite(half).all().item<bool>()) {
      throw std::invalid_argument("--export-half: tensor '" + name + "' of " + from + " does not fit in float16");
    }
    tensor = half;
  }
  save_checkpoint(to, state);
}

// One line per bandwidth: losses, SI-SNR, and per codebook "distinct codes/perplexity".
void print_evaluation(const std::string& label, const std::vector<Trainer::Evaluation>& rows) {
  for (const Trainer::Evaluation& row : rows) {
    std::printf("%s  %.1f kbps  files %lld  l1 %.5f  mel %.5f  SI-SNR %.2f dB  codes/perplexity", label.c_str(),
                row.bandwidth_kbps, static_cast<long long>(row.files), row.time_l1, row.mel, row.si_snr_db);
    for (size_t q = 0; q < row.perplexity.size(); ++q) {
      std::printf(" %lld/%.1f", static_cast<long long>(row.distinct_codes[q]), row.perplexity[q]);
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

}  // namespace

int train_main(int argc, char** argv) {
  CLI::App app{"encodec-train: trains an EnCodec model on a folder of audio files and writes checkpoints in "
               "the official state_dict layout (load them with `encodec --checkpoint FILE`)."};
  std::string config_path, data_dir, checkpoint_path, device;
  bool resume = false, quiet = false, no_adversarial = false;
  int64_t steps = -1, batch_size = -1, save_every = -1, log_every = 50, warmup_steps = -1, eval_every = 500;
  std::string heldout_dir;
  double segment_s = -1, learning_rate = -1;
  int threads = -1, n_filters = -1, dimension = -1, n_q = -1, bins = -1, lstm_layers = -1;
  int64_t seed = -1;
  std::vector<double> bandwidths;
  app.add_option("-c,--config", config_path, "JSON file with TrainConfig's fields (see README, Training)")->check(CLI::ExistingFile);
  app.add_option("-d,--data", data_dir, "folder of audio files (searched recursively, resampled to the model's rate)");
  app.add_option("-o,--checkpoint", checkpoint_path, "checkpoint to write (and FILE.trainer beside it)");
  app.add_flag("--resume", resume, "continue from --checkpoint and its .trainer file");
  app.add_option("--steps", steps, "train until this step count");
  app.add_option("--warmup-steps", warmup_steps,
                 "steps without quantizer before the k-means init of the codebooks on the encoder's latents");
  app.add_option("--heldout", heldout_dir,
                 "while training, evaluate on the audio files of this folder every --eval-every steps "
                 "(losses, SI-SNR, codebook usage)");
  app.add_option("--eval-every", eval_every, "steps between --heldout evaluations");
  app.add_option("--batch-size", batch_size, "segments per batch");
  app.add_option("--segment", segment_s, "segment length in seconds");
  app.add_option("--lr", learning_rate, "Adam learning rate (both networks)");
  app.add_option("--n-filters", n_filters, "SEANet base width");
  app.add_option("--dimension", dimension, "latent dimension");
  app.add_option("--n-q", n_q, "codebooks");
  app.add_option("--bins", bins, "entries per codebook");
  app.add_option("--lstm-layers", lstm_layers, "LSTM layers (0: none)");
  app.add_option("--bandwidths", bandwidths, "target bandwidths in kbps, sampled one per batch")->delimiter(',');
  app.add_flag("--no-adversarial", no_adversarial, "no discriminator: time and mel losses only");
  app.add_option("--save-every", save_every, "steps between checkpoints");
  app.add_option("--seed", seed, "random seed");
  app.add_option("--device", device, "auto, cpu or cuda");
  app.add_option("--threads", threads, "LibTorch threads (default: one per core)");
  app.add_option("--log-every", log_every, "print a line of losses every N steps (0: never)");
  app.add_flag("-q,--quiet", quiet, "no progress line");
  std::string evaluate_dir;
  app.add_option("--evaluate", evaluate_dir,
                 "no training: evaluate --checkpoint on the audio files of this folder at each bandwidth "
                 "(time L1, mel loss, SI-SNR)");
  std::string export_half_path;
  app.add_option("--export-half", export_half_path,
                 "no training: write --checkpoint to this file with its floating-point tensors in float16 (the "
                 "same official layout at half the size; loaders convert back to float32; how the shipped demo "
                 "model is made)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int status = app.exit(error);  // prints help, or the error and a hint
    return status == 0 ? 0 : 2;
  }
  try {
    TrainConfig config;
    if (!config_path.empty()) config = load_train_config(config_path);
    if (!data_dir.empty()) config.data_dir = data_dir;
    if (!checkpoint_path.empty()) config.checkpoint_path = checkpoint_path;
    if (!device.empty()) config.device = device;
    if (steps >= 0) config.steps = steps;
    if (batch_size > 0) config.batch_size = batch_size;
    if (warmup_steps >= 0) config.warmup_steps = warmup_steps;
    if (segment_s > 0) config.segment_s = segment_s;
    if (learning_rate > 0) config.learning_rate = learning_rate;
    if (n_filters > 0) config.model.n_filters = n_filters;
    if (dimension > 0) config.model.dimension = dimension;
    if (n_q > 0) config.model.n_q = n_q;
    if (bins > 0) config.model.bins = bins;
    if (lstm_layers >= 0) config.model.lstm_layers = lstm_layers;
    if (!bandwidths.empty()) config.model.target_bandwidths = bandwidths;
    if (no_adversarial) config.weights.adversarial = config.weights.feature = 0;
    if (save_every > 0) config.save_every = save_every;
    if (seed >= 0) config.seed = static_cast<uint64_t>(seed);
    if (threads > 0) config.threads = threads;
    if (quiet) config.progress = false;
    if (config.checkpoint_path.empty()) throw std::invalid_argument("no checkpoint to write: give --checkpoint FILE");
    if (!export_half_path.empty()) {
      export_half_precision(config.checkpoint_path, export_half_path);
      std::cerr << "encodec-train: wrote " << export_half_path << " (float16)\n";
      return 0;
    }
    if ((resume || !evaluate_dir.empty()) && !std::filesystem::exists(config.checkpoint_path)) {
      if (!evaluate_dir.empty()) throw std::invalid_argument("--evaluate: " + config.checkpoint_path + " does not exist");
      throw std::invalid_argument("--resume: " + config.checkpoint_path + " does not exist");
    }

    if (!evaluate_dir.empty()) {
      // The widths come from the checkpoint; the bandwidths it can serve from the config.
      const EncodecConfig inferred = EncodecConfig::infer_from_state_dict("encodec_24khz", load_checkpoint(config.checkpoint_path));
      config.model.n_filters = inferred.n_filters;
      config.model.dimension = inferred.dimension;
      config.model.bins = inferred.bins;
      config.model.n_q = inferred.n_q;
      config.model.lstm_layers = inferred.lstm_layers;
      std::vector<double> fitting;
      for (double bandwidth : config.model.target_bandwidths) {
        if (config.model.num_codebooks(bandwidth) <= config.model.n_q) fitting.push_back(bandwidth);
      }
      if (fitting.empty()) throw std::invalid_argument("--evaluate: no bandwidth of --bandwidths fits " + config.checkpoint_path);
      config.model.target_bandwidths = fitting;
      config.weights.adversarial = config.weights.feature = 0;  // no discriminator needed
    }
    const std::filesystem::path folder = std::filesystem::path(config.checkpoint_path).parent_path();
    if (!folder.empty()) std::filesystem::create_directories(folder);
    // Every step allocates and frees the same activations: keep them in the
    // heap (glibc's largest mmap threshold, no trimming) rather than mapping
    // and zeroing them again each step, which cost as much system time as the
    // arithmetic itself on this machine.
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);

    Trainer trainer(config);
    if (!evaluate_dir.empty()) {
      trainer.load_weights(config.checkpoint_path);
      print_evaluation(config.checkpoint_path, trainer.evaluate(evaluate_dir));
      return 0;
    }
    if (resume) trainer.resume(config.checkpoint_path);
    std::cerr << "encodec-train: " << config.model.name << " n_filters " << config.model.n_filters << ", dimension "
              << config.model.dimension << ", " << config.model.n_q << " codebooks of " << config.model.bins
              << ", device " << (torch::cuda::is_available() && config.device != "cpu" ? "cuda" : "cpu")
              << ", threads " << torch::get_num_threads() << ", from step " << trainer.step_count() << "\n";
    trainer.run([&](const StepStats& s) {
      if (!heldout_dir.empty() && eval_every > 0 && s.step % eval_every == 0) {
        print_evaluation("step " + std::to_string(s.step), trainer.evaluate(heldout_dir));
      }
      if (log_every <= 0 || s.step % log_every != 0) return;
      std::printf("step %lld  bw %.1f  l1 %.5f  mel %.5f  commit %.5f  adv %.4f  feat %.4f  disc %.4f  %.2f s\n",
                  static_cast<long long>(s.step), s.bandwidth_kbps, s.time_l1, s.mel, s.commitment, s.adversarial,
                  s.feature, s.discriminator, s.seconds);
      std::fflush(stdout);
    });
    std::cerr << "encodec-train: wrote " << config.checkpoint_path << " at step " << trainer.step_count() << "\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "encodec-train: " << error.what() << "\n";
    return 1;
  }
}

}  // namespace encodec::train
