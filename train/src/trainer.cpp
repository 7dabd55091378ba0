#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "dataset.h"
#include "encodec/checkpoint_writer.h"
#include "progress_line.h"  // core/src
#include "trainer_impl.h"

namespace encodec::train {
namespace {

std::map<std::string, double> balanced_weights(const LossWeights& weights) {
  std::map<std::string, double> out;
  if (weights.time > 0) out["time"] = weights.time;
  if (weights.frequency > 0) out["frequency"] = weights.frequency;
  if (weights.adversarial > 0) out["adversarial"] = weights.adversarial;
  if (weights.feature > 0) out["feature"] = weights.feature;
  return out;
}

torch::optim::AdamOptions adam_options(const TrainConfig& config) {
  return torch::optim::AdamOptions(config.learning_rate).betas({config.beta1, config.beta2});
}

double value_of(const torch::Tensor& t) { return t.defined() ? t.detach().item<double>() : std::nan(""); }

std::string side_file(const std::string& path) { return path + ".trainer"; }

}  // namespace

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available()) throw std::invalid_argument("device cuda: no CUDA device is available");
    return torch::kCUDA;
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  throw std::invalid_argument("device '" + name + "' (expected auto, cpu or cuda)");
}

Trainer::Impl::Impl(const TrainConfig& config_in)
    : config(config_in),
      device(resolve_device(config_in.device)),
      balancer(balanced_weights(config_in.weights), config_in.balancer),
      mel_loss(config_in.model.sample_rate_hz),
      random(config_in.seed) {
  torch::manual_seed(config.seed);
  model = TrainableEncodec(config.model, config.codebooks);
  if (config.zero_conv_biases) {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters()) {
      const std::string& name = item.key();
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) item.value().zero_();
    }
  }
  model->to(device);
  generator_optimizer = std::make_unique<torch::optim::Adam>(model->parameters(), adam_options(config));
  if (uses_discriminator()) {
    discriminator = MultiScaleSTFTDiscriminator(config.discriminator, config.model.channels);
    discriminator->to(device);
    discriminator_optimizer = std::make_unique<torch::optim::Adam>(discriminator->parameters(), adam_options(config));
  }
}

Trainer::Trainer(const TrainConfig& config) {
  validate(config);
  if (config.threads > 0) torch::set_num_threads(config.threads);
  impl_ = std::make_unique<Impl>(config);
}

Trainer::~Trainer() = default;

int64_t Trainer::step_count() const { return impl_->step; }
const TrainConfig& Trainer::config() const { return impl_->config; }
StateDict Trainer::state_dict() const { return impl_->model->state_dict(); }

