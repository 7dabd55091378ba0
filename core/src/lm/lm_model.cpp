// LmModel: configuration, strict loading of the reference's state_dict, the
// official checkpoints, and the choice of kernels.
#include <cmath>
#include <stdexcept>

#include "encodec/compress.h"
#include "lm/det_lm.h"
#include "lm/fast_lm.h"
#include "lm/lm_stepper.h"
#include "lm/lm_weights.h"
#include "modules/weights.h"

namespace encodec {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void check_config(const LmConfig& config) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("invalid LM configuration: " + what);
  };
  if (config.n_q < 1) fail("n_q must be at least 1");
  // The arithmetic coder gives every entry at least 2 of its 2^24 steps.
  if (config.card < 1 || config.card > (1 << 22)) fail("card must be in [1, 2^22]");
  if (config.dim < 4 || config.dim % 2 != 0) fail("dim must be even and at least 4");
  if (config.num_heads < 1 || config.dim % config.num_heads != 0) {
    fail("dim " + std::to_string(config.dim) + " is not divisible by " +
         std::to_string(config.num_heads) + " heads");
  }
  if (config.num_layers < 1) fail("num_layers must be at least 1");
  if (config.hidden_dim() < 1) fail("hidden_scale too small");
  if (config.past_context < 1) fail("past_context must be at least 1");
}

std::shared_ptr<LmModel::Weights> build_weights(const LmConfig& config, WeightLoader& loader) {
  check_config(config);
  auto weights = std::make_shared<LmModel::Weights>();
  weights->config = config;
  const int64_t dim = config.dim, hidden = config.hidden_dim(), card = config.card;
  const std::string t = "transformer.";
  weights->norm_in_weight = loader.take(t + "norm_in.weight", {dim});
  weights->norm_in_bias = loader.take(t + "norm_in.bias", {dim});
  for (int l = 0; l < config.num_layers; ++l) {
    const std::string p = t + "layers." + std::to_string(l) + ".";
    LmLayerWeights layer;
    layer.in_proj_weight = loader.take(p + "self_attn.in_proj_weight", {3 * dim, dim});
    layer.in_proj_bias = loader.take(p + "self_attn.in_proj_bias", {3 * dim});
    layer.out_proj_weight = loader.take(p + "self_attn.out_proj.weight", {dim, dim});
    layer.out_proj_bias = loader.take(p + "self_attn.out_proj.bias", {dim});
    layer.linear1_weight = loader.take(p + "linear1.weight", {hidden, dim});
    layer.linear1_bias = loader.take(p + "linear1.bias", {hidden});
    layer.linear2_weight = loader.take(p + "linear2.weight", {dim, hidden});
    layer.linear2_bias = loader.take(p + "linear2.bias", {dim});
    layer.norm1_weight = loader.take(p + "norm1.weight", {dim});
    layer.norm1_bias = loader.take(p + "norm1.bias", {dim});
    layer.norm2_weight = loader.take(p + "norm2.weight", {dim});
    layer.norm2_bias = loader.take(p + "norm2.bias", {dim});
    weights->layers.push_back(std::move(layer));
  }
  for (int k = 0; k < config.n_q; ++k) {
    weights->emb.push_back(loader.take("emb." + std::to_string(k) + ".weight", {card + 1, dim}));
  }
  for (int k = 0; k < config.n_q; ++k) {
    const std::string p = "linears." + std::to_string(k) + ".";
    weights->linears_weight.push_back(loader.take(p + "weight", {card, dim}));
    weights->linears_bias.push_back(loader.take(p + "bias", {card}));
  }
  loader.expect_all_used();
  {
    // create_sin_embedding's `max_period ** (adim / (half_dim - 1))`: an int64
    // arange divided by an int (true division: float32), then Python's int
    // ** tensor, which is torch.tensor(max_period, dtype=float32) ** tensor.
    torch::NoGradGuard no_grad;
    const int64_t half_dim = dim / 2;
    const torch::Tensor adim = torch::arange(half_dim, torch::kInt64).view({1, 1, -1});
    weights->position_divisors = torch::pow(
        torch::scalar_tensor(config.max_period, torch::kFloat32), adim / (half_dim - 1));
  }
  return weights;
}

}  // namespace

LmModel::Weights::Weights() = default;
LmModel::Weights::~Weights() = default;

LmConfig LmConfig::for_codec(const EncodecConfig& codec) {
  LmConfig config;
  config.n_q = codec.n_q;
  config.card = codec.bins;
  config.dim = 200;
  config.num_layers = 5;
  config.num_heads = 8;
  // get_lm_model: past_context=int(3.5 * self.frame_rate).
  config.past_context = static_cast<int>(3.5 * codec.frame_rate());
  return config;
}

