#include "golden.h"

#include <sndfile.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <cstring>
#include <strings.h>
#include <stdexcept>

namespace encodec::testing {
namespace fs = std::filesystem;

namespace {
std::string configured_golden_dir() {
  if (const char* env = std::getenv("ENCODEC_GOLDEN_DIR"); env && *env) return env;
  return ENCODEC_GOLDEN_DIR_DEFAULT;
}
}  // namespace

std::optional<std::string> golden_dir() {
  const std::string dir = configured_golden_dir();
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "manifest.json", ec)) return std::nullopt;
  return fs::weakly_canonical(dir).string();
}

std::string golden_missing_message() {
  return "golden data not found: no manifest.json in '" + configured_golden_dir() +
         "' (set ENCODEC_GOLDEN_DIR to the reference golden directory to run this test)";
}

bool reference_kernels_in_use() {
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* threads = std::getenv("OMP_NUM_THREADS");
  return __builtin_cpu_supports("avx512f") && coretype && strcasecmp(coretype, "SkylakeX") == 0 && threads &&
         std::string(threads) == "1";
}

std::string reference_kernels_missing_message() {
  return std::string("the golden bytes need the BLAS kernels they were made with (OpenBLAS SkylakeX, one "
                     "thread: OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1, as ctest sets them on CPUs with "
                     "AVX-512); ") +
         (__builtin_cpu_supports("avx512f") ? "they are not set in this environment"
                                            : "this CPU has no AVX-512, which they need");
}

const nlohmann::json& golden_manifest() {
  static const nlohmann::json manifest = [] {
    std::ifstream in(golden_path("manifest.json"));
    if (!in) throw std::runtime_error("cannot open golden manifest.json");
    return nlohmann::json::parse(in);
  }();
  return manifest;
}

std::string golden_path(const std::string& relative) {
  auto dir = golden_dir();
  if (!dir) throw std::runtime_error(golden_missing_message());
  return (fs::path(*dir) / relative).string();
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

torch::Tensor load_npy(const std::string& path) {
  const std::string bytes = read_file_bytes(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    throw std::runtime_error(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else {
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    header_start = 12;
  }
  const std::string header = bytes.substr(header_start, header_len);
  std::smatch match;
  if (!std::regex_search(header, match, std::regex("'descr':\\s*'([<>|])([a-z])(\\d+)'")))
    throw std::runtime_error(path + ": no descr in header");
  const std::string kind = match[2].str();
  const int width = std::stoi(match[3].str());
  if (match[1].str() == ">") throw std::runtime_error(path + ": big-endian data unsupported");
  if (header.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": Fortran order unsupported");
  if (!std::regex_search(header, match, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    throw std::runtime_error(path + ": no shape in header");
  std::vector<int64_t> shape;
  std::stringstream dims(match[1].str());
  for (std::string dim; std::getline(dims, dim, ',');) {
    if (dim.find_first_not_of(" ") != std::string::npos) shape.push_back(std::stoll(dim));
  }
  torch::Dtype dtype;
  if (kind == "f" && width == 4) dtype = torch::kFloat32;
  else if (kind == "f" && width == 8) dtype = torch::kFloat64;
  else if (kind == "i" && width == 2) dtype = torch::kInt16;
  else if (kind == "i" && width == 4) dtype = torch::kInt32;
  else if (kind == "i" && width == 8) dtype = torch::kInt64;
  else throw std::runtime_error(path + ": unsupported dtype " + kind + std::to_string(width));
  torch::Tensor out = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  const size_t data_start = header_start + header_len;
  const size_t nbytes = out.numel() * out.element_size();
  if (bytes.size() < data_start + nbytes) throw std::runtime_error(path + ": truncated data");
  std::memcpy(out.data_ptr(), bytes.data() + data_start, nbytes);
  return out;
}

std::string describe_byte_difference(const std::string& actual, const std::string& expected) {
  size_t differing = 0;
  size_t first = std::string::npos;
  const size_t common = std::min(actual.size(), expected.size());
  for (size_t i = 0; i < common; ++i) {
    if (actual[i] != expected[i]) {
      ++differing;
      if (first == std::string::npos) first = i;
    }
  }
  std::ostringstream out;
  out << actual.size() << " bytes vs " << expected.size() << " expected; " << differing
      << " of the first " << common << " bytes differ";
  if (first != std::string::npos) out << ", first at offset " << first;
  return out.str();
}

std::string make_temp_dir(const std::string& test_name) {
  // ctest runs tests in parallel processes: the running test's own name keeps
  // two tests of one fixture from clearing each other's folder.
  std::string unique = test_name;
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    unique += std::string("__") + info->test_suite_name() + "." + info->name();
    for (char& c : unique) {
      if (c == '/') c = '_';
    }
  }
  fs::path dir = fs::path(ENCODEC_BINARY_DIR) / "test_tmp" / unique;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_pcm16(const std::string& path, const torch::Tensor& samples, int sample_rate_hz) {
  SF_INFO info{};
  info.samplerate = sample_rate_hz;
  info.channels = static_cast<int>(samples.size(0));
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr) << path << ": " << sf_strerror(nullptr);
  const torch::Tensor interleaved = samples.to(torch::kFloat32).t().contiguous();
  EXPECT_EQ(sf_writef_float(file, interleaved.data_ptr<float>(), samples.size(1)), samples.size(1));
  sf_close(file);
}

std::vector<float> random_normal_values(size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace encodec::testing
