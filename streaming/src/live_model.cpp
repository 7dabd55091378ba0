#include "encodec/live_model.h"

#include <filesystem>
#include <optional>

#include "encodec/compress.h"
#include "encodec/demo_model.h"
#include "encodec/model_store.h"

namespace encodec {

namespace {

// The official file, if present where the store would find it, without downloading.
std::string cached_official(const std::string& file_name, const std::string& model_dir) {
  const std::string folder = model_dir.empty() ? default_hub_cache_dir() : model_dir;
  const std::string path = (std::filesystem::path(folder) / file_name).string();
  return std::filesystem::exists(path) ? path : std::string();
}

std::string folder_looked_in(const std::string& model_dir) {
  return model_dir.empty() ? default_hub_cache_dir() : model_dir;
}

}  // namespace

std::string cached_official_checkpoint(const std::string& file_name, const std::string& model_dir) {
  const std::string path = cached_official(file_name, model_dir);
  if (path.empty()) {
    throw LiveModelError(std::string("the official ") + file_name + " is not in " +
                         folder_looked_in(model_dir) + " (run `encodec` once to download it there)");
  }
  // The name carries the checksum prefix: a corrupt cached file is refused.
  ModelStoreOptions store;
  store.model_dir = std::filesystem::path(path).parent_path().string();
  store.show_progress = false;
  return ModelStore(store).resolve(file_name);
}

LiveModel load_live_model(const LiveModelOptions& options) {
  if (options.random_weights) {
    return {EncodecModel::with_random_weights(EncodecConfig::official_24khz(), 0, KernelSet::kFastOnly),
            "random-weights-0", "random weights (official size)"};
  }
  std::string path = options.checkpoint;
  bool demo = false;
  if (path.empty()) {
    try {
      path = cached_official_checkpoint(kCheckpoint24kHz, options.model_dir);
    } catch (const LiveModelError& error) {
      // Without a model folder named for the official file, the demo model
      // keeps a fresh machine working (as the `encodec` command does).
      std::optional<std::string> demo_path = options.model_dir.empty() ? find_demo_checkpoint() : std::nullopt;
      if (!demo_path) throw LiveModelError(std::string("no model: ") + error.what() + ", so pass --checkpoint FILE");
      path = *demo_path;
      demo = true;
    }
  }
  EncodecModel model = [&] {
    try {
      return EncodecModel::from_checkpoint(path, demo ? kModelNameDemo24kHz : kModelName24kHz, KernelSet::kFastOnly);
    } catch (const std::exception& error) {
      throw LiveModelError("cannot load encodec_24khz from " + path + ": " + error.what());
    }
  }();
  std::string source = demo ? "the demo model " + path +
                                   " (no official checkpoint cached; a small model trained by this project, far "
                                   "below the official quality)"
                            : path;
  return {std::move(model), sha256_file_remembered(path), std::move(source), demo};
}

std::shared_ptr<const LmModel> load_live_lm(const std::string& checkpoint,
                                            const std::string& model_dir,
                                            const EncodecConfig& codec) {
  std::string path = checkpoint;
  if (path.empty()) {
    path = cached_official(kLmCheckpoint24kHz, model_dir);
    if (path.empty()) {
      throw LiveModelError(std::string("no LM: the official ") + kLmCheckpoint24kHz + " is not in " +
                           folder_looked_in(model_dir) + ", so pass --lm-checkpoint FILE");
    }
  }
  try {
    auto lm = std::make_shared<LmModel>(LmModel::from_checkpoint(path, codec));
    lm->set_kernels(LmKernels::kDeterministic);
    return lm;
  } catch (const std::exception& error) {
    throw LiveModelError("cannot load the LM of " + codec.name + " from " + path + ": " + error.what());
  }
}

}  // namespace encodec
