#include "lm/fast_lm.h"

#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "lm/exact_kernels.h"
#include "lm/onednn_gelu.h"
#include "lm/single_thread_scope.h"

namespace encodec::lm {
namespace {

constexpr double kLayerNormEps = 1e-5;

std::vector<float> to_vector(const torch::Tensor& tensor) {
  const torch::Tensor contiguous = tensor.contiguous();
  const float* data = contiguous.data_ptr<float>();
  return std::vector<float>(data, data + contiguous.numel());
}

// nn.LayerNorm (eps 1e-5) on one row, in place.
void layer_norm(float* x, int dim, const torch::Tensor& weight, const torch::Tensor& bias) {
  thread_local std::vector<float> out;
  out.resize(dim);
  exact::layer_norm(x, weight.data_ptr<float>(), bias.data_ptr<float>(),
                    static_cast<float>(kLayerNormEps), dim, out.data());
  std::memcpy(x, out.data(), sizeof(float) * dim);
}

// One layer's past: its inputs (the reference's state) and their key/value
// projections by the regular kernel, in a ring of past_context + 1 slots (the
// step's own row joins the past ones before the oldest leaves).
struct LayerCache {
  int capacity = 0, dim = 0;
  int start = 0, size = 0;  // ring of `size` rows from slot `start`
  float* inputs = nullptr;  // [capacity, dim]
  float* keys_t = nullptr;  // [dim, capacity]: transposed, so a head's keys are rows
  float* values = nullptr;  // [capacity, dim]
  int slot(int logical) const { return (start + logical) % capacity; }
};

class FastLmStepper : public LmStepper {
 public:
  FastLmStepper(SharedLmWeights weights, int num_codebooks)
      : owner_(std::move(weights)),
        weights_(*owner_),
        fast_(*weights_.fast),
        config_(weights_.config),
        num_codebooks_(num_codebooks) {
    TORCH_CHECK(num_codebooks >= 1 && num_codebooks <= config_.n_q, "the LM predicts 1 to ",
                config_.n_q, " codebooks, not ", num_codebooks);
    const int dim = config_.dim, capacity = config_.past_context + 1;
    // The caches are read whole at every step (~2 MB for the official LM): on
    // huge pages too, in one block.
    const size_t per_buffer = (static_cast<size_t>(capacity) * dim + 15) / 16 * 16;
    cache_memory_ = allocate_huge_page_floats(per_buffer * 3 * config_.num_layers);
    if (!cache_memory_) throw std::bad_alloc();
    caches_.resize(config_.num_layers);
    float* at = cache_memory_.get();
    for (LayerCache& cache : caches_) {
      cache.capacity = capacity;
      cache.dim = dim;
      cache.inputs = at;
      cache.keys_t = at + per_buffer;
      cache.values = at + 2 * per_buffer;
      at += 3 * per_buffer;
    }
    x_.resize(dim);
    q_.resize(dim);
    kv_.resize(2 * dim);
    attention_.resize(dim);
    projected_.resize(dim);
    hidden_.resize(config_.hidden_dim());
    gelu_.resize(config_.hidden_dim());
    gelu_op_ = std::make_unique<OneDnnGelu>(hidden_.data(), gelu_.data(), config_.hidden_dim());
    scores_.resize(static_cast<size_t>(config_.num_heads) * capacity);
    slots_.resize(capacity);
    probabilities_.resize(static_cast<size_t>(num_codebooks) * config_.card);
    reset();
  }

  int num_codebooks() const override { return num_codebooks_; }

  void reset() override {
    offset_ = 0;
    // The reference's initial state: one all-zero row per layer.
    std::vector<float>& zeros = attention_;  // scratch (append_row does not touch it)
    std::fill(zeros.begin(), zeros.end(), 0.0f);
    for (int l = 0; l < config_.num_layers; ++l) {
      LayerCache& cache = caches_[l];
      cache.start = 0;
      cache.size = 0;
      append_row(l, zeros.data());
      cache.size = 1;
    }
  }

