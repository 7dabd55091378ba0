#include "encodec/model_store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <system_error>
#include <vector>

#include "progress_line.h"
#include "signal_cleanup.h"

namespace encodec {
namespace {

namespace fs = std::filesystem;

constexpr size_t kReadChunkBytes = size_t{1} << 20;  // as utils._check_checksum
constexpr long kConnectTimeoutSeconds = 30;
// A stalled transfer (below 1 KiB/s for a minute) is aborted rather than left
// hanging forever; a slow but live connection still completes.
constexpr long kLowSpeedLimitBytesPerSecond = 1024;
constexpr long kLowSpeedTimeSeconds = 60;
constexpr long kMaxRedirects = 10;
constexpr double kBytesPerMiB = 1024.0 * 1024.0;

// An environment variable's value, or nullopt when it is unset or empty (an
// empty value means "not configured" for shell users, as in torch.hub).
std::optional<std::string> non_empty_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::string home_dir() {
  if (auto home = non_empty_env("HOME")) return *home;
  // Like Python's os.path.expanduser: fall back to the password database.
  if (const passwd* entry = getpwuid(getuid()); entry != nullptr && entry->pw_dir != nullptr) {
    return entry->pw_dir;
  }
  throw ModelStoreError(
      "cannot locate the torch hub cache: HOME is not set and the user has no home directory; "
      "set TORCH_HOME or pass a cache directory");
}

// "~" and "~/..." expand to the home directory (torch.hub applies
// os.path.expanduser to TORCH_HOME / XDG_CACHE_HOME); other paths are unchanged.
std::string expand_user(const std::string& path) {
  if (path == "~") return home_dir();
  if (path.rfind("~/", 0) == 0) return home_dir() + path.substr(1);
  return path;
}

std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

// The name becomes a path component in the cache and the last segment of the
// URL, so anything that could step outside the directory is refused.
void check_plain_file_name(const std::string& file_name) {
  if (file_name.empty() || file_name == "." || file_name == ".." ||
      file_name.find('/') != std::string::npos || file_name.find('\0') != std::string::npos) {
    throw ModelStoreError("invalid checkpoint file name '" + file_name +
                          "': expected a plain file name such as " + kCheckpoint24kHz);
  }
}

std::string to_hex(const unsigned char* bytes, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    hex.push_back(kDigits[bytes[i] >> 4]);
    hex.push_back(kDigits[bytes[i] & 0x0f]);
  }
  return hex;
}

// Incremental sha256 over OpenSSL's EVP interface.
class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) {
      throw ModelStoreError("OpenSSL could not initialise sha256");
    }
  }

  void update(const void* data, size_t size) {
    if (EVP_DigestUpdate(context_.get(), data, size) != 1) {
      throw ModelStoreError("OpenSSL sha256 update failed");
    }
  }

  std::string hex_digest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_size = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest, &digest_size) != 1) {
      throw ModelStoreError("OpenSSL sha256 finalisation failed");
    }
    return to_hex(digest, digest_size);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

// Same comparison as utils._check_checksum: the leading characters of the
// digest against the prefix in the name.
void verify_checksum(const std::string& path, const std::string& actual_sha256,
                     const std::string& expected_prefix, const std::string& advice) {
  const std::string actual_prefix = actual_sha256.substr(0, expected_prefix.size());
  if (actual_prefix != expected_prefix) {
    throw ModelStoreError("checksum mismatch for " + path + ": expected " + expected_prefix +
                          ", got " + actual_prefix + advice);
  }
}

void ensure_curl_initialised() {
  // curl_global_init is not thread-safe in libcurl 7.88, so it runs exactly
  // once however many threads resolve files. If it fails, call_once lets a
  // later caller try again.
  static std::once_flag once;
  std::call_once(once, [] {
    const CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (code != CURLE_OK) {
      throw ModelStoreError(std::string("libcurl initialisation failed: ") +
                            curl_easy_strerror(code));
    }
  });
}

