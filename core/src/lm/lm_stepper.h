// One stream's LM state: the reference's (states, offset) between calls of
// LMModel.forward on one time step.
#pragma once

#include <cstdint>
#include <memory>

#include "encodec/lm.h"
#include "lm/lm_weights.h"

namespace encodec {

class LmStepper {
 public:
  virtual ~LmStepper() = default;
  // Runs the LM on the previous frame's codes (nullptr before the first frame of a
  // chunk: the reference's all-zero input) and returns the probabilities of the
  // next frame's codes: num_codebooks rows of card floats, valid until the next call.
  virtual const float* step(const int64_t* previous_codes) = 0;
  // Back to the state before the first frame.
  virtual void reset() = 0;
  virtual int num_codebooks() const = 0;
};

using SharedLmWeights = std::shared_ptr<const LmModel::Weights>;

// The stepper of model.kernels() (kFast, kReference or kDeterministic).
std::unique_ptr<LmStepper> make_lm_stepper(const LmModel& model, int num_codebooks);
// The reference's LibTorch operations.
std::unique_ptr<LmStepper> make_reference_lm_stepper(SharedLmWeights weights, int num_codebooks);
namespace lm {
// The exact kernels (weights->fast must be set).
std::unique_ptr<LmStepper> make_fast_lm_stepper(SharedLmWeights weights, int num_codebooks);
}  // namespace lm

}  // namespace encodec
