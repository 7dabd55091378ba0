// The LM step exactly as the reference runs it (encodec/model.py LMModel.forward,
// modules/transformer.py, torch 1.13's nn.MultiheadAttention slow path), one
// LibTorch operation for each of the reference's, in its order and with its
// layouts, so that every float is the reference's. Slow by design: each step
// re-projects the keys and values of the whole past context.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "lm/lm_stepper.h"
#include "lm/lm_weights.h"
#include "lm/single_thread_scope.h"

namespace encodec {
namespace {

namespace F = torch::nn::functional;
constexpr double kLayerNormEps = 1e-5;

class ReferenceLmStepper : public LmStepper {
 public:
  ReferenceLmStepper(SharedLmWeights weights, int num_codebooks)
      : owner_(std::move(weights)), weights_(*owner_), num_codebooks_(num_codebooks) {
    TORCH_CHECK(num_codebooks >= 1 && num_codebooks <= weights_.config.n_q,
                "the LM predicts 1 to ", weights_.config.n_q, " codebooks, not ", num_codebooks);
    probabilities_.resize(static_cast<size_t>(num_codebooks) * weights_.config.card);
  }

  int num_codebooks() const override { return num_codebooks_; }

  void reset() override {
    states_.clear();
    offset_ = 0;
  }

  const float* step(const int64_t* previous_codes) override {
    torch::NoGradGuard no_grad;
    lm::SingleThreadScope single_thread;
    // indices [1, K, 1]: 0 = no previous code, else 1 + code.
    torch::Tensor indices = torch::zeros({1, num_codebooks_, 1}, torch::kInt64);
    if (previous_codes) {
      int64_t* data = indices.data_ptr<int64_t>();
      for (int k = 0; k < num_codebooks_; ++k) data[k] = 1 + previous_codes[k];
    }
    // sum([emb[k](indices[:, k]) for k]): Python's sum starts from the int 0.
    torch::Tensor input = torch::embedding(weights_.emb[0], indices.select(1, 0)) + 0;
    for (int k = 1; k < num_codebooks_; ++k) {
      input = input + torch::embedding(weights_.emb[k], indices.select(1, k));
    }
    const torch::Tensor out = transformer(input);
    std::vector<torch::Tensor> logits;
    for (int k = 0; k < num_codebooks_; ++k) {
      logits.push_back(F::linear(out, weights_.linears_weight[k], weights_.linears_bias[k]));
    }
    const torch::Tensor probabilities =
        torch::softmax(torch::stack(logits, 1).permute({0, 3, 1, 2}), 1);  // [1, card, K, 1]
    // Codebook-major copy: row k is probas[0, :, k, 0].
    const torch::Tensor rows = probabilities[0].select(2, 0).t().contiguous();
    std::memcpy(probabilities_.data(), rows.data_ptr<float>(), probabilities_.size() * sizeof(float));
    return probabilities_.data();
  }

 private:
  // StreamingTransformerEncoder.forward on x [1, 1, C].
  torch::Tensor transformer(torch::Tensor x) {
    const LmConfig& config = weights_.config;
    if (states_.empty()) {
      for (int i = 0; i < config.num_layers + 1; ++i) states_.push_back(torch::zeros_like(x.slice(1, 0, 1)));
    }
    const int64_t T = x.size(1);
    const torch::Tensor positions = torch::arange(T, torch::kInt64).view({1, -1, 1}) + offset_;
    // create_sin_embedding: phase = positions / (max_period ** (adim / (half_dim - 1))).
    const torch::Tensor phase = positions / weights_.position_divisors;
    const torch::Tensor pos_emb = torch::cat({torch::cos(phase), torch::sin(phase)}, -1);
    x = F::layer_norm(x, F::LayerNormFuncOptions({config.dim})
                             .weight(weights_.norm_in_weight)
                             .bias(weights_.norm_in_bias)
                             .eps(kLayerNormEps));
    x = x + pos_emb;
    std::vector<torch::Tensor> new_states;
    for (int l = 0; l < config.num_layers; ++l) {
      const torch::Tensor& layer_state = states_[l];
      const torch::Tensor sa_input = x;
      x = layer(l, x, layer_state);
      const torch::Tensor joined = torch::cat({layer_state, sa_input}, 1);
      const int64_t keep = std::min<int64_t>(joined.size(1), config.past_context);
      new_states.push_back(joined.slice(1, joined.size(1) - keep));
    }
    // The reference keeps the extra (1 + num_layers)-th initial state only until
    // the first step; zip() never reads it.
    states_ = std::move(new_states);
    offset_ += T;
    return x;
  }

  torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                           const torch::Tensor& bias) const {
    return F::layer_norm(x, F::LayerNormFuncOptions({weights_.config.dim})
                                .weight(weight)
                                .bias(bias)
                                .eps(kLayerNormEps));
  }

  // StreamingTransformerEncoderLayer.forward, norm_first=False.
  torch::Tensor layer(int l, torch::Tensor x, const torch::Tensor& x_past) {
    const LmLayerWeights& w = weights_.layers[l];
    x = layer_norm(x + self_attention(w, x, x_past), w.norm1_weight, w.norm1_bias);
    const torch::Tensor ff =
        F::linear(torch::gelu(F::linear(x, w.linear1_weight, w.linear1_bias)), w.linear2_weight,
                  w.linear2_bias);
    return layer_norm(x + ff, w.norm2_weight, w.norm2_bias);
  }

  // _sa_block and nn.MultiheadAttention (batch_first, query is not key, key is
  // value): F.multi_head_attention_forward's slow path.
  torch::Tensor self_attention(const LmLayerWeights& w, const torch::Tensor& x,
                               const torch::Tensor& x_past) const {
    const LmConfig& config = weights_.config;
    const int64_t T = x.size(1), H = x_past.size(1);
    const torch::Tensor keys = torch::cat({x_past, x}, 1);
    const torch::Tensor queries_pos = torch::arange(H, T + H, torch::kInt64).view({-1, 1});
    const torch::Tensor keys_pos = torch::arange(T + H, torch::kInt64).view({1, -1});
    const torch::Tensor delta = queries_pos - keys_pos;
    const torch::Tensor valid_access = (delta >= 0).logical_and(delta <= config.past_context);
    const torch::Tensor attn_mask_bool = valid_access.logical_not();

    const int64_t E = config.dim, heads = config.num_heads, head_dim = E / heads;
    const torch::Tensor query = x.transpose(1, 0);  // [T, B, E]
    const torch::Tensor key = keys.transpose(1, 0);  // [S, B, E]
    const int64_t tgt_len = query.size(0), bsz = query.size(1);
    // _in_projection_packed with k is v: w.split([E, 2 E]).
    const std::vector<torch::Tensor> weight_parts = w.in_proj_weight.split_with_sizes({E, 2 * E});
    const std::vector<torch::Tensor> bias_parts = w.in_proj_bias.split_with_sizes({E, 2 * E});
    torch::Tensor q = F::linear(query, weight_parts[0], bias_parts[0]);
    const std::vector<torch::Tensor> kv =
        F::linear(key, weight_parts[1], bias_parts[1]).chunk(2, -1);
    torch::Tensor k = kv[0], v = kv[1];
    // Bool mask [T, S] -> [1, T, S] -> float with -inf where masked.
    torch::Tensor attn_mask = attn_mask_bool.unsqueeze(0);
    torch::Tensor new_attn_mask = torch::zeros_like(attn_mask, q.options());
    new_attn_mask.masked_fill_(attn_mask, -std::numeric_limits<float>::infinity());
    attn_mask = new_attn_mask;
    q = q.contiguous().view({tgt_len, bsz * heads, head_dim}).transpose(0, 1);
    k = k.contiguous().view({k.size(0), bsz * heads, head_dim}).transpose(0, 1);
    v = v.contiguous().view({v.size(0), bsz * heads, head_dim}).transpose(0, 1);
    const torch::Tensor q_scaled = q / std::sqrt(static_cast<double>(q.size(-1)));
    torch::Tensor weights = torch::baddbmm(attn_mask, q_scaled, k.transpose(-2, -1));
    weights = torch::softmax(weights, -1);
    torch::Tensor out = torch::bmm(weights, v);
    out = out.transpose(0, 1).contiguous().view({tgt_len * bsz, E});
    out = F::linear(out, w.out_proj_weight, w.out_proj_bias);
    out = out.view({tgt_len, bsz, out.size(1)});
    return out.transpose(1, 0);  // batch_first
  }

  const SharedLmWeights owner_;
  const LmModel::Weights& weights_;
  const int num_codebooks_;
  std::vector<torch::Tensor> states_;
  int64_t offset_ = 0;
  std::vector<float> probabilities_;
};

}  // namespace

std::unique_ptr<LmStepper> make_reference_lm_stepper(SharedLmWeights weights, int num_codebooks) {
  return std::make_unique<ReferenceLmStepper>(std::move(weights), num_codebooks);
}

}  // namespace encodec
