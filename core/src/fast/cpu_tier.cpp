#include "fast/cpu_tier.h"

#include <cstdlib>
#include <optional>
#include <stdexcept>

namespace encodec::fast {
namespace {

bool this_cpu_has(const char* feature) {
  // __builtin_cpu_supports needs a literal: the features the tiers use.
  const std::string name = feature;
  if (name == "avx512f") return __builtin_cpu_supports("avx512f");
  if (name == "avx2") return __builtin_cpu_supports("avx2");
  if (name == "fma") return __builtin_cpu_supports("fma");
  return false;
}

std::optional<VectorIsa>& forced_tier() {
  static std::optional<VectorIsa> tier;
  return tier;
}

}  // namespace

const char* vector_isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::kAvx512: return "avx512";
    case VectorIsa::kAvx2: return "avx2";
    case VectorIsa::kPortable: break;
  }
  return "portable";
}

VectorIsa parse_cpu_tier(const std::string& value) {
  for (const VectorIsa isa : {VectorIsa::kAvx512, VectorIsa::kAvx2, VectorIsa::kPortable}) {
    if (value == vector_isa_name(isa)) return isa;
  }
  throw std::invalid_argument("ENCODEC_CPU=" + value +
                              ": unknown CPU tier (expected avx512, avx2 or portable)");
}

std::string cpu_tier_unsupported_reason(VectorIsa isa,
                                        const std::function<bool(const char*)>& has_feature) {
  // The AVX2 tier's kernels include ordered_gemm's fused multiply-adds.
  static const char* const kAvx512Needs[] = {"avx512f", "avx2", "fma"};
  const int count = isa == VectorIsa::kAvx512 ? 3 : isa == VectorIsa::kAvx2 ? 2 : 0;
  const char* const* needed = isa == VectorIsa::kAvx512 ? kAvx512Needs : kAvx512Needs + 1;
  for (int i = 0; i < count; ++i) {
    const char* feature = needed[i];
    if (!has_feature(feature)) {
      return std::string("the ") + vector_isa_name(isa) + " tier needs " + feature +
             ", which this CPU lacks";
    }
  }
  return "";
}

VectorIsa best_cpu_tier() { return cpu_tier_for_environment(nullptr, this_cpu_has); }

VectorIsa cpu_tier_for_environment(const char* value,
                                   const std::function<bool(const char*)>& has_feature) {
  if (!value || !*value) {
    for (const VectorIsa isa : {VectorIsa::kAvx512, VectorIsa::kAvx2}) {
      if (cpu_tier_unsupported_reason(isa, has_feature).empty()) return isa;
    }
    return VectorIsa::kPortable;
  }
  VectorIsa isa;
  try {
    isa = parse_cpu_tier(value);
  } catch (const std::invalid_argument& error) {
    throw std::runtime_error(error.what());
  }
  const std::string problem = cpu_tier_unsupported_reason(isa, has_feature);
  if (!problem.empty()) throw std::runtime_error(std::string("ENCODEC_CPU=") + value + ": " + problem);
  return isa;
}

VectorIsa cpu_tier() {
  std::optional<VectorIsa>& forced = forced_tier();
  if (forced) return *forced;
  static const VectorIsa from_environment =
      cpu_tier_for_environment(std::getenv("ENCODEC_CPU"), this_cpu_has);
  return from_environment;
}

void set_cpu_tier(VectorIsa isa) {
  const std::string problem = cpu_tier_unsupported_reason(isa, this_cpu_has);
  if (!problem.empty()) throw std::invalid_argument(problem);
  forced_tier() = isa;
}

}  // namespace encodec::fast