  const float* step(const int64_t* previous_codes) override {
    SingleThreadScope single_thread;
    torch::NoGradGuard no_grad;
    const int dim = config_.dim;
    // sum([emb[k](indices[:, k]) ...]) from the int 0, in codebook order.
    for (int k = 0; k < num_codebooks_; ++k) {
      const int64_t index = previous_codes ? previous_codes[k] + 1 : 0;
      TORCH_CHECK(index >= 0 && index <= config_.card, "code ", index - 1, " out of range");
      const float* row = weights_.emb[k].data_ptr<float>() + index * dim;
      if (k == 0) {
        for (int i = 0; i < dim; ++i) x_[i] = row[i] + 0.0f;
      } else {
        for (int i = 0; i < dim; ++i) x_[i] = x_[i] + row[i];
      }
    }
    layer_norm(x_.data(), dim, weights_.norm_in_weight, weights_.norm_in_bias);
    std::vector<float>& position = hidden_;  // scratch
    exact::sin_embedding(offset_, fast_.position_divisors.data(), dim / 2, position.data());
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + position[i];
    for (int l = 0; l < config_.num_layers; ++l) layer(l);
    for (int k = 0; k < num_codebooks_; ++k) {
      fast_.heads[k].apply(x_.data(), probabilities_.data() + static_cast<size_t>(k) * config_.card);
    }
    exact::softmax_over_codebooks(probabilities_.data(), num_codebooks_, config_.card);
    ++offset_;
    return probabilities_.data();
  }

 private:
  // Stores `input` and its key/value projection (regular kernel) as the newest row.
  void append_row(int l, const float* input) {
    LayerCache& cache = caches_[l];
    const int dim = config_.dim;
    const int slot = cache.slot(cache.size);
    std::memcpy(cache.inputs + static_cast<size_t>(slot) * dim, input, sizeof(float) * dim);
    fast_.layers[l].kv_chain.apply(input, kv_.data());
    for (int i = 0; i < dim; ++i) cache.keys_t[static_cast<size_t>(i) * cache.capacity + slot] = kv_[i];
    std::memcpy(cache.values + static_cast<size_t>(slot) * dim, kv_.data() + dim,
                sizeof(float) * dim);
  }

