#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "encodec/compress.h"
#include "encodec/encodec.h"
#include "fast/fast_quantizer.h"
#include "model_weights.h"

namespace encodec {

EncodecConfig EncodecConfig::official_24khz() {
  EncodecConfig config;
  config.name = "encodec_24khz";
  return config;
}

EncodecConfig EncodecConfig::official_48khz() {
  EncodecConfig config;
  config.name = "encodec_48khz";
  config.sample_rate_hz = 48000;
  config.channels = 2;
  config.causal = false;
  config.norm = "time_group_norm";
  config.normalize = true;
  config.segment_s = 1.0;
  config.n_q = 16;
  config.target_bandwidths = {3.0, 6.0, 12.0, 24.0};
  return config;
}

EncodecConfig EncodecConfig::infer_from_state_dict(const std::string& name,
                                                   const StateDict& state) {
  EncodecConfig config;
  if (name == kModelName24kHz || name == kModelNameDemo24kHz) {
    config = official_24khz();
    config.name = name;
  } else if (name == kModelName48kHz) {
    config = official_48khz();
  } else {
    throw std::invalid_argument("unknown model '" + name + "' (expected one of " + known_model_names() + ")");
  }
  const std::string first_conv = config.norm == "weight_norm"
                                     ? "encoder.model.0.conv.conv.weight_v"
                                     : "encoder.model.0.conv.conv.weight";
  const std::string first_codebook = "quantizer.vq.layers.0._codebook.embed";
  for (const std::string& required : {first_conv, first_codebook}) {
    if (!state.count(required)) {
      throw CheckpointError("checkpoint for " + name + " has no tensor '" + required +
                            "' (is it an " + name + " checkpoint?)");
    }
  }
  const torch::Tensor& conv = state.at(first_conv);
  const torch::Tensor& codebook = state.at(first_codebook);
  if (conv.dim() != 3 || codebook.dim() != 2) {
    throw CheckpointError("tensor '" + (conv.dim() != 3 ? first_conv : first_codebook) +
                          "' has an unexpected number of dimensions");
  }
  config.n_filters = static_cast<int>(conv.size(0));
  config.bins = static_cast<int>(codebook.size(0));
  config.dimension = static_cast<int>(codebook.size(1));
  int n_q = 0;
  while (state.count("quantizer.vq.layers." + std::to_string(n_q) + "._codebook.embed")) ++n_q;
  config.n_q = n_q;
  // The encoder's LSTM sits after the first conv and one residual block + downsampling per ratio.
  const std::string lstm_prefix =
      "encoder.model." + std::to_string(1 + config.ratios.size() * (config.n_residual_layers + 2)) +
      ".lstm.weight_ih_l";
  int lstm_layers = 0;
  while (state.count(lstm_prefix + std::to_string(lstm_layers))) ++lstm_layers;
  config.lstm_layers = lstm_layers;
  return config;
}

int EncodecConfig::hop_length() const {
  int hop = 1;
  for (int ratio : ratios) hop *= ratio;
  return hop;
}

int EncodecConfig::frame_rate() const {
  return static_cast<int>(std::ceil(static_cast<double>(sample_rate_hz) / hop_length()));
}

int EncodecConfig::bits_per_codebook() const {
  return static_cast<int>(std::log2(static_cast<double>(bins)));
}

std::optional<int64_t> EncodecConfig::segment_length() const {
  if (!segment_s) return std::nullopt;
  return static_cast<int64_t>(*segment_s * sample_rate_hz);
}

std::optional<int64_t> EncodecConfig::segment_stride() const {
  auto length = segment_length();
  if (!length) return std::nullopt;
  return std::max<int64_t>(1, static_cast<int64_t>((1 - overlap) * static_cast<double>(*length)));
}

int EncodecConfig::num_codebooks(std::optional<double> bandwidth_kbps) const {
  if (!bandwidth_kbps || *bandwidth_kbps <= 0) return n_q;
  const double bandwidth_per_codebook = std::log2(static_cast<double>(bins)) * frame_rate();
  return static_cast<int>(std::max(1.0, std::floor(*bandwidth_kbps * 1000 / bandwidth_per_codebook)));
}

SEANetConfig seanet_config(const EncodecConfig& config) {
  SEANetConfig seanet;
  seanet.channels = config.channels;
  seanet.dimension = config.dimension;
  seanet.n_filters = config.n_filters;
  seanet.n_residual_layers = config.n_residual_layers;
  seanet.ratios.assign(config.ratios.begin(), config.ratios.end());
  seanet.causal = config.causal;
  seanet.lstm_layers = config.lstm_layers;
  seanet.norm = parse_conv_norm(config.norm);
  return seanet;
}

EncodecModel::EncodecModel(std::shared_ptr<const Weights> weights)
    : weights_(std::move(weights)),
      kernels_(weights_->kernel_set == KernelSet::kFastOnly ? Kernels::kFast : Kernels::kReference) {}

KernelSet EncodecModel::kernel_set() const { return weights_->kernel_set; }

namespace {

std::shared_ptr<EncodecModel::Weights> build_weights(const EncodecConfig& config,
                                                     WeightLoader& loader, KernelSet kernel_set) {
  const SEANetConfig seanet = seanet_config(config);
  auto weights = std::make_shared<EncodecModel::Weights>(EncodecModel::Weights{
      config, kernel_set, SEANetEncoder(loader, "encoder", seanet),
      ResidualVectorQuantizer(loader, "quantizer", config.n_q, config.bins, config.dimension),
      SEANetDecoder(loader, "decoder", seanet), nullptr, nullptr, nullptr, {}});
  loader.expect_all_used();
  if (kernel_set == KernelSet::kFastOnly) {
    const fast::SEANet::ReleaseReferenceWeights release;
    weights->fast_encoder = std::make_unique<fast::SEANet>(weights->encoder.layers(), release);
    weights->fast_decoder = std::make_unique<fast::SEANet>(weights->decoder.layers(), release);
  } else if (kernel_set == KernelSet::kBoth) {
    weights->fast_encoder = std::make_unique<fast::SEANet>(weights->encoder.layers());
    weights->fast_decoder = std::make_unique<fast::SEANet>(weights->decoder.layers());
  }
  // The fast quantizer decodes from the reference codebooks, which stay.
  if (kernel_set != KernelSet::kReferenceOnly) {
    weights->fast_quantizer = std::make_unique<fast::Quantizer>(weights->quantizer);
  }
  return weights;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

EncodecModel EncodecModel::from_state_dict(const EncodecConfig& config, const StateDict& state,
                                           const std::string& source, KernelSet kernel_set) {
  WeightLoader loader(state, source);
  return EncodecModel(build_weights(config, loader, kernel_set));
}

EncodecModel EncodecModel::from_state_dict(const EncodecConfig& config, StateDict&& state,
                                           const std::string& source, KernelSet kernel_set) {
  WeightLoader loader(std::move(state), source);
  return EncodecModel(build_weights(config, loader, kernel_set));
}

EncodecModel EncodecModel::with_random_weights(const EncodecConfig& config, uint64_t seed,
                                               KernelSet kernel_set) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  WeightLoader loader([&generator](const std::string& name, const TensorShape& shape) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat32);
    if (ends_with(name, "weight_g") || ends_with(name, "norm.weight") || ends_with(name, "inited") ||
        ends_with(name, "cluster_size")) {
      return torch::ones(shape, options);  // unit-norm conv kernels keep the signal level
    }
    if (ends_with(name, "bias")) {
      return torch::zeros(shape, options);
    }
    if (name.find(".lstm.") != std::string::npos) {
      const double hidden_size = static_cast<double>(shape[0] / 4);  // 4 gates
      const double bound = 1.0 / std::sqrt(hidden_size);
      return torch::rand(shape, generator, options) * (2 * bound) - bound;
    }
    torch::Tensor values = torch::randn(shape, generator, options);
    if (ends_with(name, ".weight") && shape.size() == 3) {
      values /= std::sqrt(static_cast<double>(shape[1] * shape[2]));  // fan-in scaling
    }
    return values;
  });
  return EncodecModel(build_weights(config, loader, kernel_set));
}

