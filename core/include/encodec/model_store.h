// Where checkpoints come from: the official files, looked up in a model
// directory or in the torch hub cache and downloaded there on first use from
// the address the Python package uses, with the sha256 prefix in the file name
// checked as upstream does.
//
// Usage:
//   encodec::ModelStore store;                       // $ENCODEC_MODEL_DIR or the hub cache
//   std::string path = store.resolve("encodec_24khz-d7cc33bc.th");
//
// Thread safety: distinct ModelStore objects are independent; do not resolve
// the same file from two processes at once (the download is renamed into place
// atomically, so the worst case is a second download).
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace encodec {

// Missing files, failed downloads, checksum mismatches. The message names the
// file, the address or the expected and actual checksums.
class ModelStoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kCheckpointRootUrl = "https://dl.fbaipublicfiles.com/encodec/v0/";
inline constexpr const char* kCheckpoint24kHz = "encodec_24khz-d7cc33bc.th";
inline constexpr const char* kCheckpoint48kHz = "encodec_48khz-7e698e3e.th";
inline constexpr const char* kLmCheckpoint24kHz = "encodec_lm_24khz-1608e3c0.th";
inline constexpr const char* kLmCheckpoint48kHz = "encodec_lm_48khz-7add9fc3.th";

struct ModelStoreOptions {
  // Look only here for the official file names (no download). Defaults to
  // $ENCODEC_MODEL_DIR when that is set.
  std::optional<std::string> model_dir;
  // Where downloads go and are looked up: $TORCH_HOME/hub/checkpoints, default
  // ~/.cache/torch/hub/checkpoints (the Python package's cache, so files it
  // fetched are reused).
  std::optional<std::string> cache_dir;
  std::string root_url = kCheckpointRootUrl;
  // Show a progress bar on stderr while downloading (only when it is a terminal).
  bool show_progress = true;
};

// The hub cache folder: $TORCH_HOME/hub/checkpoints or ~/.cache/torch/hub/checkpoints.
std::string default_hub_cache_dir();

// Lowercase hex sha256 of a file's contents.
std::string sha256_file(const std::string& path);

// sha256_file, remembered between processes: the digest of a file is kept in
// $XDG_CACHE_HOME/encodec-cpp/sha256 (default ~/.cache/encodec-cpp/sha256)
// under its device and inode with its size, mtime and ctime, and reused while
// those are unchanged (any write to the file changes its ctime, which no user
// can set back; files changed in the last 2 s are not remembered yet). Hashing the official 24 kHz codec and its LM took about 100 ms
// of every start; the store and encodecd's model identity use this. Failing to
// remember (a read-only cache) only costs the hashing next time.
std::string sha256_file_remembered(const std::string& path);

// The checksum prefix carried by an official name: "encodec_24khz-d7cc33bc.th" -> "d7cc33bc".
std::string checksum_prefix_from_name(const std::string& file_name);

class ModelStore {
 public:
  explicit ModelStore(ModelStoreOptions options = {});

  // Returns the path of a verified local copy of `file_name` (an official name
  // carrying its sha256 prefix), downloading it into the cache when needed.
  // A file whose checksum does not match is never returned: a bad download is
  // deleted, a bad file in model_dir is reported. Throws ModelStoreError.
  std::string resolve(const std::string& file_name) const;

 private:
  ModelStoreOptions options_;
};

}  // namespace encodec
