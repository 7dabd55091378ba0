// Helpers shared by the LM test suites: the golden LMs and the LM-coded cases.
#pragma once

#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "encodec/compress.h"
#include "encodec/lm.h"
#include "golden_cases.h"

namespace encodec::testing {

// The golden LM checkpoint of `model` (manifest "lm_models"), loaded once per
// test binary through --lm-checkpoint rules, with the requested kernels.
inline LmModel golden_lm(const std::string& model, LmKernels kernels = LmKernels::kAuto) {
  static std::mutex mutex;
  static std::map<std::string, LmModel> models;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = models.find(model);
  if (found == models.end()) {
    const std::string checkpoint =
        golden_manifest().at("lm_models").at(model).at("checkpoint").get<std::string>();
    found = models
                .emplace(model, LmModel::from_checkpoint(golden_path(checkpoint),
                                                         golden_model(model).config()))
                .first;
  }
  LmModel lm = found->second;
  lm.set_kernels(kernels);
  return lm;
}

// The golden cases that have a reference LM-coded file.
inline std::vector<GoldenCase> golden_lm_cases() {
  std::vector<GoldenCase> cases;
  for (const GoldenCase& golden : golden_cases()) {
    if (!golden.lm_ecdc.empty()) cases.push_back(golden);
  }
  return cases;
}

// Codes of chunk `index` of a golden case: [K, T] int64.
inline torch::Tensor golden_chunk_codes(const GoldenCase& golden, size_t index) {
  const torch::Tensor codes = load_npy(golden_path(golden.codes)).to(torch::kInt64);
  int64_t start = 0;
  for (size_t i = 0; i < index; ++i) start += golden.frames_per_chunk[i];
  return codes.narrow(1, start, golden.frames_per_chunk[index]).contiguous();
}


}  // namespace encodec::testing
