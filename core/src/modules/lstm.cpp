#include "modules/lstm.h"

namespace encodec {

SLSTM::SLSTM(WeightLoader& weights, const std::string& prefix, int64_t dimension,
             int64_t num_layers)
    : dimension_(dimension), num_layers_(num_layers) {
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    const std::string suffix = "_l" + std::to_string(layer);
    parameters_.push_back(weights.take(prefix + ".lstm.weight_ih" + suffix, {4 * dimension, dimension}));
    parameters_.push_back(weights.take(prefix + ".lstm.weight_hh" + suffix, {4 * dimension, dimension}));
    parameters_.push_back(weights.take(prefix + ".lstm.bias_ih" + suffix, {4 * dimension}));
    parameters_.push_back(weights.take(prefix + ".lstm.bias_hh" + suffix, {4 * dimension}));
  }
}

void SLSTM::release_weights() {
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    parameters_[4 * layer] = torch::Tensor();
    parameters_[4 * layer + 1] = torch::Tensor();
  }
}

torch::Tensor SLSTM::forward(const torch::Tensor& x) const {
  // Same call as nn.LSTM.forward with no initial state, so results are bit-identical.
  torch::Tensor sequence = x.permute({2, 0, 1});
  torch::Tensor zeros = torch::zeros({num_layers_, x.size(0), dimension_}, x.options());
  auto output = torch::lstm(sequence, {zeros, zeros}, parameters_, /*has_biases=*/true,
                            num_layers_, /*dropout=*/0.0, /*train=*/false,
                            /*bidirectional=*/false, /*batch_first=*/false);
  torch::Tensor y = std::get<0>(output) + sequence;
  return y.permute({1, 2, 0});
}

}  // namespace encodec
