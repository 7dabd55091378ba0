#include "encodec/precision.h"

#include <cstdlib>
#include <cstring>

#include "fast/ordered_gemm_bf16.h"

namespace encodec {

const char* precision_name(Precision precision) {
  return precision == Precision::kBf16 ? "bf16" : "fp32";
}

std::string bf16_unavailable_reason() {
  // Read on every call (not cached) so that tests can set and clear it.
  const char* disabled = std::getenv("ENCODEC_DISABLE_BF16");
  if (disabled && *disabled && std::strcmp(disabled, "0") != 0) {
    return "bf16 precision needs AVX512-BF16, which ENCODEC_DISABLE_BF16=" + std::string(disabled) +
           " hides";
  }
  if (!fast::cpu_has_avx512_bf16()) {
    return "bf16 precision needs a CPU with AVX512-BF16 (this CPU has none); use fp32";
  }
  return "";
}

}  // namespace encodec