// The process umask, read without changing it (umask() itself would race with
// other threads creating files); 022 when /proc is unavailable.
mode_t current_umask() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return 022;
  mode_t mask = 022;
  char line[256];
  while (std::fgets(line, sizeof line, status) != nullptr) {
    unsigned int value = 0;
    if (std::sscanf(line, "Umask: %o", &value) == 1) {
      mask = static_cast<mode_t>(value);
      break;
    }
  }
  std::fclose(status);
  return mask;
}

// Deletes the temporary download unless it was renamed into place, so no
// failure path (including exceptions) leaves a partial file behind.
class TempFile {
 public:
  explicit TempFile(std::string path_template) : path_(std::move(path_template)) {
    std::vector<char> buffer(path_.begin(), path_.end());
    buffer.push_back('\0');
    const int fd = mkstemp(buffer.data());
    if (fd < 0) {
      const int error_number = errno;
      throw ModelStoreError("cannot create a temporary file in " +
                            fs::path(path_).parent_path().string() + ": " +
                            errno_text(error_number));
    }
    path_.assign(buffer.data());
    remove_on_signal_ = RemoveOnSignal(path_);
    // mkstemp creates 0600; the checkpoint gets the mode any new file would
    // (0644 under the usual umask), so a cache shared with other users or
    // prepared by root for a service account stays readable.
    ::fchmod(fd, 0666 & ~current_umask());
    stream_ = fdopen(fd, "wb");
    if (stream_ == nullptr) {
      const int error_number = errno;
      ::close(fd);
      ::unlink(path_.c_str());
      throw ModelStoreError("cannot open " + path_ + ": " + errno_text(error_number));
    }
  }

  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  ~TempFile() {
    if (stream_ != nullptr) std::fclose(stream_);
    if (!committed_) ::unlink(path_.c_str());
  }

  const std::string& path() const { return path_; }
  std::FILE* stream() const { return stream_; }

  // Flushes to disk and closes, so a crash after the rename cannot leave a
  // truncated file under the final name.
  void finish_writing() {
    std::FILE* stream = stream_;
    stream_ = nullptr;
    int error_number = 0;
    if (std::fflush(stream) != 0 || ::fsync(fileno(stream)) != 0) error_number = errno;
    if (std::fclose(stream) != 0 && error_number == 0) error_number = errno;
    if (error_number != 0) {
      throw ModelStoreError("writing " + path_ + " failed: " + errno_text(error_number));
    }
  }

  void rename_to(const std::string& final_path) {
    if (std::rename(path_.c_str(), final_path.c_str()) != 0) {
      const int error_number = errno;
      throw ModelStoreError("cannot move " + path_ + " to " + final_path + ": " +
                            errno_text(error_number));
    }
    committed_ = true;
    remove_on_signal_.release();
  }

 private:
  std::string path_;
  std::FILE* stream_ = nullptr;
  bool committed_ = false;
  RemoveOnSignal remove_on_signal_;  // an interrupted download leaves no partial file
};

// The download's line: bytes so far, total when known, speed.
class DownloadProgress {
 public:
  explicit DownloadProgress(std::string label)
      : line_(/*enabled=*/true), label_(std::move(label)), start_(std::chrono::steady_clock::now()) {}

  bool active() const { return line_.active(); }

  void update(curl_off_t downloaded, curl_off_t total) {
    if (downloaded == 0 && total == 0) return;  // nothing known yet (before the headers)
    if (line_.due()) draw(downloaded, total);
  }

  // Draws the final state and ends the line, so whatever is printed next
  // (including an error) starts on a fresh line.
  void finish(curl_off_t downloaded, curl_off_t total) {
    if (downloaded > 0) draw(downloaded, total);
    line_.finish();
  }