std::vector<std::pair<std::string, std::vector<int64_t>>> EncodecModel::tensor_shapes(
    const EncodecConfig& config) {
  WeightLoader loader([](const std::string&, const TensorShape& shape) {
    return torch::ones(shape, torch::kFloat32);
  });
  build_weights(config, loader, KernelSet::kReferenceOnly);
  return loader.taken();
}

EncodecModel EncodecModel::from_checkpoint(const std::string& path, const std::string& name,
                                           KernelSet kernel_set) {
  StateDict state = load_checkpoint(path);
  const EncodecConfig config = EncodecConfig::infer_from_state_dict(name, state);
  return from_state_dict(config, std::move(state), path, kernel_set);
}

EncodecModel EncodecModel::encodec_model_24khz(const ModelStoreOptions& options,
                                               KernelSet kernel_set) {
  const std::string path = ModelStore(options).resolve(kCheckpoint24kHz);
  return from_state_dict(EncodecConfig::official_24khz(), load_checkpoint(path), path, kernel_set);
}

EncodecModel EncodecModel::encodec_model_48khz(const ModelStoreOptions& options,
                                               KernelSet kernel_set) {
  const std::string path = ModelStore(options).resolve(kCheckpoint48kHz);
  return from_state_dict(EncodecConfig::official_48khz(), load_checkpoint(path), path, kernel_set);
}

const EncodecConfig& EncodecModel::config() const { return weights_->config; }

