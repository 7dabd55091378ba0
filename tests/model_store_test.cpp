// The model store: checksum names, sha256, the hub cache location, model
// directories and downloads. Downloads are served from file:// URLs and from a
// small loopback HTTP server, so no network is needed.
#include "encodec/model_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "golden.h"
#include "scoped_env.h"

namespace encodec {
namespace {
using testing::ScopedEnv;

namespace fs = std::filesystem;
using ::encodec::testing::make_temp_dir;
using ::encodec::testing::read_file_bytes;

// Substring check with a readable failure message (the tests link GoogleTest
// without GoogleMock).
::testing::AssertionResult HasSubstr(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// 200000 bytes (i * 7) % 256, whose sha256 (computed with Python's hashlib)
// is 2abed8532d85add1b4bc8f69ffc031c7357ed6b69b47c68a7a1e2f7ae8c3f21f.
std::string served_content() {
  std::string content(200000, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>((i * 7) % 256);
  return content;
}
constexpr const char* kServedName = "foo-2abed853.th";
constexpr const char* kWrongPrefixName = "foo-0123abcd.th";

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Names of the entries of a directory (empty when it does not exist).
std::vector<std::string> directory_entries(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

std::string file_url(const std::string& dir) { return "file://" + fs::absolute(dir).string() + "/"; }

// Each test gets a served directory, a cache directory that does not exist
// yet, and no ENCODEC_MODEL_DIR from the environment running the tests.
class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = make_temp_dir(std::string("model_store_") + info->name());
    served_dir_ = root_ + "/served";
    cache_dir_ = root_ + "/cache/hub/checkpoints";
    fs::create_directories(served_dir_);
  }

  ModelStoreOptions download_options() const {
    ModelStoreOptions options;
    options.cache_dir = cache_dir_;
    options.root_url = file_url(served_dir_);
    options.show_progress = false;
    return options;
  }

  ScopedEnv no_model_dir_env_{"ENCODEC_MODEL_DIR", std::nullopt};
  std::string root_;
  std::string served_dir_;
  std::string cache_dir_;
};

TEST(ChecksumPrefixTest, OfficialNames) {
  EXPECT_EQ(checksum_prefix_from_name(kCheckpoint24kHz), "d7cc33bc");
  EXPECT_EQ(checksum_prefix_from_name(kCheckpoint48kHz), "7e698e3e");
  EXPECT_EQ(checksum_prefix_from_name(kLmCheckpoint24kHz), "1608e3c0");
  EXPECT_EQ(checksum_prefix_from_name(kLmCheckpoint48kHz), "7add9fc3");
}

TEST(ChecksumPrefixTest, FollowsTorchHubRegex) {
  // The leftmost "-<hex>." wins, as with re.search; a non-hex segment is skipped.
  EXPECT_EQ(checksum_prefix_from_name("my-model-abc123.pt"), "abc123");
  EXPECT_EQ(checksum_prefix_from_name("/some/dir/encodec_24khz-d7cc33bc.th"), "d7cc33bc");
}

TEST(ChecksumPrefixTest, NameWithoutPrefixThrows) {
  EXPECT_THROW(checksum_prefix_from_name("encodec_24khz.th"), ModelStoreError);
  EXPECT_THROW(checksum_prefix_from_name("encodec_24khz-D7CC33BC.th"), ModelStoreError);
  EXPECT_THROW(checksum_prefix_from_name("encodec_24khz-d7cc33bc"), ModelStoreError);
  // An empty prefix would accept any content, so it is refused too.
  EXPECT_THROW(checksum_prefix_from_name("encodec-.th"), ModelStoreError);
  try {
    checksum_prefix_from_name("plain.th");
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), "plain.th"));
  }
}