 private:
  void draw(curl_off_t downloaded, curl_off_t total) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double downloaded_mib = static_cast<double>(downloaded) / kBytesPerMiB;
    const double speed_mib = seconds > 0 ? downloaded_mib / seconds : 0.0;
    char text[512];
    if (total > 0) {
      const double total_mib = static_cast<double>(total) / kBytesPerMiB;
      const int percent = static_cast<int>(100 * downloaded / total);
      std::snprintf(text, sizeof(text), "Downloading %s  %.1f/%.1f MiB  %3d%%  %.1f MiB/s",
                    label_.c_str(), downloaded_mib, total_mib, percent, speed_mib);
    } else {
      // No Content-Length: report what has arrived.
      std::snprintf(text, sizeof(text), "Downloading %s  %.1f MiB  %.1f MiB/s", label_.c_str(),
                    downloaded_mib, speed_mib);
    }
    line_.draw(text);
  }

  ProgressLine line_;
  std::string label_;
  std::chrono::steady_clock::time_point start_;
};

// State shared with the libcurl callbacks.
struct Transfer {
  std::FILE* stream = nullptr;
  Sha256 sha256;
  curl_off_t bytes_written = 0;
  std::string write_error;  // why write_callback stopped the transfer, if it did
  DownloadProgress* progress = nullptr;
  curl_off_t last_total = 0;
};

// Exceptions must not cross libcurl's C frames, so failures are recorded and
// reported by returning a short count, which aborts with CURLE_WRITE_ERROR.
size_t write_callback(char* data, size_t size, size_t count, void* user_data) noexcept {
  auto* transfer = static_cast<Transfer*>(user_data);
  const size_t bytes = size * count;
  errno = 0;
  if (std::fwrite(data, 1, bytes, transfer->stream) != bytes) {
    transfer->write_error = "writing the download failed: " + errno_text(errno != 0 ? errno : EIO);
    return 0;
  }
  try {
    // Hashing while the bytes stream past avoids reading 90 MB back from disk.
    transfer->sha256.update(data, bytes);
  } catch (const std::exception& e) {
    transfer->write_error = e.what();
    return 0;
  }
  transfer->bytes_written += static_cast<curl_off_t>(bytes);
  return bytes;
}

int progress_callback(void* user_data, curl_off_t download_total, curl_off_t downloaded,
                      curl_off_t, curl_off_t) noexcept {
  auto* transfer = static_cast<Transfer*>(user_data);
  transfer->last_total = download_total;
  transfer->progress->update(downloaded, download_total);
  return 0;  // keep going
}

struct CurlEasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};

// Streams `url` into `temp` and returns the sha256 of the bytes received.
std::string download_to(const std::string& url, const std::string& file_name, TempFile& temp,
                        bool show_progress) {
  ensure_curl_initialised();
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) throw ModelStoreError("libcurl could not create a transfer handle");

  Transfer transfer;
  transfer.stream = temp.stream();
  std::optional<DownloadProgress> progress;
  if (show_progress) {
    progress.emplace(file_name);
    if (progress->active()) {
      transfer.progress = &*progress;
    } else {
      progress.reset();
    }
  }

  char error_buffer[CURL_ERROR_SIZE] = {};
  CURL* handle = curl.get();
  curl_easy_setopt(handle, CURLOPT_URL, url.c_str());
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &write_callback);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle, CURLOPT_MAXREDIRS, kMaxRedirects);
  curl_easy_setopt(handle, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedLimitBytesPerSecond);
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, kLowSpeedTimeSeconds);
  // No SIGALRM-based timeouts: the library may be used from threaded programs.
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "encodec-cpp");
  if (progress) {
    curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, &progress_callback);
    curl_easy_setopt(handle, CURLOPT_XFERINFODATA, &transfer);
    curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
  }

  const CURLcode code = curl_easy_perform(handle);
  if (progress) progress->finish(transfer.bytes_written, transfer.last_total);

  if (code != CURLE_OK) {
    std::string reason;
    if (code == CURLE_WRITE_ERROR && !transfer.write_error.empty()) {
      reason = transfer.write_error + " (" + temp.path() + ")";
    } else if (code == CURLE_HTTP_RETURNED_ERROR) {
      long status = 0;
      curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
      reason = "HTTP status " + std::to_string(status);
    } else {
      reason = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
    }
    throw ModelStoreError("download of " + url + " failed: " + reason);
  }
  return transfer.sha256.hex_digest();
}

}  // namespace