  void layer(int l) {
    const FastLayer& fast = fast_.layers[l];
    const LmLayerWeights& w = weights_.layers[l];
    LayerCache& cache = caches_[l];
    const int dim = config_.dim, heads = config_.num_heads, head_dim = dim / heads;
    // Keys: the past rows, then this step's input (cat([x_past, x])).
    append_row(l, x_.data());
    const int S = cache.size + 1;
    fast.q.apply(x_.data(), q_.data());
    // q / math.sqrt(head_dim): a Python float, as a float32 scalar.
    const float scale = static_cast<float>(std::sqrt(static_cast<double>(head_dim)));
    for (int i = 0; i < dim; ++i) q_[i] = q_[i] / scale;

    const float* keys_t = cache.keys_t;
    const float* values = cache.values;
    int64_t key_stride = cache.capacity;
    for (int j = 0; j < S; ++j) slots_[j] = cache.slot(j);
    if (S <= fast.kv_small_max_rows) {
      // A product of this few rows takes OpenBLAS's small kernel, which rounds
      // differently from the cached rows: project them all again, as the reference.
      small_keys_t_.assign(static_cast<size_t>(dim) * S, 0.0f);
      small_values_.assign(static_cast<size_t>(S) * dim, 0.0f);
      for (int j = 0; j < S; ++j) {
        fast.kv_small.apply(cache.inputs + static_cast<size_t>(slots_[j]) * dim, kv_.data());
        for (int i = 0; i < dim; ++i) small_keys_t_[static_cast<size_t>(i) * S + j] = kv_[i];
        std::memcpy(small_values_.data() + static_cast<size_t>(j) * dim, kv_.data() + dim,
                    sizeof(float) * dim);
      }
      keys_t = small_keys_t_.data();
      values = small_values_.data();
      key_stride = S;
      for (int j = 0; j < S; ++j) slots_[j] = j;
    }
    for (int h = 0; h < heads; ++h) {
      exact::attention_scores(q_.data() + h * head_dim, keys_t + h * head_dim * key_stride,
                              key_stride, slots_.data(), S, head_dim,
                              scores_.data() + static_cast<size_t>(h) * S);
    }
    // softmax over the keys ([heads, 1, S], last dim).
    for (int h = 0; h < heads; ++h) exact::softmax_last_dim(scores_.data() + static_cast<size_t>(h) * S, S);
    if (heads <= 16 && dim <= 256 && exact::attention_values_are_chains(S, head_dim)) {
      // Key-major weights, so that one load gives every head's weight of a key.
      weights_t_.resize(static_cast<size_t>(S) * heads);
      for (int h = 0; h < heads; ++h) {
        for (int j = 0; j < S; ++j) weights_t_[static_cast<size_t>(j) * heads + h] = scores_[static_cast<size_t>(h) * S + j];
      }
      exact::attention_values_all_heads(weights_t_.data(), values, dim, slots_.data(), S, heads,
                                        head_dim, attention_.data());
    } else {
      for (int h = 0; h < heads; ++h) {
        exact::attention_values(scores_.data() + static_cast<size_t>(h) * S, values + h * head_dim,
                                dim, slots_.data(), S, head_dim, attention_.data() + h * head_dim);
      }
    }
    fast.out_proj.apply(attention_.data(), projected_.data());
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + projected_[i];
    layer_norm(x_.data(), dim, w.norm1_weight, w.norm1_bias);
    fast.linear1.apply(x_.data(), hidden_.data());
    {
      // F.gelu: LibTorch runs it through oneDNN's JIT kernel (its own erf): the
      // same primitive here, on this step's row (see OneDnnGelu).
      gelu_op_->run();
      std::memcpy(hidden_.data(), gelu_.data(), sizeof(float) * gelu_.size());
    }
    fast.linear2.apply(hidden_.data(), projected_.data());
    for (int i = 0; i < dim; ++i) x_[i] = x_[i] + projected_[i];
    layer_norm(x_.data(), dim, w.norm2_weight, w.norm2_bias);
    // The new state keeps the last past_context rows.
    cache.size = S;
    if (cache.size > config_.past_context) {
      cache.start = (cache.start + 1) % cache.capacity;
      cache.size = config_.past_context;
    }
  }