StepStats Trainer::step(const torch::Tensor& batch) {
  Impl& s = *impl_;
  const auto start = std::chrono::steady_clock::now();
  s.model->train();
  torch::Tensor x = batch.to(s.device, torch::kFloat32);

  // A bandwidth per batch, so that one model serves them all.
  const auto& bandwidths = s.config.model.target_bandwidths;
  const double bandwidth = bandwidths[std::uniform_int_distribution<size_t>(0, bandwidths.size() - 1)(s.random)];
  const int64_t n_q = std::min<int64_t>(s.config.model.num_codebooks(bandwidth), s.config.model.n_q);

  const bool warming_up = s.step < s.config.warmup_steps;
  TrainableEncodecImpl::Output out = warming_up ? s.model->forward_unquantized(x, s.config.warmup_noise) : s.model->forward(x, n_q);
  torch::Tensor y = out.audio;
  StepStats stats;
  stats.n_q = warming_up ? 0 : n_q;
  stats.bandwidth_kbps = bandwidth;
  stats.adversarial = stats.feature = stats.discriminator = std::nan("");

  std::map<std::string, torch::Tensor> losses;
  torch::Tensor time_loss = time_l1_loss(x, y);
  torch::Tensor mel = s.mel_loss(x, y);
  if (s.config.weights.time > 0) losses["time"] = time_loss;
  if (s.config.weights.frequency > 0) losses["frequency"] = mel;
  if (s.discriminator) {
    s.discriminator->train();
    DiscriminatorOutput fake = s.discriminator->forward(y);
    DiscriminatorOutput real;
    {
      torch::NoGradGuard no_grad;  // the real features are targets only
      real = s.discriminator->forward(x);
    }
    torch::Tensor adversarial = generator_adversarial_loss(fake.logits);
    torch::Tensor feature = feature_matching_loss(real.features, fake.features);
    if (s.config.weights.adversarial > 0) losses["adversarial"] = adversarial;
    if (s.config.weights.feature > 0) losses["feature"] = feature;
    stats.adversarial = value_of(adversarial);
    stats.feature = value_of(feature);
  }

  s.generator_optimizer->zero_grad();
  torch::Tensor encoder_penalty;  // outside the balancer, straight to the encoder
  if (s.config.weights.commitment > 0 && out.penalty.requires_grad()) encoder_penalty = out.penalty * s.config.weights.commitment;
  if (s.config.latent_penalty > 0) {
    torch::Tensor latent = out.latent.pow(2).mean() * s.config.latent_penalty;
    encoder_penalty = encoder_penalty.defined() ? encoder_penalty + latent : latent;
  }
  if (encoder_penalty.defined()) encoder_penalty.backward({}, /*retain_graph=*/true);
  s.balancer.backward(losses, y);
  s.generator_optimizer->step();

  if (s.discriminator &&
      std::uniform_real_distribution<double>(0, 1)(s.random) < s.config.discriminator_update_probability) {
    s.discriminator_optimizer->zero_grad();
    DiscriminatorOutput real = s.discriminator->forward(x);
    DiscriminatorOutput fake = s.discriminator->forward(y.detach());
    torch::Tensor loss = discriminator_loss(real.logits, fake.logits);
    loss.backward();
    s.discriminator_optimizer->step();
    stats.discriminator = value_of(loss);
  }

  stats.time_l1 = value_of(time_loss);
  stats.mel = value_of(mel);
  stats.commitment = value_of(out.penalty);
  stats.step = ++s.step;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

void Trainer::save(const std::string& path) const {
  const Impl& s = *impl_;
  save_checkpoint(path, state_dict());
  torch::serialize::OutputArchive archive;
  archive.write("step", torch::tensor(s.step, torch::kInt64));
  torch::serialize::OutputArchive generator_optimizer;
  s.generator_optimizer->save(generator_optimizer);
  archive.write("generator_optimizer", generator_optimizer);
  if (s.discriminator) {
    torch::serialize::OutputArchive discriminator, discriminator_optimizer;
    s.discriminator->save(discriminator);
    s.discriminator_optimizer->save(discriminator_optimizer);
    archive.write("discriminator", discriminator);
    archive.write("discriminator_optimizer", discriminator_optimizer);
  }
  torch::serialize::OutputArchive balancer;
  for (const auto& [name, value] : s.balancer.state()) {
    balancer.write(name, torch::tensor({value.first, value.second}, torch::kFloat64));
  }
  archive.write("balancer", balancer);
  // Written beside the target, then renamed: a crash never leaves half a file.
  const std::string target = side_file(path), temporary = target + ".tmp";
  archive.save_to(temporary);
  std::filesystem::rename(temporary, target);
}

void Trainer::resume(const std::string& path) {
  Impl& s = *impl_;
  s.model->load_state_dict(load_checkpoint(path), path);
  const std::string side = side_file(path);
  if (!std::filesystem::exists(side)) {
    throw std::runtime_error("cannot resume from " + path + ": " + side + " (step, optimizers, discriminator) is missing");
  }
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(side, s.device);
    torch::Tensor step;
    archive.read("step", step);
    torch::serialize::InputArchive generator_optimizer;
    archive.read("generator_optimizer", generator_optimizer);
    s.generator_optimizer->load(generator_optimizer);
    if (s.discriminator) {
      torch::serialize::InputArchive discriminator, discriminator_optimizer;
      archive.read("discriminator", discriminator);
      archive.read("discriminator_optimizer", discriminator_optimizer);
      s.discriminator->load(discriminator);
      s.discriminator_optimizer->load(discriminator_optimizer);
    }
    torch::serialize::InputArchive balancer;
    archive.read("balancer", balancer);
    std::map<std::string, std::pair<double, double>> state;
    for (const std::string& name : balancer.keys()) {
      torch::Tensor value;
      balancer.read(name, value);
      state[name] = {value[0].item<double>(), value[1].item<double>()};
    }
    s.balancer.set_state(state);
    s.step = step.item<int64_t>();
    // The saved Adam state carries its learning rate; the config's wins, so
    // that a run can go on at a lower rate (--resume --lr) for its last stretch.
    for (torch::optim::Optimizer* optimizer : {s.generator_optimizer.get(), s.discriminator_optimizer.get()}) {
      if (optimizer == nullptr) continue;
      for (auto& group : optimizer->param_groups()) {
        static_cast<torch::optim::AdamOptions&>(group.options()).lr(s.config.learning_rate);
      }
    }
  } catch (const c10::Error& error) {
    throw std::runtime_error("cannot resume from " + side + ": " + error.what_without_backtrace());
  }
  // The random streams restart from the seed and the step (their exact state is not saved).
  s.random.seed(s.config.seed + static_cast<uint64_t>(s.step));
  torch::manual_seed(s.config.seed + static_cast<uint64_t>(s.step));
}

void Trainer::init_codebooks(const torch::Tensor& batch) {
  Impl& s = *impl_;
  torch::NoGradGuard no_grad;
  torch::Tensor latents = s.model->encoder()->forward(batch.to(s.device, torch::kFloat32));
  // Latent vectors per training step: batch_size segments of this many frames.
  const int64_t frames_per_segment = latents.size(2) * static_cast<int64_t>(std::lround(
      s.config.segment_s * s.config.model.sample_rate_hz)) / batch.size(2);
  s.model->quantizer()->init_codebooks(latents, s.config.batch_size * frames_per_segment);
}

bool Trainer::codebooks_initialized() const {
  return impl_->model->quantizer()->layer(0)->codebook()->inited.item<float>() != 0.0f;
}