TEST(Sha256FileTest, KnownDigests) {
  const std::string dir = make_temp_dir("model_store_sha256");
  write_file(dir + "/abc", "abc");
  write_file(dir + "/empty", "");
  EXPECT_EQ(sha256_file(dir + "/abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_file(dir + "/empty"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256FileTest, FileLargerThanOneReadChunk) {
  // 3 MiB + 17 bytes of i % 251 spans four 1 MiB reads; digest from hashlib.
  const std::string dir = make_temp_dir("model_store_sha256_large");
  std::string content(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i % 251);
  write_file(dir + "/large", content);
  EXPECT_EQ(sha256_file(dir + "/large"),
            "fe2aaf82bfa2ffec207a0c6fa7ce7d4af268d67e2672fdaec675f3f9b65d0854");
}

// The digest is remembered (under XDG_CACHE_HOME) for a file unchanged for
// more than 2 s and reused while its size, mtime and ctime stay: a record whose
// digest is replaced is believed, which shows that the file is not hashed again.
// A file written just now is hashed every time (never remembered).
TEST(Sha256FileTest, RememberedDigestIsReusedWhileTheFileIsUnchanged) {
  const std::string old_file = "/etc/os-release";
  struct stat info {};
  if (::stat(old_file.c_str(), &info) != 0 || info.st_ctime + 5 > ::time(nullptr)) {
    GTEST_SKIP() << old_file << " is missing or was changed in the last seconds";
  }
  const std::string cache = make_temp_dir("model_store_remembered");
  const char* saved = std::getenv("XDG_CACHE_HOME");
  const std::string saved_value = saved ? saved : "";
  ::setenv("XDG_CACHE_HOME", cache.c_str(), 1);
  const std::string digest = sha256_file(old_file);
  EXPECT_EQ(sha256_file_remembered(old_file), digest);
  const std::string record = cache + "/encodec-cpp/sha256/" + std::to_string(info.st_dev) + "-" +
                             std::to_string(info.st_ino);
  std::ifstream in(record);
  std::string state, remembered;
  ASSERT_TRUE(std::getline(in, state) && std::getline(in, remembered)) << "no record at " << record;
  EXPECT_EQ(remembered, digest);
  const std::string fake(64, 'a');
  write_file(record, state + "\n" + fake + "\n");
  EXPECT_EQ(sha256_file_remembered(old_file), fake);
  // The record of another state of the file (size, times) is not believed.
  write_file(record, "1 2 3\n" + fake + "\n");
  EXPECT_EQ(sha256_file_remembered(old_file), digest);

  const std::string fresh = cache + "/fresh";
  write_file(fresh, "abc");
  EXPECT_EQ(sha256_file_remembered(fresh),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  struct stat fresh_info {};
  ASSERT_EQ(::stat(fresh.c_str(), &fresh_info), 0);
  EXPECT_FALSE(std::filesystem::exists(cache + "/encodec-cpp/sha256/" + std::to_string(fresh_info.st_dev) +
                                       "-" + std::to_string(fresh_info.st_ino)));
  if (saved) {
    ::setenv("XDG_CACHE_HOME", saved_value.c_str(), 1);
  } else {
    ::unsetenv("XDG_CACHE_HOME");
  }
}

TEST(Sha256FileTest, MissingFileThrowsNamingIt) {
  const std::string path = make_temp_dir("model_store_sha256_missing") + "/absent";
  try {
    sha256_file(path);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), path));
  }
}

TEST(DefaultHubCacheDirTest, TorchHomeWins) {
  ScopedEnv torch_home("TORCH_HOME", "/opt/torch-home");
  ScopedEnv xdg("XDG_CACHE_HOME", "/opt/xdg");
  EXPECT_EQ(default_hub_cache_dir(), "/opt/torch-home/hub/checkpoints");
}

TEST(DefaultHubCacheDirTest, XdgCacheHomeWhenNoTorchHome) {
  ScopedEnv torch_home("TORCH_HOME", std::nullopt);
  ScopedEnv xdg("XDG_CACHE_HOME", "/opt/xdg");
  EXPECT_EQ(default_hub_cache_dir(), "/opt/xdg/torch/hub/checkpoints");
}

TEST(DefaultHubCacheDirTest, HomeCacheByDefault) {
  ScopedEnv torch_home("TORCH_HOME", std::nullopt);
  ScopedEnv xdg("XDG_CACHE_HOME", std::nullopt);
  ScopedEnv home("HOME", "/home/someone");
  EXPECT_EQ(default_hub_cache_dir(), "/home/someone/.cache/torch/hub/checkpoints");
}

TEST(DefaultHubCacheDirTest, TildeExpandsLikeExpanduser) {
  ScopedEnv torch_home("TORCH_HOME", "~/th");
  ScopedEnv home("HOME", "/home/someone");
  EXPECT_EQ(default_hub_cache_dir(), "/home/someone/th/hub/checkpoints");
}

TEST_F(ModelStoreTest, DownloadsIntoEmptyCache) {
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStore store(download_options());

  const std::string path = store.resolve(kServedName);

  EXPECT_EQ(path, cache_dir_ + "/" + kServedName);
  EXPECT_EQ(read_file_bytes(path), served_content());
  // Only the checkpoint: the temporary download was renamed, not copied.
  EXPECT_EQ(directory_entries(cache_dir_), std::vector<std::string>{kServedName});
}