  const SharedLmWeights owner_;
  const LmModel::Weights& weights_;
  const FastWeights& fast_;
  const LmConfig& config_;
  const int num_codebooks_;
  int64_t offset_ = 0;
  std::unique_ptr<float[], FastWeights::Free> cache_memory_;
  std::vector<LayerCache> caches_;
  std::vector<float> x_, q_, kv_, attention_, projected_, hidden_, gelu_, scores_;
  std::unique_ptr<OneDnnGelu> gelu_op_;
  std::vector<float> small_keys_t_, small_values_, weights_t_;
  std::vector<int> slots_;
  std::vector<float> probabilities_;
};

// The self-check: both steppers on the same pseudo-random codes, long enough for
// every kernel path and switch (few-row key projections, naive to BLAS attention
// products, the dot-style value product), probabilities compared bit for bit.
std::string self_check(const SharedLmWeights& weights) {
  SingleThreadScope single_thread;
  torch::NoGradGuard no_grad;
  const LmConfig& config = weights->config;
  const int head_dim = config.dim / config.num_heads;
  const int switch_steps = (400 + head_dim - 1) / head_dim + 34;
  const int steps = std::min(config.past_context + 2, std::max(24, switch_steps));
  const int num_codebooks = config.n_q;
  auto fast = make_fast_lm_stepper(weights, num_codebooks);
  auto reference = make_reference_lm_stepper(weights, num_codebooks);
  std::mt19937 random(1234);
  std::vector<int64_t> codes(num_codebooks);
  const size_t count = static_cast<size_t>(num_codebooks) * config.card;
  for (int t = 0; t < steps; ++t) {
    const float* a = fast->step(t == 0 ? nullptr : codes.data());
    const float* b = reference->step(t == 0 ? nullptr : codes.data());
    if (std::memcmp(a, b, count * sizeof(float)) != 0) {
      size_t differing = 0;
      for (size_t i = 0; i < count; ++i) differing += a[i] != b[i];
      return "the exact kernels differ from LibTorch at step " + std::to_string(t) + " (" +
             std::to_string(differing) + " of " + std::to_string(count) +
             " probabilities; another BLAS or LibTorch build?)";
    }
    for (int64_t& code : codes) code = static_cast<int64_t>(random() % config.card);
  }
  // The softmax over codebooks vectorizes 8 at a time: check a tail too.
  if (num_codebooks % 8 == 0 && num_codebooks > 1) {
    std::vector<float> logits(static_cast<size_t>(3) * config.card);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& value : logits) value = normal(random);
    const torch::Tensor expected =
        torch::softmax(torch::from_blob(logits.data(), {1, 3, 1, config.card}).permute({0, 3, 1, 2}), 1)[0]
            .select(2, 0)
            .t()
            .contiguous();
    exact::softmax_over_codebooks(logits.data(), 3, config.card);
    if (std::memcmp(logits.data(), expected.data_ptr<float>(), logits.size() * sizeof(float)) != 0) {
      return "the exact softmax differs from LibTorch's for 3 codebooks";
    }
  }
  return "";
}

}  // namespace

FastLinear::FastLinear(const torch::Tensor& weight_tensor, const torch::Tensor& bias_tensor,
                       int64_t rows)
    : out_features(static_cast<int>(weight_tensor.size(0))),
      in_features(static_cast<int>(weight_tensor.size(1))),
      small_tn(exact::small_tn_permitted(weight_tensor.size(0), rows, weight_tensor.size(1))),
      bias(to_vector(bias_tensor)) {
  const std::vector<float> w = to_vector(weight_tensor);
  weight = small_tn ? exact::pack_small_tn_weights(w.data(), out_features, in_features)
                    : exact::pack_chain_weights(w.data(), out_features, in_features);
  packed_weight = weight.data();
  packed_bias = bias.data();
}

void FastLinear::apply(const float* x, float* y) const {
  if (small_tn) {
    exact::linear_small_tn(x, packed_weight, packed_bias, y, out_features, in_features);
  } else {
    exact::linear_chain(x, packed_weight, packed_bias, y, out_features, in_features);
  }
}

void FastWeights::Free::operator()(float* p) const { std::free(p); }

std::unique_ptr<float[], FastWeights::Free> allocate_huge_page_floats(size_t count) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes =
      std::max(kHugePage, (count * sizeof(float) + kHugePage - 1) / kHugePage * kHugePage);
  float* data = static_cast<float*>(std::aligned_alloc(kHugePage, bytes));
  if (!data) return nullptr;
  madvise(data, bytes, MADV_HUGEPAGE);  // a hint: without it, 4 kB pages
  std::memset(data, 0, bytes);
  return std::unique_ptr<float[], FastWeights::Free>(data);
}

