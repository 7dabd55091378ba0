// The arithmetic the fast kernels run in: fp32 (the default, exact: streams
// equal files bit for bit, and within float rounding of the reference) or the
// opt-in bf16 (weights and layer inputs rounded to bfloat16, sums in fp32, on
// CPUs with AVX512-BF16): faster, a little less precise, and still one fixed
// summation order, so bf16 streams equal bf16 files bit for bit too.
//
// Thread safety: the functions keep no state.
#pragma once

#include <string>

namespace encodec {

enum class Precision { kFp32, kBf16 };

// "fp32" / "bf16".
const char* precision_name(Precision precision);

// Why this machine cannot run Precision::kBf16, or "" when it can. bf16 is
// refused, never emulated slowly: it needs the CPU's AVX512-BF16 instructions.
// Setting ENCODEC_DISABLE_BF16 (to anything but "" or "0") makes it unavailable
// on any CPU, so that the refusal can be tested.
std::string bf16_unavailable_reason();

}  // namespace encodec