LmConfig LmConfig::infer_from_state_dict(const EncodecConfig& codec, const StateDict& state) {
  LmConfig config = for_codec(codec);
  const std::string norm_in = "transformer.norm_in.weight";
  auto found = state.find(norm_in);
  if (found == state.end()) {
    throw CheckpointError("LM checkpoint has no tensor '" + norm_in +
                          "' (is it an EnCodec LM checkpoint?)");
  }
  if (found->second.dim() != 1) {
    throw CheckpointError("LM checkpoint: tensor '" + norm_in + "' should have one dimension");
  }
  config.dim = static_cast<int>(found->second.size(0));
  int n_q = 0;
  while (state.count("emb." + std::to_string(n_q) + ".weight")) ++n_q;
  config.n_q = n_q;
  int layers = 0;
  while (state.count("transformer.layers." + std::to_string(layers) + ".norm1.weight")) ++layers;
  config.num_layers = layers;
  if (n_q > 0) {
    const torch::Tensor& emb = state.at("emb.0.weight");
    if (emb.dim() == 2) config.card = static_cast<int>(emb.size(0)) - 1;
  }
  if (config.n_q < codec.n_q) {
    // Files can use up to codec.n_q codebooks; an LM with fewer cannot code them.
    throw CheckpointError("LM checkpoint predicts " + std::to_string(config.n_q) +
                          " codebooks but " + codec.name + " has " + std::to_string(codec.n_q));
  }
  if (config.card != codec.bins) {
    throw CheckpointError("LM checkpoint has " + std::to_string(config.card) +
                          " entries per codebook but " + codec.name + " has " +
                          std::to_string(codec.bins));
  }
  return config;
}

// kernels_ starts as kAuto, resolved by kernels() when first needed.
LmModel::LmModel(std::shared_ptr<const Weights> weights) : weights_(std::move(weights)) {}

const LmConfig& LmModel::config() const { return weights_->config; }

const std::string& LmModel::fast_kernels_unavailable_reason() const {
  lm::fast_weights(weights_);
  return weights_->fast_unavailable_reason;
}

LmKernels LmModel::kernels() const {
  if (kernels_ != LmKernels::kAuto) return kernels_;
  return lm::fast_weights(weights_) ? LmKernels::kFast : LmKernels::kReference;
}

void LmModel::set_kernels(LmKernels kernels) {
  if (kernels == LmKernels::kDeterministic) lm::det_weights(*weights_);
  if (kernels == LmKernels::kFast && !lm::fast_weights(weights_)) {
    throw std::runtime_error("the exact fast LM kernels are not available on this machine: " +
                             weights_->fast_unavailable_reason);
  }
  kernels_ = kernels;
}

LmModel LmModel::with_kernels(LmKernels kernels) const {
  LmModel copy = *this;
  copy.set_kernels(kernels);
  return copy;
}

LmModel LmModel::from_state_dict(const LmConfig& config, const StateDict& state,
                                 const std::string& source) {
  WeightLoader loader(state, source);
  return LmModel(build_weights(config, loader));
}

LmModel LmModel::from_checkpoint(const std::string& path, const EncodecConfig& codec) {
  const StateDict state = load_checkpoint(path);
  return from_state_dict(LmConfig::infer_from_state_dict(codec, state), state, path);
}

std::string LmModel::official_checkpoint_name(const std::string& codec_name) {
  if (codec_name == kModelName24kHz) return kLmCheckpoint24kHz;
  if (codec_name == kModelName48kHz) return kLmCheckpoint48kHz;
  throw std::invalid_argument("no pretrained LM for model '" + codec_name + "' (known: " +
                              kModelName24kHz + ", " + kModelName48kHz + ")");
}

LmModel LmModel::official(const std::string& codec_name, const ModelStoreOptions& options) {
  const std::string name = official_checkpoint_name(codec_name);
  const EncodecConfig codec = codec_name == kModelName24kHz ? EncodecConfig::official_24khz()
                                                            : EncodecConfig::official_48khz();
  const std::string path = ModelStore(options).resolve(name);
  return from_state_dict(LmConfig::for_codec(codec), load_checkpoint(path), path);
}

LmModel LmModel::with_random_weights(const LmConfig& config, uint64_t seed) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  // The reference's initializations: embeddings N(0, 1), linears U(+-1/sqrt(fan_in))
  // (biases too, with their weight's fan-in: the loader asks for the weight first),
  // in_proj Xavier-uniform with zero biases, layer norms ones and zeros.
  int64_t last_fan_in = 1;
  WeightLoader loader([&](const std::string& name, const TensorShape& shape) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat32);
    if (name.find("norm") != std::string::npos) {
      return ends_with(name, "weight") ? torch::ones(shape, options) : torch::zeros(shape, options);
    }
    if (name.rfind("emb.", 0) == 0) return torch::randn(shape, generator, options);
    if (ends_with(name, "in_proj_weight")) {
      const double bound = std::sqrt(6.0 / static_cast<double>(shape[0] / 3 + shape[1]));
      return torch::rand(shape, generator, options) * (2 * bound) - bound;
    }
    if (ends_with(name, "in_proj_bias") || ends_with(name, "out_proj.bias")) {
      return torch::zeros(shape, options);
    }
    if (shape.size() == 2) last_fan_in = shape[1];
    const double bound = 1.0 / std::sqrt(static_cast<double>(last_fan_in));
    return torch::rand(shape, generator, options) * (2 * bound) - bound;
  });
  return LmModel(build_weights(config, loader));
}

std::vector<std::pair<std::string, std::vector<int64_t>>> LmModel::tensor_shapes(
    const LmConfig& config) {
  WeightLoader loader([](const std::string&, const TensorShape& shape) {
    return torch::zeros(shape, torch::kFloat32);
  });
  build_weights(config, loader);
  return loader.taken();
}

std::unique_ptr<LmStepper> make_lm_stepper(const LmModel& model, int num_codebooks) {
  if (model.kernels() == LmKernels::kFast) {
    return lm::make_fast_lm_stepper(model.shared_weights(), num_codebooks);
  }
  if (model.kernels() == LmKernels::kDeterministic) {
    return lm::make_det_lm_stepper(model.shared_weights(), num_codebooks);
  }
  return make_reference_lm_stepper(model.shared_weights(), num_codebooks);
}

}  // namespace encodec
