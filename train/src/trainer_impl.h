// Trainer's state, visible to the tests (train/include/encodec/train.h keeps it opaque).
#pragma once

#include <memory>
#include <random>

#include <torch/torch.h>

#include "balancer.h"
#include "encodec/train.h"
#include "losses.h"
#include "msstftd.h"
#include "trainable_encodec.h"

namespace encodec::train {

struct Trainer::Impl {
  explicit Impl(const TrainConfig& config);

  bool uses_discriminator() const { return config.weights.adversarial > 0 || config.weights.feature > 0; }

  TrainConfig config;
  torch::Device device;
  TrainableEncodec model{nullptr};
  MultiScaleSTFTDiscriminator discriminator{nullptr};  // null without adversarial losses
  std::unique_ptr<torch::optim::Adam> generator_optimizer, discriminator_optimizer;
  Balancer balancer;
  MultiScaleMelLoss mel_loss;
  std::mt19937_64 random;  // bandwidths, discriminator updates, data segments
  int64_t step = 0;
};

// The device config.device names ("auto": CUDA when available).
torch::Device resolve_device(const std::string& name);

}  // namespace encodec::train
