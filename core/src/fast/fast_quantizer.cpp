#include "fast/fast_quantizer.h"

namespace encodec::fast {

Quantizer::Quantizer(const ResidualVectorQuantizer& reference, Precision precision)
    : reference_(reference),
      dimension_(reference.codebooks().front().embed().size(1)),
      bins_(reference.codebooks().front().embed().size(0)) {
  for (const EuclideanCodebook& codebook : reference.codebooks()) {
    // Doubling is exact, so -2 x.e is the chain over (-2 e) without another rounding.
    const torch::Tensor scaled = (codebook.embed() * -2.0f).contiguous();
    codebooks_.emplace_back(scaled.data_ptr<float>(), bins_, dimension_, precision);
  }
}

void Quantizer::encode(const float* rows, int64_t count, int64_t n_q_used, int64_t* codes,
                       int64_t code_stride, float* residual, float* scores) const {
  TORCH_CHECK(n_q_used >= 1 && n_q_used <= max_codebooks(), "n_q_used out of range");
  std::copy(rows, rows + count * dimension_, residual);
  for (int64_t level = 0; level < n_q_used; ++level) {
    const EuclideanCodebook& codebook = reference_.codebooks()[level];
    // The norms are added after the chain, not as its start: a large first term
    // would round away the small differences that separate near-tied entries.
    ordered_gemm(residual, dimension_, count, codebooks_[level], scores, bins_);
    const float* norms = codebook.embed_squared_norms().data_ptr<float>();
    const float* embed = codebook.embed().data_ptr<float>();
    for (int64_t row = 0; row < count; ++row) {
      const float* row_scores = scores + row * bins_;
      int64_t best = 0;
      float best_score = norms[0] + row_scores[0];
      for (int64_t bin = 1; bin < bins_; ++bin) {
        const float score = norms[bin] + row_scores[bin];
        if (score < best_score) {  // ties: the lowest index
          best = bin;
          best_score = score;
        }
      }
      codes[level * code_stride + row] = best;
      float* row_residual = residual + row * dimension_;
      const float* entry = embed + best * dimension_;
      for (int64_t d = 0; d < dimension_; ++d) row_residual[d] -= entry[d];
    }
  }
}

torch::Tensor Quantizer::encode(const torch::Tensor& x, int64_t n_q_used) const {
  const int64_t batch = x.size(0), frames = x.size(2);
  const torch::Tensor rows = x.transpose(1, 2).reshape({batch * frames, dimension_}).contiguous();
  torch::Tensor codes = torch::empty({n_q_used, batch, frames}, torch::kInt64);
  std::vector<float> residual(rows.numel()), scores(batch * frames * bins_);
  encode(rows.data_ptr<float>(), batch * frames, n_q_used, codes.data_ptr<int64_t>(),
         batch * frames, residual.data(), scores.data());
  return codes;
}

void Quantizer::decode(const int64_t* codes, int64_t code_stride, int64_t n_q_used,
                       float* embedding) const {
  std::fill(embedding, embedding + dimension_, 0.0f);
  for (int64_t level = 0; level < n_q_used; ++level) {
    const int64_t code = codes[level * code_stride];
    TORCH_CHECK(code >= 0 && code < bins_, "code ", code, " out of range at level ", level);
    const float* entry = reference_.codebooks()[level].embed().data_ptr<float>() + code * dimension_;
    for (int64_t d = 0; d < dimension_; ++d) embedding[d] += entry[d];
  }
}

}  // namespace encodec::fast