namespace {

// Copies every linear's packed weights and bias into one 2 MB-aligned block
// (asking for huge pages), in the order a step reads them.
void move_to_arena(FastWeights& fast) {
  std::vector<FastLinear*> order;
  for (FastLayer& layer : fast.layers) {
    for (FastLinear* linear : {&layer.q, &layer.kv_chain, &layer.out_proj, &layer.linear1, &layer.linear2}) {
      order.push_back(linear);
    }
  }
  for (FastLinear& head : fast.heads) order.push_back(&head);
  for (FastLayer& layer : fast.layers) order.push_back(&layer.kv_small);  // first steps only
  constexpr size_t kAlign = 16;  // floats: 64-byte alignment of every block
  auto rounded = [](size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  size_t total = 0;
  for (const FastLinear* linear : order) total += rounded(linear->weight.size()) + rounded(linear->bias.size());
  fast.arena = allocate_huge_page_floats(total);
  if (!fast.arena) return;  // keep the vectors
  float* at = fast.arena.get();
  for (FastLinear* linear : order) {
    std::copy(linear->weight.begin(), linear->weight.end(), at);
    linear->packed_weight = at;
    at += rounded(linear->weight.size());
    std::copy(linear->bias.begin(), linear->bias.end(), at);
    linear->packed_bias = at;
    at += rounded(linear->bias.size());
    std::vector<float>().swap(linear->weight);
    std::vector<float>().swap(linear->bias);
  }
}

}  // namespace

std::unique_ptr<LmStepper> make_fast_lm_stepper(SharedLmWeights weights, int num_codebooks) {
  TORCH_CHECK(weights->fast, "the exact LM kernels are not prepared");
  return std::make_unique<FastLmStepper>(std::move(weights), num_codebooks);
}

namespace {

void prepare_fast_weights(const SharedLmWeights& weights) {
  weights->fast.reset();
  weights->fast_unavailable_reason = exact::cpu_unsupported_reason();
  if (!weights->fast_unavailable_reason.empty()) return;
  const LmConfig& config = weights->config;
  const int dim = config.dim;
  if (dim / config.num_heads >= 32) {
    // OpenBLAS would take the attention scores to its small TN kernel: not emulated.
    weights->fast_unavailable_reason = "head dimension of 32 or more is not supported";
    return;
  }
  auto fast = std::make_shared<FastWeights>();
  for (const LmLayerWeights& layer : weights->layers) {
    FastLayer f;
    const torch::Tensor q_weight = layer.in_proj_weight.slice(0, 0, dim);
    const torch::Tensor kv_weight = layer.in_proj_weight.slice(0, dim, 3 * dim);
    f.q = FastLinear(q_weight, layer.in_proj_bias.slice(0, 0, dim), 1);
    // The key/value product has past rows + 1 rows: the small kernel takes it
    // while that is at most kv_small_max_rows.
    int small_rows = 0;
    while (exact::small_tn_permitted(2 * dim, small_rows + 1, dim)) ++small_rows;
    f.kv_small_max_rows = small_rows;
    const torch::Tensor kv_bias = layer.in_proj_bias.slice(0, dim, 3 * dim);
    f.kv_chain = FastLinear(kv_weight, kv_bias, /*rows=*/1000000);
    f.kv_small = FastLinear(kv_weight, kv_bias, 1);
    if (small_rows == 0) f.kv_small = FastLinear();
    f.out_proj = FastLinear(layer.out_proj_weight, layer.out_proj_bias, 1);
    f.linear1 = FastLinear(layer.linear1_weight, layer.linear1_bias, 1);
    f.linear2 = FastLinear(layer.linear2_weight, layer.linear2_bias, 1);
    fast->layers.push_back(std::move(f));
  }
  for (int k = 0; k < config.n_q; ++k) {
    fast->heads.emplace_back(weights->linears_weight[k], weights->linears_bias[k], 1);
  }
  fast->position_divisors = to_vector(weights->position_divisors);
  move_to_arena(*fast);
  weights->fast = fast;
  const std::string problem = self_check(weights);
  if (!problem.empty()) {
    weights->fast.reset();
    weights->fast_unavailable_reason = problem;
  }
}

}  // namespace

const FastWeights* fast_weights(const SharedLmWeights& weights) {
  std::call_once(weights->fast_once, [&weights] { prepare_fast_weights(weights); });
  return weights->fast.get();
}

}  // namespace encodec::lm