TEST_F(ModelStoreTest, DownloadGetsModeFromUmask) {
  // Not the 0600 of the temporary file: what any new file would get.
  write_file(served_dir_ + "/" + kServedName, served_content());
  const mode_t saved_umask = umask(027);
  std::string path;
  try {
    path = ModelStore(download_options()).resolve(kServedName);
  } catch (...) {
    umask(saved_umask);
    throw;
  }
  umask(saved_umask);

  EXPECT_EQ(fs::status(path).permissions(),
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
}

TEST_F(ModelStoreTest, SecondResolveUsesCache) {
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStore store(download_options());
  const std::string first = store.resolve(kServedName);
  fs::remove(served_dir_ + "/" + kServedName);

  const std::string second = store.resolve(kServedName);

  EXPECT_EQ(second, first);
  EXPECT_EQ(read_file_bytes(second), served_content());
}

TEST_F(ModelStoreTest, ChecksumMismatchOnDownloadLeavesNothing) {
  write_file(served_dir_ + "/" + kWrongPrefixName, served_content());
  ModelStore store(download_options());

  try {
    store.resolve(kWrongPrefixName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), "checksum mismatch"));
    EXPECT_TRUE(HasSubstr(e.what(), "expected 0123abcd, got 2abed853"));
  }
  EXPECT_EQ(directory_entries(cache_dir_), std::vector<std::string>{});
}

TEST_F(ModelStoreTest, MissingRemoteFileThrowsNamingUrlAndLeavesNothing) {
  ModelStore store(download_options());
  try {
    store.resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), file_url(served_dir_) + kServedName));
  }
  EXPECT_EQ(directory_entries(cache_dir_), std::vector<std::string>{});
}

TEST_F(ModelStoreTest, CorruptedCachedFileIsReportedAndKept) {
  fs::create_directories(cache_dir_);
  const std::string cached = cache_dir_ + "/" + kServedName;
  write_file(cached, "truncated");
  // The good file is available remotely: it must still not be fetched over
  // the user's file.
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStore store(download_options());

  try {
    store.resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), "checksum mismatch for " + cached));
    EXPECT_TRUE(HasSubstr(e.what(), "delete it"));
  }
  EXPECT_EQ(read_file_bytes(cached), "truncated");
}

TEST_F(ModelStoreTest, ModelDirWithGoodFile) {
  const std::string model_dir = root_ + "/models";
  fs::create_directories(model_dir);
  write_file(model_dir + "/" + kServedName, served_content());
  ModelStoreOptions options = download_options();
  options.model_dir = model_dir;
  // Served too, so a wrongful download would succeed and be noticed below.
  write_file(served_dir_ + "/" + kServedName, served_content());

  EXPECT_EQ(ModelStore(options).resolve(kServedName), model_dir + "/" + kServedName);
  EXPECT_FALSE(fs::exists(cache_dir_));
}

TEST_F(ModelStoreTest, ModelDirWithMissingFileNamesPathAndNeverDownloads) {
  const std::string model_dir = root_ + "/models";
  fs::create_directories(model_dir);
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStoreOptions options = download_options();
  options.model_dir = model_dir;

  try {
    ModelStore(options).resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), model_dir + "/" + kServedName));
    EXPECT_TRUE(HasSubstr(e.what(), "--model-dir"));
  }
  EXPECT_FALSE(fs::exists(cache_dir_));
}

TEST_F(ModelStoreTest, ModelDirThatDoesNotExist) {
  ModelStoreOptions options = download_options();
  options.model_dir = root_ + "/no-such-dir";
  try {
    ModelStore(options).resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), root_ + "/no-such-dir"));
  }
}

TEST_F(ModelStoreTest, ModelDirWithCorruptedFile) {
  const std::string model_dir = root_ + "/models";
  fs::create_directories(model_dir);
  write_file(model_dir + "/" + kWrongPrefixName, served_content());
  ModelStoreOptions options = download_options();
  options.model_dir = model_dir;

  try {
    ModelStore(options).resolve(kWrongPrefixName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), "checksum mismatch for " + model_dir + "/" +
                                    kWrongPrefixName + ": expected 0123abcd, got 2abed853"));
  }
  // A file in the model directory belongs to the user: reported, never deleted.
  EXPECT_EQ(read_file_bytes(model_dir + "/" + kWrongPrefixName), served_content());
}

