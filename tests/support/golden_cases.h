// The golden cases of manifest.json as GoogleTest parameters, and the models
// they were made with (loaded once per test binary).
#pragma once

#include <string>
#include <vector>

#include "encodec/encodec.h"
#include "golden.h"

namespace encodec::testing {

struct GoldenCase {
  std::string model;  // "encodec_24khz" / "encodec_48khz"
  std::string input;  // relative to the golden dir
  double bandwidth_kbps = 0;
  int64_t num_samples = 0;
  int num_codebooks = 0;
  std::vector<int64_t> frames_per_chunk;
  std::string codes, decoded, ecdc, scales, lm_ecdc;  // relative paths ("" when absent)
  std::string label;  // e.g. "speech_24k_6kbps", a valid test name
};

// Every case of the manifest; empty when the golden data is absent.
std::vector<GoldenCase> golden_cases();

// The random-weight golden checkpoint of `model`, loaded through --checkpoint rules.
const EncodecModel& golden_model(const std::string& model);

// Codes of all chunks concatenated along time: [K, T] int64.
torch::Tensor concatenated_codes(const std::vector<EncodedFrame>& frames);

}  // namespace encodec::testing

namespace encodec::testing {
// Short test names in GoogleTest and ctest output.
inline void PrintTo(const GoldenCase& golden, std::ostream* out) { *out << golden.label; }
}  // namespace encodec::testing
