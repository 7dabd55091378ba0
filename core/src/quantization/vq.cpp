#include "quantization/vq.h"

namespace encodec {

EuclideanCodebook::EuclideanCodebook(WeightLoader& weights, const std::string& prefix,
                                     int64_t bins, int64_t dim) {
  embed_ = weights.take(prefix + "._codebook.embed", {bins, dim});
  // Training-time buffers: k-means state and EMA statistics.
  weights.take(prefix + "._codebook.inited", {1});
  weights.take(prefix + "._codebook.cluster_size", {bins});
  weights.take(prefix + "._codebook.embed_avg", {bins, dim});
  embed_squared_norms_ = embed_.t().pow(2).sum(0, /*keepdim=*/true);
}

torch::Tensor EuclideanCodebook::quantize(const torch::Tensor& x) const {
  // The reference's expression, op for op, so that distances (and so argmax
  // ties and near-ties) are bit-identical: -(|x|^2 - 2 x.e + |e|^2).
  torch::Tensor embed_t = embed_.t();
  torch::Tensor dist = -(x.pow(2).sum(1, /*keepdim=*/true) - torch::matmul(2 * x, embed_t) +
                         embed_squared_norms_);
  return std::get<1>(dist.max(-1));
}

torch::Tensor EuclideanCodebook::dequantize(const torch::Tensor& indices) const {
  return torch::embedding(embed_, indices);
}

ResidualVectorQuantizer::ResidualVectorQuantizer(WeightLoader& weights, const std::string& prefix,
                                                 int64_t n_q, int64_t bins, int64_t dimension)
    : bins_(bins), dimension_(dimension) {
  for (int64_t i = 0; i < n_q; ++i) {
    codebooks_.emplace_back(weights, prefix + ".vq.layers." + std::to_string(i), bins, dimension);
  }
}

torch::Tensor ResidualVectorQuantizer::encode(const torch::Tensor& x, int64_t n_q_used) const {
  TORCH_CHECK(n_q_used >= 1 && n_q_used <= n_q(), "n_q_used out of range");
  const int64_t batch = x.size(0), frames = x.size(2);
  torch::Tensor residual = x;
  std::vector<torch::Tensor> all_indices;
  for (int64_t i = 0; i < n_q_used; ++i) {
    const EuclideanCodebook& codebook = codebooks_[i];
    torch::Tensor flat = residual.transpose(1, 2).reshape({-1, dimension_});
    torch::Tensor indices = codebook.quantize(flat).view({batch, frames});
    torch::Tensor quantized = codebook.dequantize(indices).transpose(1, 2);
    residual = residual - quantized;
    all_indices.push_back(indices);
  }
  return torch::stack(all_indices);
}

torch::Tensor ResidualVectorQuantizer::decode(const torch::Tensor& codes) const {
  TORCH_CHECK(codes.size(0) <= n_q(), "more codebooks in codes than in the quantizer");
  // Summed in codebook order starting from 0, as the reference does.
  torch::Tensor quantized_out = torch::zeros({}, torch::kFloat32);
  for (int64_t i = 0; i < codes.size(0); ++i) {
    quantized_out = quantized_out + codebooks_[i].dequantize(codes[i]).transpose(1, 2);
  }
  return quantized_out;
}

}  // namespace encodec