TEST_F(ModelStoreTest, EnvModelDirUsedWhenOptionUnset) {
  const std::string model_dir = root_ + "/env-models";
  fs::create_directories(model_dir);
  write_file(model_dir + "/" + kServedName, served_content());
  ScopedEnv env("ENCODEC_MODEL_DIR", model_dir);

  EXPECT_EQ(ModelStore(download_options()).resolve(kServedName), model_dir + "/" + kServedName);
  EXPECT_FALSE(fs::exists(cache_dir_));
}

TEST_F(ModelStoreTest, EnvModelDirMissingFileSuggestsUnsettingIt) {
  const std::string model_dir = root_ + "/env-models";
  fs::create_directories(model_dir);
  ScopedEnv env("ENCODEC_MODEL_DIR", model_dir);
  try {
    ModelStore(download_options()).resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), model_dir + "/" + kServedName));
    EXPECT_TRUE(HasSubstr(e.what(), "ENCODEC_MODEL_DIR"));
  }
}

TEST_F(ModelStoreTest, ExplicitModelDirBeatsEnv) {
  const std::string model_dir = root_ + "/models";
  fs::create_directories(model_dir);
  write_file(model_dir + "/" + kServedName, served_content());
  ScopedEnv env("ENCODEC_MODEL_DIR", root_ + "/no-such-dir");
  ModelStoreOptions options = download_options();
  options.model_dir = model_dir;

  EXPECT_EQ(ModelStore(options).resolve(kServedName), model_dir + "/" + kServedName);
}

TEST_F(ModelStoreTest, DefaultCacheFollowsTorchHome) {
  write_file(served_dir_ + "/" + kServedName, served_content());
  ScopedEnv torch_home("TORCH_HOME", root_ + "/torch-home");
  ModelStoreOptions options = download_options();
  options.cache_dir.reset();

  const std::string path = ModelStore(options).resolve(kServedName);

  EXPECT_EQ(path, root_ + "/torch-home/hub/checkpoints/" + kServedName);
  EXPECT_EQ(read_file_bytes(path), served_content());
}

TEST_F(ModelStoreTest, RejectsNamesThatLeaveTheDirectory) {
  ModelStore store(download_options());
  EXPECT_THROW(store.resolve("../foo-2abed853.th"), ModelStoreError);
  EXPECT_THROW(store.resolve("sub/foo-2abed853.th"), ModelStoreError);
  EXPECT_THROW(store.resolve("foo.th"), ModelStoreError);
  EXPECT_FALSE(fs::exists(cache_dir_));
}

TEST_F(ModelStoreTest, NoProgressOutputWhenStderrIsNotATerminal) {
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStoreOptions options = download_options();
  options.show_progress = true;

  ::testing::internal::CaptureStderr();  // a file, not a terminal
  ModelStore(options).resolve(kServedName);
  const std::string captured = ::testing::internal::GetCapturedStderr();

  EXPECT_FALSE(HasSubstr(captured, "Downloading"));
}

TEST_F(ModelStoreTest, ProgressBarOnTerminal) {
  write_file(served_dir_ + "/" + kServedName, served_content());
  ModelStoreOptions options = download_options();
  options.show_progress = true;

  // Put a pseudo-terminal behind stderr for the duration of the download.
  int master = -1;
  int slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  fflush(stderr);
  const int saved_stderr = dup(STDERR_FILENO);
  dup2(slave, STDERR_FILENO);
  std::string error;
  try {
    ModelStore(options).resolve(kServedName);
  } catch (const std::exception& e) {
    error = e.what();
  }
  fflush(stderr);
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  close(slave);

  std::string output;
  char buffer[4096];
  pollfd poll_master{master, POLLIN, 0};
  while (poll(&poll_master, 1, 200) > 0) {
    const ssize_t count = read(master, buffer, sizeof buffer);
    if (count <= 0) break;
    output.append(buffer, static_cast<size_t>(count));
  }
  close(master);

  ASSERT_EQ(error, "");
  EXPECT_TRUE(HasSubstr(output, std::string("Downloading ") + kServedName));
  // 200000 bytes is 0.19 MiB; the final redraw shows the whole of it.
  EXPECT_TRUE(HasSubstr(output, "0.2/0.2 MiB  100%"));
  // The terminal maps "\n" to "\r\n".
  ASSERT_GE(output.size(), 2u);
  EXPECT_EQ(output.substr(output.size() - 2), "\r\n");
}

