#include "encodec/demo_model.h"

#include <cstdlib>
#include <filesystem>

#include "encodec/model_store.h"

namespace encodec {

std::optional<std::string> find_demo_checkpoint() {
  namespace fs = std::filesystem;
  if (const char* chosen = std::getenv("ENCODEC_DEMO_MODEL"); chosen != nullptr && *chosen != '\0') {
    if (fs::is_regular_file(chosen)) return std::string(chosen);
    throw DemoModelError(std::string("$ENCODEC_DEMO_MODEL names ") + chosen + ", which " +
                         (fs::exists(chosen) ? "is not a file" : "does not exist") +
                         " (unset it to use the shipped demo model)");
  }
  // Both folders are fixed at build time (core/CMakeLists.txt).
  for (const char* folder : {ENCODEC_INSTALLED_MODELS_DIR, ENCODEC_SOURCE_MODELS_DIR}) {
    const fs::path path = fs::path(folder) / kDemoCheckpoint24kHz;
    if (fs::is_regular_file(path)) return path.string();
  }
  return std::nullopt;
}

bool official_checkpoint_in_hub_cache(const std::string& file_name) {
  return std::filesystem::is_regular_file(std::filesystem::path(default_hub_cache_dir()) / file_name);
}

}  // namespace encodec
