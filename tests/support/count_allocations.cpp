// Replaces malloc and friends (every allocation of the process, LibTorch's and
// protobuf's included, goes through them) with counting versions of glibc's own.
// Linked only into the allocation tests.
#include "count_allocations.h"

#include <malloc.h>

#include <csignal>
#include <cerrno>
#include <cstddef>
#include <cstdlib>

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* pointer, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
void __libc_free(void* pointer);
}

namespace encodec::testing {
std::atomic<bool> allocations_counted{false};
std::atomic<long> allocation_count{0};
}  // namespace encodec::testing

namespace {
// ENCODEC_ALLOCATION_TRAP=N (under gdb): SIGTRAP at the Nth counted allocation
// after the count was last reset (N >= 2: the tests' probe allocation is counted
// before the reset), to see where an unwanted allocation comes from.
long allocation_to_trap() {
  static const long number = [] {
    const char* text = std::getenv("ENCODEC_ALLOCATION_TRAP");
    return text ? std::atol(text) : 0L;
  }();
  return number;
}

inline void count() {
  using encodec::testing::allocation_count;
  if (encodec::testing::allocations_counted.load(std::memory_order_relaxed)) {
    const long number = allocation_count.fetch_add(1, std::memory_order_relaxed) + 1;
    if (number == allocation_to_trap()) {
      std::raise(SIGTRAP);
    }
  }
}
}  // namespace

extern "C" {
void* malloc(size_t size) {
  count();
  return __libc_malloc(size);
}
void* calloc(size_t count_, size_t size) {
  count();
  return __libc_calloc(count_, size);
}
void* realloc(void* pointer, size_t size) {
  count();
  return __libc_realloc(pointer, size);
}
void* memalign(size_t alignment, size_t size) {
  count();
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(size_t alignment, size_t size) {
  count();
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, size_t alignment, size_t size) {
  count();
  void* pointer = __libc_memalign(alignment, size);
  if (!pointer) return ENOMEM;
  *out = pointer;
  return 0;
}
void free(void* pointer) { __libc_free(pointer); }
}

