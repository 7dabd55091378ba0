// Matrix product shapes for the parameterized kernel tests, and their test names.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace encodec::testing {

struct GemmShape {
  int64_t rows, columns, depth;
};

// "rows x columns x depth", e.g. "13x64x300": a valid test name suffix.
inline std::string gemm_shape_name(const ::testing::TestParamInfo<GemmShape>& info) {
  return std::to_string(info.param.rows) + "x" + std::to_string(info.param.columns) + "x" +
         std::to_string(info.param.depth);
}

}  // namespace encodec::testing
