// Compiled with -ffp-contract=off (core/CMakeLists.txt): the element-wise sums
// here are single roundings, as in every tier.
#include "lm/det_lm.h"

#include <cmath>
#include <cstring>

#include "lm/det_kernels.h"

namespace encodec::lm {
namespace {

constexpr float kLayerNormEps = 1e-5f;

std::vector<float> to_vector(const torch::Tensor& tensor) {
  const torch::Tensor contiguous = tensor.contiguous();
  const float* data = contiguous.data_ptr<float>();
  return std::vector<float>(data, data + contiguous.numel());
}

std::shared_ptr<const DetWeights> prepare(const LmModel::Weights& weights) {
  const LmConfig& config = weights.config;
  const int dim = config.dim;
  auto det = std::make_shared<DetWeights>();
  for (const LmLayerWeights& layer : weights.layers) {
    DetLayer d;
    d.q = DetLinear(layer.in_proj_weight.slice(0, 0, dim), layer.in_proj_bias.slice(0, 0, dim));
    d.kv = DetLinear(layer.in_proj_weight.slice(0, dim, 3 * dim), layer.in_proj_bias.slice(0, dim, 3 * dim));
    d.out_proj = DetLinear(layer.out_proj_weight, layer.out_proj_bias);
    d.linear1 = DetLinear(layer.linear1_weight, layer.linear1_bias);
    d.linear2 = DetLinear(layer.linear2_weight, layer.linear2_bias);
    d.norm1_weight = to_vector(layer.norm1_weight);
    d.norm1_bias = to_vector(layer.norm1_bias);
    d.norm2_weight = to_vector(layer.norm2_weight);
    d.norm2_bias = to_vector(layer.norm2_bias);
    det->layers.push_back(std::move(d));
  }
  det->heads = DetLinear(weights.linears_weight, weights.linears_bias);
  det->norm_in_weight = to_vector(weights.norm_in_weight);
  det->norm_in_bias = to_vector(weights.norm_in_bias);
  det->position_divisors = det::position_divisors(dim / 2, config.max_period);
  det->query_scale = static_cast<float>(std::sqrt(static_cast<double>(dim / config.num_heads)));
  return det;
}

// One layer's keys (transposed: a head's keys are rows) and values, in a ring
// of past_context + 1 slots.
struct DetCache {
  int capacity = 0;
  int start = 0, size = 0;
  std::vector<float> keys_t;  // [dim, capacity]
  std::vector<float> values;  // [capacity, dim]
};

class DetLmStepper : public LmStepper {
 public:
  DetLmStepper(SharedLmWeights weights, int num_codebooks)
      : owner_(std::move(weights)),
        weights_(*owner_),
        det_(det_weights(weights_)),
        config_(weights_.config),
        kernels_(det::tier_kernels(fast::cpu_tier())),
        num_codebooks_(num_codebooks) {
    TORCH_CHECK(num_codebooks >= 1 && num_codebooks <= config_.n_q, "the LM predicts 1 to ",
                config_.n_q, " codebooks, not ", num_codebooks);
    const int dim = config_.dim, capacity = config_.past_context + 1;
    caches_.resize(config_.num_layers);
    for (DetCache& cache : caches_) {
      cache.capacity = capacity;
      cache.keys_t.assign(static_cast<size_t>(dim) * capacity, 0.0f);
      cache.values.assign(static_cast<size_t>(capacity) * dim, 0.0f);
    }
    x_.resize(dim);
    normed_.resize(dim);
    q_.resize(dim);
    kv_.resize(2 * dim);
    attention_.resize(dim);
    projected_.resize(dim);
    hidden_.resize(config_.hidden_dim());
    activated_.resize(config_.hidden_dim());
    scores_.resize(static_cast<size_t>(config_.num_heads) * capacity);
    probabilities_.resize(static_cast<size_t>(num_codebooks) * config_.card);
    reset();
  }

  int num_codebooks() const override { return num_codebooks_; }

  void reset() override {
    offset_ = 0;
    // The reference's initial state: one all-zero input row per layer.
    std::fill(x_.begin(), x_.end(), 0.0f);
    for (int l = 0; l < config_.num_layers; ++l) {
      caches_[l].start = 0;
      caches_[l].size = 0;
      append(l);
      caches_[l].size = 1;
    }
  }

  const float* step(const int64_t* previous_codes) override {
    det::DetFloatScope float_scope;
    const int dim = config_.dim;
    // sum([emb[k](indices[:, k]) ...]) from the int 0, in codebook order.
    for (int k = 0; k < num_codebooks_; ++k) {
      const int64_t index = previous_codes ? previous_codes[k] + 1 : 0;
      TORCH_CHECK(index >= 0 && index <= config_.card, "code ", index - 1, " out of range");
      const float* row = weights_.emb[k].data_ptr<float>() + index * dim;
      for (int i = 0; i < dim; ++i) x_[i] = (k == 0 ? 0.0f : x_[i]) + row[i];
    }
    norm(det_.norm_in_weight, det_.norm_in_bias);
    float* position = projected_.data();  // scratch
    det::sin_embedding(offset_, det_.position_divisors.data(), dim / 2, position);
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + position[i];
    for (int l = 0; l < config_.num_layers; ++l) layer(l);
    const int card = config_.card;
    kernels_.linear(x_.data(), det_.heads.packed.data(), det_.heads.bias.data(), num_codebooks_ * card,
                    dim, probabilities_.data());
    for (int k = 0; k < num_codebooks_; ++k) {
      kernels_.softmax(probabilities_.data() + static_cast<size_t>(k) * card, card);
    }
    ++offset_;
    return probabilities_.data();
  }

