// encodec-train: trains an EnCodec model (SEANet encoder/decoder, residual
// vector quantizer with EMA codebooks) with the published losses (time L1,
// multi-scale mel L1 + L2, MS-STFT discriminator with hinge and feature-matching
// losses, the gradient-norm loss balancer) on a folder of audio files, and
// writes checkpoints in the official state_dict layout, which `encodec
// --checkpoint FILE` and EncodecModel::from_checkpoint load unchanged.
//
// Usage:
//   encodec::train::TrainConfig config = encodec::train::load_train_config("small.json");
//   config.data_dir = "speech/";
//   config.checkpoint_path = "small.th";      // + small.th.trainer: optimizers, discriminator, step
//   encodec::train::Trainer trainer(config);  // or trainer.resume("small.th")
//   trainer.run([](const encodec::train::StepStats& s) { ... });
//
// Thread safety: a Trainer belongs to one thread (LibTorch parallelizes inside
// operations; set the thread count with TrainConfig::threads).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "encodec/checkpoint.h"
#include "encodec/encodec.h"

namespace encodec::train {

// The codebooks (encodec/quantization/core_vq.py's arguments).
struct CodebookOptions {
  double decay = 0.99;
  double epsilon = 1e-5;
  bool kmeans_init = true;
  int kmeans_iters = 50;
  double threshold_ema_dead_code = 2.0;
  double commitment_weight = 1.0;
};

// The MS-STFT discriminator (encodec/msstftd.py) with the paper's five scales.
struct DiscriminatorOptions {
  int64_t filters = 32;
  int64_t max_filters = 1024;
  int64_t filters_scale = 1;
  std::vector<int64_t> n_ffts = {1024, 2048, 512, 256, 128};
  std::vector<int64_t> hop_lengths = {256, 512, 128, 64, 32};
  std::vector<int64_t> win_lengths = {1024, 2048, 512, 256, 128};
};

// The loss balancer (encodec/balancer.py).
struct BalancerOptions {
  bool rescale_grads = true;  // false: a plain weighted sum of the gradients
  double total_norm = 1.0;
  double ema_decay = 0.999;
  bool per_batch_item = true;  // gradient norm per batch item, then their mean
  double epsilon = 1e-12;
};

// Loss weights as published (lambda_t, lambda_f, lambda_g, lambda_feat,
// lambda_w). The first four go through the balancer; the commitment loss is
// added to the encoder's gradient directly. A weight of 0 drops that loss
// (adversarial and feature both 0: no discriminator at all).
struct LossWeights {
  double time = 0.1;
  double frequency = 1.0;
  double adversarial = 3.0;
  double feature = 3.0;
  double commitment = 1.0;
};

struct TrainConfig {
  // The architecture. Default: the official causal 24 kHz layout, narrower
  // (n_filters 8, dimension 64, 8 codebooks of 1024: up to 6 kbps).
  EncodecConfig model = default_model();
  CodebookOptions codebooks;
  DiscriminatorOptions discriminator;
  BalancerOptions balancer;
  LossWeights weights;

  // Adam for both networks, as published (lr 3e-4, betas 0.5, 0.9).
  double learning_rate = 3e-4;
  double beta1 = 0.5;
  double beta2 = 0.9;
  int64_t batch_size = 8;
  double segment_s = 1.0;
  int64_t steps = 1000;  // run() stops when the step count reaches this
  // The first warmup_steps steps bypass the quantizer (a plain autoencoder);
  // then run() initializes every codebook by k-means on the latents of
  // kmeans_segments random segments (init_codebooks). An encoder at its random
  // init gives nearly constant latents, and codebooks fit on those collapse (one
  // code for everything); a warmed-up encoder's latents spread. 0: the
  // reference's behaviour, k-means on the first batch each codebook sees.
  int64_t warmup_steps = 0;
  int64_t kmeans_segments = 64;
  // Left alone, the encoder's latent is a large offset (norm ~10-25 here) with
  // the information in variations ~100x smaller, and the offset moves by more
  // than those variations every few steps: no codebook can follow, every
  // vector takes one code. Two terms keep the latent quantizable:
  // warmup_noise, the standard deviation of Gaussian noise added to the
  // latent during the warm-up (the decoder can only use variations larger
  // than it), and latent_penalty, the weight of mean(latent^2) added to the
  // encoder's gradient at every step (as the commitment loss is), which keeps
  // the offset near 0.
  double warmup_noise = 0;
  double latent_penalty = 0;
  // Start every convolution's bias at 0 (PyTorch draws them like the weights).
  // The audio is small (mean |x| ~0.06) and each default-initialized layer
  // shrinks its input, so random biases dominate the signal from the first
  // layer on: the latent is then mostly the biases' constant, and the decoder
  // learns an output that does not depend on its input at all.
  bool zero_conv_biases = false;
  // Loudness augmentation: each training segment scaled to an RMS drawn
  // uniformly in dB from [segment_rms_db_min, segment_rms_db_max], the gain
  // capped at max_segment_gain_db (near-silence is not raised into the range)
  // and by the peak (at most 0.99 after scaling). The losses grow with the
  // level (the mel L2 with its square), so without it loud material (music at
  // RMS -17 to -13 dB here) outweighs quiet (speech at -29 to -20 dB), and
  // the model learns mostly the former.
  bool normalize_segments = false;
  double segment_rms_db_min = -26;
  double segment_rms_db_max = -14;
  double max_segment_gain_db = 20;
  // The discriminator updates on a batch with this probability (2/3 at 24 kHz in the paper).
  double discriminator_update_probability = 2.0 / 3.0;

