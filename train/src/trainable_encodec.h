// The trainable EnCodec model (encodec/model.py's EncodecModel without the
// chunking and normalization of the 48 kHz model): children `encoder`,
// `quantizer`, `decoder`, so that its parameters and buffers are the official
// state_dict.
#pragma once

#include <torch/torch.h>

#include "encodec/checkpoint.h"
#include "encodec/encodec.h"
#include "encodec/train.h"
#include "trainable_seanet.h"
#include "trainable_vq.h"

namespace encodec::train {

class TrainableEncodecImpl : public torch::nn::Module {
 public:
  TrainableEncodecImpl(const EncodecConfig& config, const CodebookOptions& codebooks);

  struct Output {
    torch::Tensor audio;    // [B, channels, T], trimmed to the input's length
    torch::Tensor codes;    // [n_q_used, B, frames]
    torch::Tensor penalty;  // the commitment loss (mean over the codebooks used)
    torch::Tensor latent;   // [B, dimension, frames]: the encoder's output, before quantization
  };
  // x: [B, channels, T] through `n_q_used` codebooks. Training mode updates
  // the codebooks and passes gradients straight through the quantizer.
  Output forward(const torch::Tensor& x, int64_t n_q_used);

  // x straight from the encoder to the decoder, no quantizer (the trainer's
  // warm-up), with Gaussian noise of `noise_std` added to the latent: codes
  // empty, penalty 0.
  Output forward_unquantized(const torch::Tensor& x, double noise_std = 0);

  // Parameters and buffers by their official names (CPU copies).
  StateDict state_dict() const;
  // Copies every tensor of the official layout from `state` (strict: missing,
  // extra or misshapen tensors throw CheckpointError naming them).
  void load_state_dict(const StateDict& state, const std::string& source);

  const EncodecConfig& config() const { return config_; }
  SEANetEncoder encoder() const { return encoder_; }
  ResidualVectorQuantizer quantizer() const { return quantizer_; }
  SEANetDecoder decoder() const { return decoder_; }

 private:
  EncodecConfig config_;
  SEANetEncoder encoder_{nullptr};
  ResidualVectorQuantizer quantizer_{nullptr};
  SEANetDecoder decoder_{nullptr};
};
TORCH_MODULE(TrainableEncodec);

}  // namespace encodec::train