 private:
  void apply(const DetLinear& linear, const float* x, float* y) const {
    kernels_.linear(x, linear.packed.data(), linear.bias.data(), linear.out_features,
                    linear.in_features, y);
  }

  void norm(const std::vector<float>& weight, const std::vector<float>& bias) {
    det::layer_norm(x_.data(), weight.data(), bias.data(), kLayerNormEps, config_.dim, normed_.data());
    std::swap(x_, normed_);
  }

  // x_'s key and value as the newest row of layer l's ring.
  void append(int l) {
    DetCache& cache = caches_[l];
    const int dim = config_.dim;
    const int slot = (cache.start + cache.size) % cache.capacity;
    apply(det_.layers[l].kv, x_.data(), kv_.data());
    for (int i = 0; i < dim; ++i) cache.keys_t[static_cast<size_t>(i) * cache.capacity + slot] = kv_[i];
    std::memcpy(cache.values.data() + static_cast<size_t>(slot) * dim, kv_.data() + dim, sizeof(float) * dim);
  }

  void layer(int l) {
    const DetLayer& w = det_.layers[l];
    DetCache& cache = caches_[l];
    const int dim = config_.dim, heads = config_.num_heads, head_dim = dim / heads;
    // Keys: the past rows, then this step's input (cat([x_past, x])).
    append(l);
    const int S = cache.size + 1;
    apply(w.q, x_.data(), q_.data());
    for (int i = 0; i < dim; ++i) q_[i] = q_[i] / det_.query_scale;
    // The ring's keys in order: a run from `start`, then one from slot 0.
    const int first_run = std::min(S, cache.capacity - cache.start), second_run = S - first_run;
    for (int h = 0; h < heads; ++h) {
      const float* q = q_.data() + h * head_dim;
      const float* keys_t = cache.keys_t.data() + static_cast<size_t>(h) * head_dim * cache.capacity;
      float* scores = scores_.data() + static_cast<size_t>(h) * S;
      kernels_.attention_scores(q, keys_t + cache.start, cache.capacity, first_run, head_dim, scores);
      if (second_run > 0) {
        kernels_.attention_scores(q, keys_t, cache.capacity, second_run, head_dim, scores + first_run);
      }
      kernels_.softmax(scores, S);
    }
    kernels_.attention_values(scores_.data(), S, cache.values.data() + static_cast<size_t>(cache.start) * dim,
                              first_run, heads, head_dim, false, attention_.data());
    if (second_run > 0) {
      kernels_.attention_values(scores_.data() + first_run, S, cache.values.data(), second_run, heads,
                                head_dim, true, attention_.data());
    }
    apply(w.out_proj, attention_.data(), projected_.data());
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + projected_[i];
    norm(w.norm1_weight, w.norm1_bias);
    apply(w.linear1, x_.data(), hidden_.data());
    kernels_.gelu(hidden_.data(), activated_.data(), config_.hidden_dim());
    apply(w.linear2, activated_.data(), projected_.data());
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + projected_[i];
    norm(w.norm2_weight, w.norm2_bias);
    // The new state keeps the last past_context rows.
    cache.size = S;
    if (cache.size > config_.past_context) {
      cache.start = (cache.start + 1) % cache.capacity;
      cache.size = config_.past_context;
    }
  }

  const SharedLmWeights owner_;
  const LmModel::Weights& weights_;
  const DetWeights& det_;
  const LmConfig& config_;
  const det::TierKernels& kernels_;
  const int num_codebooks_;
  int64_t offset_ = 0;
  std::vector<DetCache> caches_;
  std::vector<float> x_, normed_, q_, kv_, attention_, projected_, hidden_, activated_, scores_;
  std::vector<float> probabilities_;
};

}  // namespace

DetLinear::DetLinear(const torch::Tensor& weight, const torch::Tensor& bias)
    : DetLinear(std::vector<torch::Tensor>{weight}, std::vector<torch::Tensor>{bias}) {}

DetLinear::DetLinear(const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& biases) {
  TORCH_CHECK(!weights.empty() && weights.size() == biases.size(), "DetLinear: one bias per weight");
  in_features = static_cast<int>(weights[0].size(1));
  std::vector<torch::Tensor> contiguous;  // keeps the rows alive while they are packed
  std::vector<const float*> rows;
  for (size_t i = 0; i < weights.size(); ++i) {
    TORCH_CHECK(weights[i].dim() == 2 && weights[i].size(1) == in_features, "DetLinear: weights of one width");
    contiguous.push_back(weights[i].contiguous());
    const float* data = contiguous.back().data_ptr<float>();
    for (int64_t row = 0; row < weights[i].size(0); ++row) rows.push_back(data + row * in_features);
    const std::vector<float> part = to_vector(biases[i]);
    bias.insert(bias.end(), part.begin(), part.end());
  }
  out_features = static_cast<int>(rows.size());
  packed = det::pack_columns(rows.data(), out_features, in_features);
}

const DetWeights& det_weights(const LmModel::Weights& weights) {
  std::call_once(weights.det_once, [&weights] { weights.det = prepare(weights); });
  return *weights.det;
}

std::unique_ptr<LmStepper> make_det_lm_stepper(SharedLmWeights weights, int num_codebooks) {
  return std::make_unique<DetLmStepper>(std::move(weights), num_codebooks);
}

}  // namespace encodec::lm
