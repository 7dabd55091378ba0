#include "golden_cases.h"

#include <map>
#include <mutex>

namespace encodec::testing {

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> cases;
  if (!golden_dir()) return cases;
  for (const auto& entry : golden_manifest().at("cases")) {
    GoldenCase golden;
    golden.model = entry.at("model");
    golden.input = entry.at("input");
    golden.bandwidth_kbps = entry.at("bandwidth");
    golden.num_samples = entry.at("num_samples");
    golden.num_codebooks = entry.at("num_codebooks");
    golden.frames_per_chunk = entry.at("frames_per_chunk").get<std::vector<int64_t>>();
    golden.codes = entry.at("codes");
    golden.decoded = entry.at("decoded");
    golden.ecdc = entry.at("ecdc");
    golden.scales = entry.value("scales", "");
    golden.lm_ecdc = entry.value("lm_ecdc", "");
    std::string stem = golden.ecdc.substr(golden.ecdc.rfind('/') + 1);
    stem = stem.substr(0, stem.size() - std::string(".ecdc").size());
    for (char& c : stem) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    golden.label = stem;
    cases.push_back(golden);
  }
  return cases;
}

const EncodecModel& golden_model(const std::string& model) {
  static std::mutex mutex;
  static std::map<std::string, EncodecModel> models;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = models.find(model);
  if (found == models.end()) {
    const std::string checkpoint =
        golden_manifest().at("models").at(model).at("checkpoint").get<std::string>();
    found = models.emplace(model, EncodecModel::from_checkpoint(golden_path(checkpoint), model)).first;
  }
  return found->second;
}

torch::Tensor concatenated_codes(const std::vector<EncodedFrame>& frames) {
  std::vector<torch::Tensor> parts;
  for (const EncodedFrame& frame : frames) parts.push_back(frame.codes[0]);
  return torch::cat(parts, 1);
}

}  // namespace encodec::testing
