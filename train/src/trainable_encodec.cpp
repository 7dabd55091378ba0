#include "trainable_encodec.h"

#include "model_weights.h"  // core/src: seanet_config
#include "modules/weights.h"  // core/src: shape_to_string

namespace encodec::train {

TrainableEncodecImpl::TrainableEncodecImpl(const EncodecConfig& config, const CodebookOptions& codebooks)
    : config_(config) {
  const SEANetConfig seanet = seanet_config(config);
  encoder_ = register_module("encoder", SEANetEncoder(seanet));
  quantizer_ = register_module("quantizer", ResidualVectorQuantizer(config.dimension, config.n_q, config.bins, codebooks));
  decoder_ = register_module("decoder", SEANetDecoder(seanet));
}

TrainableEncodecImpl::Output TrainableEncodecImpl::forward(const torch::Tensor& x, int64_t n_q_used) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == config_.channels, "expected audio of shape [B, ", config_.channels,
              ", T], got ", x.sizes());
  torch::Tensor embeddings = encoder_->forward(x);
  ResidualVectorQuantizerImpl::Output quantized = quantizer_->forward(embeddings, n_q_used);
  torch::Tensor audio = decoder_->forward(quantized.quantized);
  return {audio.narrow(-1, 0, std::min(audio.size(-1), x.size(-1))), quantized.codes, quantized.penalty, embeddings};
}

TrainableEncodecImpl::Output TrainableEncodecImpl::forward_unquantized(const torch::Tensor& x, double noise_std) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == config_.channels, "expected audio of shape [B, ", config_.channels,
              ", T], got ", x.sizes());
  torch::Tensor embeddings = encoder_->forward(x);
  torch::Tensor noisy = noise_std > 0 ? embeddings + noise_std * torch::randn_like(embeddings) : embeddings;
  torch::Tensor audio = decoder_->forward(noisy);
  return {audio.narrow(-1, 0, std::min(audio.size(-1), x.size(-1))), torch::Tensor(), torch::zeros({}, x.options()),
          embeddings};
}

StateDict TrainableEncodecImpl::state_dict() const {
  StateDict state;
  for (const auto& item : named_parameters()) state[item.key()] = item.value().detach().to(torch::kCPU).clone();
  for (const auto& item : named_buffers()) state[item.key()] = item.value().detach().to(torch::kCPU).clone();
  return state;
}

void TrainableEncodecImpl::load_state_dict(const StateDict& state, const std::string& source) {
  torch::NoGradGuard no_grad;
  size_t used = 0;
  auto copy = [&](const std::string& name, torch::Tensor& target) {
    auto found = state.find(name);
    if (found == state.end()) {
      throw CheckpointError(source + ": missing tensor '" + name + "' (expected shape " +
                            shape_to_string(target.sizes().vec()) + ")");
    }
    if (found->second.sizes() != target.sizes()) {
      throw CheckpointError(source + ": tensor '" + name + "' has shape " + shape_to_string(found->second.sizes().vec()) +
                            ", expected " + shape_to_string(target.sizes().vec()));
    }
    target.copy_(found->second);
    ++used;
  };
  for (auto& item : named_parameters()) copy(item.key(), item.value());
  for (auto& item : named_buffers()) copy(item.key(), item.value());
  if (used != state.size()) {
    for (const auto& [name, tensor] : state) {
      if (!named_parameters().contains(name) && !named_buffers().contains(name)) {
        throw CheckpointError(source + ": unexpected tensor '" + name + "' (not part of this model's architecture)");
      }
    }
  }
}

}  // namespace encodec::train