std::string default_hub_cache_dir() {
  // torch.hub._get_torch_home: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else
  // ~/.cache/torch; checkpoints live in hub/checkpoints below it.
  std::string torch_home;
  if (auto value = non_empty_env("TORCH_HOME")) {
    torch_home = expand_user(*value);
  } else if (auto xdg_cache = non_empty_env("XDG_CACHE_HOME")) {
    torch_home = (fs::path(expand_user(*xdg_cache)) / "torch").string();
  } else {
    torch_home = (fs::path(home_dir()) / ".cache" / "torch").string();
  }
  return (fs::path(torch_home) / "hub" / "checkpoints").string();
}

std::string sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error_number = errno;
    throw ModelStoreError("cannot open " + path + ": " + errno_text(error_number));
  }
  Sha256 sha256;
  std::vector<char> buffer(kReadChunkBytes);
  while (true) {
    const ssize_t count = ::read(fd, buffer.data(), buffer.size());
    if (count < 0) {
      if (errno == EINTR) continue;
      const int error_number = errno;
      ::close(fd);
      throw ModelStoreError("cannot read " + path + ": " + errno_text(error_number));
    }
    if (count == 0) break;
    sha256.update(buffer.data(), static_cast<size_t>(count));
  }
  ::close(fd);
  return sha256.hex_digest();
}

namespace {

constexpr time_t kRacySeconds = 2;

// Where sha256_file_remembered keeps its digests.
std::string remembered_digests_dir() {
  const std::optional<std::string> xdg_cache = non_empty_env("XDG_CACHE_HOME");
  const fs::path cache = xdg_cache ? fs::path(expand_user(*xdg_cache)) : fs::path(home_dir()) / ".cache";
  return (cache / "encodec-cpp" / "sha256").string();
}

// "size mtime_ns ctime_ns": what must be unchanged for a remembered digest to hold.
std::string file_state(const struct stat& info) {
  return std::to_string(info.st_size) + " " +
         std::to_string(info.st_mtim.tv_sec * 1000000000LL + info.st_mtim.tv_nsec) + " " +
         std::to_string(info.st_ctim.tv_sec * 1000000000LL + info.st_ctim.tv_nsec);
}

}  // namespace

std::string sha256_file_remembered(const std::string& path) {
  struct stat info {};
  std::string record_path;
  try {
    if (::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      record_path = (fs::path(remembered_digests_dir()) /
                     (std::to_string(info.st_dev) + "-" + std::to_string(info.st_ino)))
                        .string();
    }
  } catch (const ModelStoreError&) {
    // No home directory: nowhere to remember.
  }
  if (!record_path.empty()) {
    std::ifstream in(record_path);
    std::string state, digest;
    if (std::getline(in, state) && std::getline(in, digest) && state == file_state(info) &&
        digest.size() == 64) {
      return digest;
    }
  }
  const std::string digest = sha256_file(path);
  // As git's racy-index rule: a file changed in the last seconds could change
  // again within the same timestamp tick (ext4 stamps with the coarse clock),
  // so it is not remembered until its ctime is safely in the past.
  if (record_path.empty() || info.st_ctim.tv_sec + kRacySeconds > ::time(nullptr)) return digest;
  struct stat after {};
  // A file that changed while it was hashed is not remembered.
  if (::stat(path.c_str(), &after) != 0 || file_state(after) != file_state(info)) return digest;
  std::error_code error;
  fs::create_directories(fs::path(record_path).parent_path(), error);
  const std::string temp = record_path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temp, std::ios::trunc);
    out << file_state(info) << "\n" << digest << "\n";
    if (!out.good()) {
      out.close();
      fs::remove(temp, error);
      return digest;
    }
  }
  fs::rename(temp, record_path, error);
  if (error) fs::remove(temp, error);
  return digest;
}

