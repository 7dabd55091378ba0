// Counts every allocation of the process while `allocations_counted` is set
// (the allocation tests link support/count_allocations.cpp, which replaces malloc).
#pragma once

#include <atomic>

namespace encodec::testing {

extern std::atomic<bool> allocations_counted;
extern std::atomic<long> allocation_count;

}  // namespace encodec::testing