  std::string data_dir;         // audio files, searched recursively
  std::string checkpoint_path;  // written every save_every steps and at the end
  int64_t save_every = 500;
  uint64_t seed = 0;
  std::string device = "auto";  // "auto" (CUDA when available), "cpu", "cuda"
  int threads = 0;              // LibTorch intra-op threads; 0: its default
  bool progress = true;         // a status line on stderr when it is a terminal

  static EncodecConfig default_model();
};

// Reads a JSON object whose keys are TrainConfig's fields (nested objects
// "model", "codebooks", "discriminator", "balancer", "weights"), each optional.
// Throws std::invalid_argument naming an unknown key or a value of the wrong type.
TrainConfig load_train_config(const std::string& path);
TrainConfig parse_train_config(const std::string& json_text, const std::string& source = "config");

// Throws std::invalid_argument saying which field is inconsistent (e.g. a
// causal model with time_group_norm, bandwidths needing more codebooks than n_q).
void validate(const TrainConfig& config);

// What one step did. Losses are unweighted; NaN where not computed.
struct StepStats {
  int64_t step = 0;  // after this step
  int64_t n_q = 0;   // codebooks used (bandwidth sampled for the batch)
  double bandwidth_kbps = 0;
  double time_l1 = 0, mel = 0, adversarial = 0, feature = 0, commitment = 0, discriminator = 0;
  double seconds = 0;  // wall time of the step
};

class Trainer {
 public:
  // Builds the model, discriminator and optimizers from `config` (validated),
  // seeded with config.seed; nothing is read from disk yet.
  explicit Trainer(const TrainConfig& config);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One training step on `batch` [B, channels, T] (T a multiple of the hop is
  // best; the output is trimmed to T).
  StepStats step(const torch::Tensor& batch);

  // Reads config.data_dir (every audio file, converted to the model's rate and
  // channels), then steps on random segments until config.steps, saving to
  // config.checkpoint_path every save_every steps and at the end. `on_step`
  // sees every step. Throws std::runtime_error (no audio, too short, ...).
  void run(const std::function<void(const StepStats&)>& on_step = {});

  // The model's weights and codebook buffers in the official layout.
  StateDict state_dict() const;
  // Writes state_dict() to `path` (torch.save format) and the rest of the
  // training state (step, optimizers, discriminator, balancer) to `path`.trainer.
  void save(const std::string& path) const;
  // Loads both files written by save(); the architecture must match. Throws
  // CheckpointError or std::runtime_error naming the file at fault.
  void resume(const std::string& path);

  // The k-means init of all codebooks (see warmup_steps) on the latents of
  // `batch` [B, channels, T]; run() calls it when the warm-up ends.
  void init_codebooks(const torch::Tensor& batch);
  // Whether the first codebook has been initialized (by k-means or a checkpoint).
  bool codebooks_initialized() const;

  // Loads only the model's weights and codebooks from a checkpoint (any
  // checkpoint of this architecture, e.g. to evaluate it).
  void load_weights(const std::string& path);

  // The model in eval mode on every file of `dir` (whole files, converted as
  // for training), at each of config().model.target_bandwidths: the mean time
  // L1, multi-scale mel loss and SI-SNR over the files. Before any codebook is
  // initialized (during the warm-up) one row: the autoencoder without quantizer.
  struct Evaluation {
    double bandwidth_kbps = 0;
    double time_l1 = 0, mel = 0, si_snr_db = 0;
    int64_t files = 0;
    // Per codebook used at this bandwidth, over the codes of all the files:
    // distinct codes and perplexity (see codebook_usage in trainable_vq.h).
    std::vector<int64_t> distinct_codes;
    std::vector<double> perplexity;
  };
  std::vector<Evaluation> evaluate(const std::string& dir);

  int64_t step_count() const;
  const TrainConfig& config() const;

  struct Impl;
  Impl& impl() { return *impl_; }  // for tests

 private:
  std::unique_ptr<Impl> impl_;
};

// Scale-invariant SNR in dB of `estimate` against `reference` (both [T]; the
// means removed, the estimate projected on the reference), capped at 100 dB.
double si_snr_db(const torch::Tensor& reference, const torch::Tensor& estimate);

// encodec-train's command line (flags override the --config file); returns the
// exit status: 0 done, 1 an error (named on stderr), 2 invalid arguments.
int train_main(int argc, char** argv);

}  // namespace encodec::train
