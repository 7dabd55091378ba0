// The demo model: a small causal 24 kHz EnCodec trained by this project's
// encodec-train (models/README.md says how, on what, and how well), shipped so
// that `encodec` and `encodecd` work out of the box on a machine where the
// official checkpoint is not cached. It is far below the official model's
// quality, and its codes decode only with itself.
//
// Usage:
//   if (auto path = encodec::find_demo_checkpoint())
//     model = encodec::EncodecModel::from_checkpoint(*path, "encodec_24khz");
//
// Thread safety: the functions keep no state.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace encodec {

inline constexpr const char* kDemoCheckpoint24kHz = "encodec_demo_24khz.th";

// $ENCODEC_DEMO_MODEL names a file that is not there: an error rather than a
// silent fall back to another model (or to none).
class DemoModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The demo checkpoint: $ENCODEC_DEMO_MODEL when set (a path; DemoModelError,
// naming the variable and the path, when that is not a file), else the
// installed copy (<prefix>/share/encodec-cpp/models/), else the source tree's
// models/ (a build run in place). nullopt when none exists.
std::optional<std::string> find_demo_checkpoint();

// Whether the official `file_name` is in the torch hub cache
// (default_hub_cache_dir()), where the model store would find it without a
// download. Only presence: the store checks the checksum when it loads it.
bool official_checkpoint_in_hub_cache(const std::string& file_name);

}  // namespace encodec