// A loopback HTTP/1.1 server answering each request path with a canned raw
// response (unknown paths get 404), one connection at a time, for what
// file:// cannot show: status codes, redirects and cut-off transfers.
class LoopbackHttpServer {
 public:
  using Routes = std::map<std::string, std::string>;  // request path -> raw response

  explicit LoopbackHttpServer(Routes responses)
      : responses_(std::move(responses)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;  // any free port
    socklen_t length = sizeof address;
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(listen_fd_, 8) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("cannot start the loopback HTTP server");
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~LoopbackHttpServer() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  static std::string ok(const std::string& body) {
    return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd poll_listen{listen_fd_, POLLIN, 0};
      if (poll(&poll_listen, 1, 50) <= 0) continue;
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      answer(client);
      close(client);
    }
  }

  void answer(int client) {
    std::string request;
    char buffer[1024];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t count = recv(client, buffer, sizeof buffer, 0);
      if (count <= 0) return;
      request.append(buffer, static_cast<size_t>(count));
    }
    // "GET /path HTTP/1.1"
    const size_t path_start = request.find(' ') + 1;
    const std::string path = request.substr(path_start, request.find(' ', path_start) - path_start);
    const auto found = responses_.find(path);
    const std::string response =
        found != responses_.end()
            ? found->second
            : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    size_t sent = 0;
    while (sent < response.size()) {
      const ssize_t count =
          send(client, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (count <= 0) return;
      sent += static_cast<size_t>(count);
    }
  }

  Routes responses_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ModelStoreHttpTest : public ModelStoreTest {
 protected:
  // A proxy configured in the environment must not intercept loopback requests.
  ScopedEnv no_http_proxy_{"http_proxy", std::nullopt};
  ScopedEnv no_all_proxy_{"ALL_PROXY", std::nullopt};
  ScopedEnv no_all_proxy_lower_{"all_proxy", std::nullopt};
};

TEST_F(ModelStoreHttpTest, DownloadsOverHttp) {
  LoopbackHttpServer server(LoopbackHttpServer::Routes{{std::string("/v0/") + kServedName,
                              LoopbackHttpServer::ok(served_content())}});
  ModelStoreOptions options = download_options();
  options.root_url = server.base_url() + "/v0/";

  const std::string path = ModelStore(options).resolve(kServedName);

  EXPECT_EQ(read_file_bytes(path), served_content());
}

TEST_F(ModelStoreHttpTest, FollowsRedirects) {
  LoopbackHttpServer server(LoopbackHttpServer::Routes{
      {std::string("/v0/") + kServedName,
        std::string("HTTP/1.1 302 Found\r\nLocation: /real/") + kServedName +
            "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
       {std::string("/real/") + kServedName, LoopbackHttpServer::ok(served_content())}});
  ModelStoreOptions options = download_options();
  options.root_url = server.base_url() + "/v0/";

  const std::string path = ModelStore(options).resolve(kServedName);

  EXPECT_EQ(read_file_bytes(path), served_content());
}

TEST_F(ModelStoreHttpTest, HttpErrorStatusThrowsAndLeavesNothing) {
  LoopbackHttpServer server(LoopbackHttpServer::Routes{});
  ModelStoreOptions options = download_options();
  options.root_url = server.base_url() + "/v0/";

  try {
    ModelStore(options).resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), options.root_url + kServedName));
    EXPECT_TRUE(HasSubstr(e.what(), "HTTP status 404"));
  }
  EXPECT_EQ(directory_entries(cache_dir_), std::vector<std::string>{});
}

TEST_F(ModelStoreHttpTest, CutOffTransferThrowsAndLeavesNothing) {
  // Announces the whole file, sends a tenth of it, then hangs up.
  const std::string content = served_content();
  LoopbackHttpServer server(LoopbackHttpServer::Routes{
      {std::string("/v0/") + kServedName,
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(content.size()) +
            "\r\nConnection: close\r\n\r\n" + content.substr(0, content.size() / 10)}});
  ModelStoreOptions options = download_options();
  options.root_url = server.base_url() + "/v0/";

  try {
    ModelStore(options).resolve(kServedName);
    FAIL() << "expected ModelStoreError";
  } catch (const ModelStoreError& e) {
    EXPECT_TRUE(HasSubstr(e.what(), options.root_url + kServedName));
  }
  EXPECT_EQ(directory_entries(cache_dir_), std::vector<std::string>{});
}

}  // namespace
}  // namespace encodec
