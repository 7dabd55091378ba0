// Access to the reference golden data in ../shared/golden (see its README.md):
// its location, the manifest, and .npy arrays. Golden suites call
// ENCODEC_REQUIRE_GOLDEN() first so that they skip, with a message saying where
// the data was looked for, when it is absent.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace encodec::testing {

// $ENCODEC_GOLDEN_DIR, else the directory configured at build time
// (<source>/../shared/golden); nullopt when it holds no manifest.json.
std::optional<std::string> golden_dir();

// Text for the skip message: where the golden data was looked for.
std::string golden_missing_message();

// manifest.json, parsed. Requires golden_dir().
const nlohmann::json& golden_manifest();

// Absolute path of a file named relative to the golden directory.
std::string golden_path(const std::string& relative);

// Reads a .npy file (version 1.x, little-endian, C order; int16, int32, int64,
// float32 or float64) into a tensor of the matching dtype and shape.
torch::Tensor load_npy(const std::string& path);

// The whole contents of a file, as bytes.
std::string read_file_bytes(const std::string& path);

// How `actual` differs from `expected`, for failure messages: sizes, number of
// differing bytes in the common prefix and the first differing offset.
std::string describe_byte_difference(const std::string& actual, const std::string& expected);

// A fresh empty directory under the build tree for a test's output files.
std::string make_temp_dir(const std::string& test_name);

// Writes float [channels, frames] as a 16-bit PCM WAV with libsndfile's own
// conversion (test inputs).
void write_pcm16(const std::string& path, const torch::Tensor& samples, int sample_rate_hz);

// `count` draws from N(0, 1), the same for the same seed (kernel tests' inputs).
std::vector<float> random_normal_values(size_t count, unsigned seed);

// Whether this process computes with the BLAS kernels the golden data was made
// with: OpenBLAS's SkylakeX kernels on one thread (tests/CMakeLists.txt sets
// OPENBLAS_CORETYPE=SkylakeX and OMP_NUM_THREADS=1 on CPUs with AVX-512, which
// those kernels need). Other kernels round float sums otherwise, so codes on
// near-ties (the last codebooks at 24 kbps) and the LM's probabilities, hence
// LM-coded bytes, can differ from the reference's, as the Python package's
// own do under other kernels.
bool reference_kernels_in_use();
std::string reference_kernels_missing_message();

// Names of the entries of `dir`, sorted (failed writes must leave no file behind).
std::vector<std::string> files_in(const std::string& dir);

}  // namespace encodec::testing

#define ENCODEC_REQUIRE_GOLDEN()                                            \
  do {                                                                      \
    if (!::encodec::testing::golden_dir()) {                                \
      GTEST_SKIP() << ::encodec::testing::golden_missing_message();         \
    }                                                                       \
  } while (0)

// Byte-exactness with the golden files where it depends on the reference's BLAS
// kernels: skipped, saying why, on a machine that cannot run them.
#define ENCODEC_REQUIRE_REFERENCE_KERNELS()                                   \
  do {                                                                        \
    if (!::encodec::testing::reference_kernels_in_use()) {                    \
      GTEST_SKIP() << ::encodec::testing::reference_kernels_missing_message(); \
    }                                                                         \
  } while (0)