void Trainer::load_weights(const std::string& path) { impl_->model->load_state_dict(load_checkpoint(path), path); }

double si_snr_db(const torch::Tensor& reference, const torch::Tensor& estimate) {
  torch::Tensor r = reference.to(torch::kFloat64).flatten(), e = estimate.to(torch::kFloat64).flatten();
  TORCH_CHECK(r.numel() == e.numel() && r.numel() > 0, "si_snr_db: lengths differ or are empty");
  r = r - r.mean();
  e = e - e.mean();
  const double energy = r.pow(2).sum().item<double>();
  torch::Tensor target = r * (e.dot(r).item<double>() / std::max(energy, 1e-20));
  const double noise = (e - target).pow(2).sum().item<double>();
  const double signal = target.pow(2).sum().item<double>();
  return std::min(100.0, 10 * std::log10(std::max(signal, 1e-20) / std::max(noise, 1e-20)));
}

std::vector<Trainer::Evaluation> Trainer::evaluate(const std::string& dir) {
  Impl& s = *impl_;
  AudioFolder data(dir, s.config.model.sample_rate_hz, s.config.model.channels);
  torch::NoGradGuard no_grad;
  s.model->eval();
  std::vector<Evaluation> rows;
  const bool quantized = codebooks_initialized();
  for (double bandwidth : s.config.model.target_bandwidths) {
    Evaluation row;
    row.bandwidth_kbps = bandwidth;
    const int64_t n_q = std::min<int64_t>(s.config.model.num_codebooks(bandwidth), s.config.model.n_q);
    std::vector<torch::Tensor> codes;  // per file [n_q, frames]
    for (size_t i = 0; i < data.num_files(); ++i) {
      torch::Tensor x = data.clip(i).unsqueeze(0).to(s.device);
      // Before the codebooks exist (the warm-up), the autoencoder alone.
      TrainableEncodecImpl::Output out = quantized ? s.model->forward(x, n_q) : s.model->forward_unquantized(x);
      torch::Tensor y = out.audio;
      if (quantized) codes.push_back(out.codes.select(1, 0).cpu());
      row.time_l1 += time_l1_loss(x, y).item<double>();
      row.mel += s.mel_loss(x.mean(1, true), y.mean(1, true)).item<double>();
      row.si_snr_db += si_snr_db(x.cpu(), y.cpu());
      ++row.files;
    }
    row.time_l1 /= static_cast<double>(row.files);
    row.mel /= static_cast<double>(row.files);
    row.si_snr_db /= static_cast<double>(row.files);
    if (!quantized) {
      rows.push_back(row);  // no codes: distinct_codes and perplexity empty
      break;                // and the same for every bandwidth
    }
    torch::Tensor all_codes = torch::cat(codes, 1);
    for (int64_t q = 0; q < n_q; ++q) {
      const CodebookUsage usage = codebook_usage(all_codes[q], s.config.model.bins);
      row.distinct_codes.push_back(usage.distinct_codes);
      row.perplexity.push_back(usage.perplexity);
    }
    rows.push_back(row);
  }
  s.model->train();
  return rows;
}

void Trainer::run(const std::function<void(const StepStats&)>& on_step) {
  Impl& s = *impl_;
  if (s.config.data_dir.empty()) throw std::runtime_error("no data folder (data_dir) given");
  AudioFolder data(s.config.data_dir, s.config.model.sample_rate_hz, s.config.model.channels);
  const int64_t segment_length = static_cast<int64_t>(std::lround(s.config.segment_s * s.config.model.sample_rate_hz));
  ProgressLine line(s.config.progress);
  while (s.step < s.config.steps) {
    auto sample = [&](int64_t count) {
      torch::Tensor batch = data.sample_batch(count, segment_length, s.random);
      if (s.config.normalize_segments) {
        scale_to_random_loudness(batch, s.config.segment_rms_db_min, s.config.segment_rms_db_max,
                                 s.config.max_segment_gain_db, s.random);
      }
      return batch;
    };
    if (s.config.warmup_steps > 0 && s.step >= s.config.warmup_steps && !codebooks_initialized()) {
      init_codebooks(sample(s.config.kmeans_segments));
    }
    StepStats stats = step(sample(s.config.batch_size));
    if (on_step) on_step(stats);
    if (line.due()) {
      std::ostringstream text;
      text.precision(4);
      text << "step " << stats.step << "/" << s.config.steps << "  mel " << stats.mel << "  l1 " << stats.time_l1
           << "  commit " << stats.commitment;
      if (s.discriminator) text << "  adv " << stats.adversarial << "  feat " << stats.feature;
      text << "  " << stats.seconds << " s/step";
      line.draw(text.str());
    }
    if (!s.config.checkpoint_path.empty() && s.config.save_every > 0 && s.step % s.config.save_every == 0) {
      save(s.config.checkpoint_path);
    }
  }
  line.finish();
  if (!s.config.checkpoint_path.empty()) save(s.config.checkpoint_path);
}

}  // namespace encodec::train
