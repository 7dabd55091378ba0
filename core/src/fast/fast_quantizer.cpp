#include "fast/fast_quantizer.h"

namespace encodec::fast {

torch::Tensor quantize_residual(const ResidualVectorQuantizer& quantizer, const torch::Tensor& x,
                                int64_t n_q_used) {
  TORCH_CHECK(n_q_used >= 1 && n_q_used <= quantizer.n_q(), "n_q_used out of range");
  const int64_t batch = x.size(0), frames = x.size(2), dimension = x.size(1);
  torch::Tensor residual = x.transpose(1, 2).reshape({batch * frames, dimension}).clone();
  torch::Tensor codes = torch::empty({n_q_used, batch * frames}, torch::kInt64);
  torch::Tensor scores;
  for (int64_t i = 0; i < n_q_used; ++i) {
    const EuclideanCodebook& codebook = quantizer.codebooks()[i];
    scores = torch::addmm(codebook.embed_squared_norms(), residual, codebook.embed().t(),
                          /*beta=*/1, /*alpha=*/-2);
    torch::Tensor indices = scores.argmin(1);
    codes[i].copy_(indices);
    residual.sub_(torch::embedding(codebook.embed(), indices));
  }
  return codes.view({n_q_used, batch, frames});
}

}  // namespace encodec::fast
