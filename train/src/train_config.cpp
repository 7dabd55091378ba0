// TrainConfig from JSON, and its validation.
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "encodec/train.h"

namespace encodec::train {
namespace {

using nlohmann::json;

// Reads the keys of one JSON object into fields, refusing keys it does not know.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string where) : object_(object), where_(std::move(where)) {
    if (!object_.is_object()) fail(where_ + " is not a JSON object");
  }
  ~ObjectReader() noexcept(false) {
    if (std::uncaught_exceptions() > 0) return;
    for (const auto& item : object_.items()) {
      if (!known_.count(item.key())) fail(where_ + ": unknown key '" + item.key() + "'");
    }
  }
  template <typename T>
  void read(const std::string& key, T& field) {
    known_.insert(key);
    auto found = object_.find(key);
    if (found == object_.end()) return;
    try {
      field = found->get<T>();
    } catch (const json::exception&) {
      fail(where_ + "." + key + ": unexpected value " + found->dump());
    }
  }
  // A nested object, read by `read_fields`.
  template <typename ReadFields>
  void object(const std::string& key, const ReadFields& read_fields) {
    known_.insert(key);
    auto found = object_.find(key);
    if (found == object_.end()) return;
    ObjectReader nested(*found, where_ + "." + key);
    read_fields(nested);
  }

 private:
  [[noreturn]] static void fail(const std::string& message) { throw std::invalid_argument(message); }
  const json& object_;
  std::string where_;
  std::set<std::string> known_;
};

}  // namespace

EncodecConfig TrainConfig::default_model() {
  EncodecConfig model = EncodecConfig::official_24khz();
  model.n_filters = 8;
  model.dimension = 64;
  model.n_q = 8;
  model.target_bandwidths = {1.5, 3.0, 6.0};
  return model;
}

TrainConfig parse_train_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& error) {
    throw std::invalid_argument(source + ": not valid JSON (" + error.what() + ")");
  }
  TrainConfig c;
  ObjectReader r(root, source);
  r.object("model", [&c](ObjectReader& m) {
    m.read("name", c.model.name);
    m.read("sample_rate_hz", c.model.sample_rate_hz);
    m.read("channels", c.model.channels);
    m.read("causal", c.model.causal);
    m.read("norm", c.model.norm);
    m.read("n_filters", c.model.n_filters);
    m.read("dimension", c.model.dimension);
    m.read("ratios", c.model.ratios);
    m.read("n_residual_layers", c.model.n_residual_layers);
    m.read("lstm_layers", c.model.lstm_layers);
    m.read("n_q", c.model.n_q);
    m.read("bins", c.model.bins);
    m.read("target_bandwidths", c.model.target_bandwidths);
  });
  r.object("codebooks", [&c](ObjectReader& q) {
    q.read("decay", c.codebooks.decay);
    q.read("epsilon", c.codebooks.epsilon);
    q.read("kmeans_init", c.codebooks.kmeans_init);
    q.read("kmeans_iters", c.codebooks.kmeans_iters);
    q.read("threshold_ema_dead_code", c.codebooks.threshold_ema_dead_code);
    q.read("commitment_weight", c.codebooks.commitment_weight);
  });
  r.object("discriminator", [&c](ObjectReader& d) {
    d.read("filters", c.discriminator.filters);
    d.read("max_filters", c.discriminator.max_filters);
    d.read("filters_scale", c.discriminator.filters_scale);
    d.read("n_ffts", c.discriminator.n_ffts);
    d.read("hop_lengths", c.discriminator.hop_lengths);
    d.read("win_lengths", c.discriminator.win_lengths);
  });
  r.object("balancer", [&c](ObjectReader& b) {
    b.read("rescale_grads", c.balancer.rescale_grads);
    b.read("total_norm", c.balancer.total_norm);
    b.read("ema_decay", c.balancer.ema_decay);
    b.read("per_batch_item", c.balancer.per_batch_item);
    b.read("epsilon", c.balancer.epsilon);
  });
  r.object("weights", [&c](ObjectReader& w) {
    w.read("time", c.weights.time);
    w.read("frequency", c.weights.frequency);
    w.read("adversarial", c.weights.adversarial);
    w.read("feature", c.weights.feature);
    w.read("commitment", c.weights.commitment);
  });
  r.read("learning_rate", c.learning_rate);
  r.read("beta1", c.beta1);
  r.read("beta2", c.beta2);
  r.read("batch_size", c.batch_size);
  r.read("segment_s", c.segment_s);
  r.read("steps", c.steps);
  r.read("warmup_steps", c.warmup_steps);
  r.read("kmeans_segments", c.kmeans_segments);
  r.read("warmup_noise", c.warmup_noise);
  r.read("latent_penalty", c.latent_penalty);
  r.read("zero_conv_biases", c.zero_conv_biases);
  r.read("normalize_segments", c.normalize_segments);
  r.read("segment_rms_db_min", c.segment_rms_db_min);
  r.read("segment_rms_db_max", c.segment_rms_db_max);
  r.read("max_segment_gain_db", c.max_segment_gain_db);
  r.read("discriminator_update_probability", c.discriminator_update_probability);
  r.read("data_dir", c.data_dir);
  r.read("checkpoint_path", c.checkpoint_path);
  r.read("save_every", c.save_every);
  r.read("seed", c.seed);
  r.read("device", c.device);
  r.read("threads", c.threads);
  r.read("progress", c.progress);
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read config " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_train_config(text.str(), path);
}

