// The vector-instruction tier the fixed-order kernels run on (the codec's
// ordered_gemm and ELU, the deterministic LM kernels): the best the CPU has, or
// the one the environment variable ENCODEC_CPU=avx512|avx2|portable asks for.
// Every tier computes the same operations in the same order, so the tier only
// changes the speed; forcing a lower one proves on one machine that another
// CPU gets the same bits.
//
// Thread safety: cpu_tier() may be called from any thread; set_cpu_tier is
// for tests (not while kernels run on other threads).
#pragma once

#include <functional>
#include <string>

namespace encodec::fast {

enum class VectorIsa { kPortable, kAvx2, kAvx512 };

// "avx512", "avx2", "portable".
const char* vector_isa_name(VectorIsa isa);

// The value of ENCODEC_CPU -> its tier. Throws std::invalid_argument naming the
// accepted values for anything else.
VectorIsa parse_cpu_tier(const std::string& value);

// "" when a CPU with these features (e.g. "avx512f", "avx2", "fma", as
// __builtin_cpu_supports names them) can run `isa`, else what it lacks.
std::string cpu_tier_unsupported_reason(VectorIsa isa,
                                        const std::function<bool(const char*)>& has_feature);
// The best tier of this CPU.
VectorIsa best_cpu_tier();
// The tier for ENCODEC_CPU's `value` (nullptr or "": the best one of the CPU)
// on a CPU with these features. Throws std::runtime_error for an unknown value
// or a tier the CPU cannot run (the message names the variable).
VectorIsa cpu_tier_for_environment(const char* value,
                                   const std::function<bool(const char*)>& has_feature);

// The tier in use: ENCODEC_CPU when set (read once), else best_cpu_tier().
// Throws std::runtime_error when ENCODEC_CPU names an unknown tier or one this
// CPU cannot run (the message says which and why).
VectorIsa cpu_tier();
// For tests: use `isa` from now on. Throws std::invalid_argument if the CPU lacks it.
void set_cpu_tier(VectorIsa isa);

}  // namespace encodec::fast