void EncodecModel::set_target_bandwidth(double bandwidth_kbps) {
  const auto& allowed = config().target_bandwidths;
  if (std::find(allowed.begin(), allowed.end(), bandwidth_kbps) == allowed.end()) {
    std::ostringstream message;
    message << "model " << name() << " does not support bandwidth " << bandwidth_kbps
            << " kbps (choose one of";
    for (size_t i = 0; i < allowed.size(); ++i) message << (i ? ", " : " ") << allowed[i];
    message << ")";
    throw std::invalid_argument(message.str());
  }
  // Checkpoints of other widths (trained with encodec-train) may hold fewer
  // codebooks than the official bandwidths assume.
  const int needed = config().num_codebooks(bandwidth_kbps);
  if (needed > config().n_q) {
    std::ostringstream message;
    message << "model " << name() << " has " << config().n_q << " codebooks of " << config().bins
            << " entries; " << bandwidth_kbps << " kbps needs " << needed;
    throw std::invalid_argument(message.str());
  }
  bandwidth_kbps_ = bandwidth_kbps;
}

EncodedFrame EncodecModel::encode_chunk(const torch::Tensor& wav) const {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(wav.dim() == 3 && wav.size(1) == channels(), "expected audio of shape [B, ",
              channels(), ", T], got ", wav.sizes());
  torch::Tensor x = wav;
  EncodedFrame frame;
  if (config().normalize) {
    torch::Tensor mono = x.mean(1, /*keepdim=*/true);
    torch::Tensor volume = mono.pow(2).mean(2, /*keepdim=*/true).sqrt();
    torch::Tensor scale = 1e-8 + volume;
    x = x / scale;
    frame.scale = scale.view({-1, 1});
  }
  const bool fast = kernels_ == Kernels::kFast;
  torch::Tensor embeddings =
      fast ? fast_layers(*this).encoder.forward(x) : weights_->encoder.forward(x);
  const torch::Tensor codes = fast ? fast_layers(*this).quantizer.encode(embeddings, num_codebooks())
                                   : weights_->quantizer.encode(embeddings, num_codebooks());
  frame.codes = codes.transpose(0, 1);
  return frame;
}

std::vector<EncodedFrame> EncodecModel::encode(const torch::Tensor& wav) const {
  TORCH_CHECK(wav.dim() == 3, "expected audio of shape [B, C, T], got ", wav.sizes());
  const int64_t length = wav.size(2);
  const int64_t segment_length = config().segment_length().value_or(length);
  const int64_t stride = config().segment_stride().value_or(length);
  std::vector<EncodedFrame> frames;
  for (int64_t offset = 0; offset < length; offset += stride) {
    const int64_t this_length = std::min(segment_length, length - offset);
    frames.push_back(encode_chunk(wav.narrow(2, offset, this_length)));
  }
  return frames;
}

torch::Tensor EncodecModel::decode_chunk(const EncodedFrame& frame) const {
  torch::NoGradGuard no_grad;
  torch::Tensor embeddings = weights_->quantizer.decode(frame.codes.transpose(0, 1));
  torch::Tensor out = kernels_ == Kernels::kFast ? fast_layers(*this).decoder.forward(embeddings)
                                                 : weights_->decoder.forward(embeddings);
  if (frame.scale) out = out * frame.scale->view({-1, 1, 1});
  return out;
}

torch::Tensor EncodecModel::decode(const std::vector<EncodedFrame>& frames) const {
  TORCH_CHECK(!frames.empty(), "nothing to decode");
  if (!config().segment_length()) {
    TORCH_CHECK(frames.size() == 1, "a model without segments decodes exactly one frame");
    return decode_chunk(frames[0]);
  }
  std::vector<torch::Tensor> outputs;
  for (const EncodedFrame& frame : frames) outputs.push_back(decode_chunk(frame));
  return linear_overlap_add(outputs, *config().segment_stride());
}

torch::Tensor linear_overlap_add(const std::vector<torch::Tensor>& frames, int64_t stride) {
  TORCH_CHECK(!frames.empty(), "linear_overlap_add needs at least one frame");
  // Same ops as the reference so that results are bit-identical.
  const torch::Tensor& first = frames.front();
  std::vector<int64_t> shape(first.sizes().begin(), first.sizes().end() - 1);
  const int64_t total_size = stride * static_cast<int64_t>(frames.size() - 1) + frames.back().size(-1);
  const int64_t frame_length = first.size(-1);
  torch::Tensor t = torch::linspace(0, 1, frame_length + 2, first.options()).slice(0, 1, -1);
  torch::Tensor weight = 0.5 - (t - 0.5).abs();
  torch::Tensor sum_weight = torch::zeros({total_size}, first.options());
  shape.push_back(total_size);
  torch::Tensor out = torch::zeros(shape, first.options());
  int64_t offset = 0;
  for (const torch::Tensor& frame : frames) {
    const int64_t length = frame.size(-1);
    torch::Tensor frame_weight = weight.slice(0, 0, length);
    out.narrow(-1, offset, length) += frame_weight * frame;
    sum_weight.narrow(0, offset, length) += frame_weight;
    offset += stride;
  }
  TORCH_CHECK(sum_weight.min().item<float>() > 0, "overlap-add left a gap");
  return out / sum_weight;
}

}  // namespace encodec