void validate(const TrainConfig& c) {
  auto fail = [](const std::string& message) { throw std::invalid_argument("config: " + message); };
  const EncodecConfig& m = c.model;
  // The 48 kHz model also normalizes the volume of 1 s chunks, which training does not do yet.
  if (m.name != "encodec_24khz") fail("model.name must be encodec_24khz (the 48 kHz model's chunked, normalized training is not implemented)");
  if (m.sample_rate_hz <= 0 || m.channels < 1 || m.channels > 2) fail("model.sample_rate_hz must be positive and model.channels 1 or 2");
  if (m.norm != "weight_norm" && m.norm != "time_group_norm" && m.norm != "none") fail("model.norm must be weight_norm, time_group_norm or none");
  if (m.causal && m.norm == "time_group_norm") fail("a causal model cannot use time_group_norm (GroupNorm looks at the whole signal)");
  if (m.n_filters < 1 || m.dimension < 1 || m.n_q < 1 || m.bins < 2 || m.lstm_layers < 0 || m.n_residual_layers < 1) {
    fail("model.n_filters, dimension, n_q, n_residual_layers must be >= 1, bins >= 2, lstm_layers >= 0");
  }
  if (m.ratios.empty()) fail("model.ratios is empty");
  for (int ratio : m.ratios) {
    if (ratio < 1) fail("model.ratios must be >= 1");
  }
  if (m.target_bandwidths.empty()) fail("model.target_bandwidths is empty");
  for (double bandwidth : m.target_bandwidths) {
    if (m.num_codebooks(bandwidth) > m.n_q) {
      std::ostringstream message;
      message << "model.target_bandwidths: " << bandwidth << " kbps needs " << m.num_codebooks(bandwidth)
              << " codebooks, model.n_q is " << m.n_q;
      fail(message.str());
    }
  }
  if (c.codebooks.decay <= 0 || c.codebooks.decay >= 1) fail("codebooks.decay must be in (0, 1)");
  if (c.codebooks.epsilon <= 0 || c.codebooks.kmeans_iters < 0) fail("codebooks.epsilon must be > 0 and kmeans_iters >= 0");
  const auto& d = c.discriminator;
  if (d.n_ffts.size() != d.hop_lengths.size() || d.n_ffts.size() != d.win_lengths.size() || d.n_ffts.empty()) {
    fail("discriminator.n_ffts, hop_lengths and win_lengths must be non-empty and of equal length");
  }
  for (size_t i = 0; i < d.n_ffts.size(); ++i) {
    if (d.win_lengths[i] != d.n_ffts[i]) fail("discriminator.win_lengths must equal n_ffts");
    if (d.hop_lengths[i] < 1) fail("discriminator.hop_lengths must be >= 1");
  }
  const LossWeights& w = c.weights;
  if (w.time < 0 || w.frequency < 0 || w.adversarial < 0 || w.feature < 0 || w.commitment < 0) fail("weights must be >= 0");
  if (w.time + w.frequency + w.adversarial + w.feature <= 0) fail("weights: every balanced loss (time, frequency, adversarial, feature) is 0");
  if (c.segment_rms_db_min > c.segment_rms_db_max || c.segment_rms_db_max > 0 || c.max_segment_gain_db < 0) {
    fail("segment_rms_db_min must be <= segment_rms_db_max <= 0 and max_segment_gain_db >= 0");
  }
  if (c.learning_rate <= 0 || c.batch_size < 1 || c.segment_s <= 0 || c.steps < 0) {
    fail("learning_rate, batch_size, segment_s must be positive and steps >= 0");
  }
  if (c.warmup_steps < 0 || c.kmeans_segments < 1) fail("warmup_steps must be >= 0 and kmeans_segments >= 1");
  if (c.warmup_noise < 0 || c.latent_penalty < 0) fail("warmup_noise and latent_penalty must be >= 0");
  const double segment = c.segment_s * m.sample_rate_hz;
  for (int64_t n_fft : d.n_ffts) {
    if (w.adversarial + w.feature > 0 && segment < static_cast<double>(n_fft)) {
      fail("segment_s is shorter than the discriminator's largest window");
    }
  }
  if (segment <= 1024) fail("segment_s must exceed 1024 samples (the mel loss's largest window is 2048)");
}

}  // namespace encodec::train
