// EncodecModel's precision: which fast layers it runs, and the bf16 copies of
// them, built on first use.
#include <mutex>
#include <stdexcept>
#include <string>

#include "model_weights.h"

namespace encodec {

struct LazyBf16Layers::State {
  struct Layers {
    fast::SEANet encoder, decoder;
    fast::Quantizer quantizer;
  };
  std::once_flag once;
  std::unique_ptr<const Layers> layers;
};

LazyBf16Layers::LazyBf16Layers() : state_(std::make_unique<State>()) {}
LazyBf16Layers::~LazyBf16Layers() = default;
LazyBf16Layers::LazyBf16Layers(LazyBf16Layers&&) noexcept = default;

FastLayers LazyBf16Layers::get(const EncodecModel::Weights& weights) const {
  std::call_once(state_->once, [&] {
    // The reference layers hold the weights with weight norm folded in fp32;
    // the fast layers round them to bf16 from there.
    const fast::LayerPrecisions plan = fast::LayerPrecisions::for_precision(Precision::kBf16);
    state_->layers.reset(new State::Layers{
        fast::SEANet(weights.encoder.layers(), plan), fast::SEANet(weights.decoder.layers(), plan),
        fast::Quantizer(weights.quantizer, plan.quantizer)});
  });
  const State::Layers& layers = *state_->layers;
  return {layers.encoder, layers.decoder, layers.quantizer};
}

FastLayers fast_layers(const EncodecModel& model) {
  const EncodecModel::Weights& weights = model.weights();
  if (model.precision() == Precision::kBf16) return weights.bf16_layers.get(weights);
  return {*weights.fast_encoder, *weights.fast_decoder, *weights.fast_quantizer};
}

namespace {

// Why `model` cannot run `kernels` in `precision` ("" when it can).
std::string kernel_problem(const EncodecModel& model, Kernels kernels, Precision precision) {
  const KernelSet loaded = model.kernel_set();
  if (kernels == Kernels::kReference) {
    if (precision == Precision::kBf16) {
      return "the reference kernels run in fp32 only; set the precision to fp32 first";
    }
    if (loaded == KernelSet::kFastOnly) {
      return "model " + model.name() +
             " was loaded with the fast kernels only (KernelSet::kFastOnly): it cannot run the "
             "reference kernels";
    }
  } else if (precision == Precision::kFp32 && loaded == KernelSet::kReferenceOnly) {
    return "model " + model.name() +
           " was loaded with the reference kernels only (KernelSet::kReferenceOnly): it cannot "
           "run the fp32 fast kernels";
  } else if (precision == Precision::kBf16 && loaded == KernelSet::kFastOnly) {
    return "model " + model.name() +
           " was loaded with KernelSet::kFastOnly, whose reference weights, from which the bf16 "
           "layers are built, are released; load it with kBoth or kReferenceOnly for bf16";
  }
  return "";
}

}  // namespace

void EncodecModel::set_kernels(Kernels kernels) {
  const std::string problem = kernel_problem(*this, kernels, precision_);
  if (!problem.empty()) throw std::logic_error(problem);
  kernels_ = kernels;
}

void EncodecModel::set_precision(Precision precision) {
  if (precision == Precision::kBf16) {
    const std::string reason = bf16_unavailable_reason();
    if (!reason.empty()) throw std::runtime_error(reason);
    const std::string problem = kernel_problem(*this, Kernels::kFast, precision);
    if (!problem.empty()) throw std::logic_error(problem);
    weights_->bf16_layers.get(*weights_);  // built now rather than in the first encode
    kernels_ = Kernels::kFast;
  } else if (!kernel_problem(*this, kernels_, precision).empty()) {
    kernels_ = Kernels::kReference;  // a reference-only model leaving bf16
  }
  precision_ = precision;
}

}  // namespace encodec