std::string checksum_prefix_from_name(const std::string& file_name) {
  // torch.hub's HASH_REGEX, searched in the file name (leftmost match).
  static const std::regex kHashPattern(R"(-([a-f0-9]*)\.)");
  const std::string base_name = fs::path(file_name).filename().string();
  std::smatch match;
  // An empty group ("name-.th") would make torch.hub accept any content; an
  // official name always carries a prefix, so it is refused here.
  if (!std::regex_search(base_name, match, kHashPattern) || match[1].length() == 0) {
    throw ModelStoreError("file name '" + file_name +
                          "' carries no sha256 prefix (expected NAME-<hex>.EXT, e.g. " +
                          kCheckpoint24kHz + ")");
  }
  return match[1].str();
}

ModelStore::ModelStore(ModelStoreOptions options) : options_(std::move(options)) {}

std::string ModelStore::resolve(const std::string& file_name) const {
  check_plain_file_name(file_name);
  const std::string expected_prefix = checksum_prefix_from_name(file_name);

  // An explicit model directory (option, else $ENCODEC_MODEL_DIR) is used
  // as is, like the Python package's `repository` argument: never downloads.
  std::optional<std::string> model_dir = options_.model_dir;
  bool model_dir_from_env = false;
  if (!model_dir || model_dir->empty()) {
    model_dir = non_empty_env("ENCODEC_MODEL_DIR");
    model_dir_from_env = model_dir.has_value();
  }
  if (model_dir) {
    const std::string how_to_download =
        model_dir_from_env ? "unset ENCODEC_MODEL_DIR to download it into the cache"
                           : "drop --model-dir to download it into the cache";
    std::error_code error;
    if (!fs::is_directory(*model_dir, error)) {
      throw ModelStoreError("model directory " + *model_dir +
                            " does not exist or is not a directory (" + how_to_download + ")");
    }
    const std::string path = (fs::path(*model_dir) / file_name).string();
    if (!fs::is_regular_file(path, error)) {
      throw ModelStoreError("checkpoint " + path + " not found in the model directory (" +
                            how_to_download + ")");
    }
    verify_checksum(path, sha256_file_remembered(path), expected_prefix,
                    " (the file in the model directory is damaged or not the official one)");
    return path;
  }

  const std::string cache_dir =
      options_.cache_dir && !options_.cache_dir->empty() ? *options_.cache_dir
                                                         : default_hub_cache_dir();
  const std::string path = (fs::path(cache_dir) / file_name).string();
  std::error_code error;
  const bool cached = fs::exists(path, error);
  if (error) {
    throw ModelStoreError("cannot access " + path + ": " + error.message());
  }
  if (cached) {
    // torch.hub trusts cached files; checking catches truncated or corrupted
    // copies (hashed once, then while unchanged remembered). The user's file is
    // left alone.
    verify_checksum(path, sha256_file_remembered(path), expected_prefix,
                    "; the cached file is damaged: delete it to download it again");
    return path;
  }

  fs::create_directories(cache_dir, error);
  if (error) {
    throw ModelStoreError("cannot create the cache directory " + cache_dir + ": " +
                          error.message());
  }
  const std::string url = options_.root_url + file_name;
  spdlog::info("downloading {} to {}", url, path);
  // A unique temporary name in the same directory: the final rename is atomic
  // and concurrent downloads cannot write over each other.
  TempFile temp(path + ".partial.XXXXXX");
  const std::string actual_sha256 = download_to(url, file_name, temp, options_.show_progress);
  temp.finish_writing();
  verify_checksum(url, actual_sha256, expected_prefix,
                  " (the download was deleted; retry, or check the address)");
  temp.rename_to(path);
  spdlog::info("saved {}", path);
  return path;
}

}  // namespace encodec
