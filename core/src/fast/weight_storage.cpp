#include "fast/weight_storage.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>

namespace encodec::fast {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// Small matrices share blocks of this size; a matrix of half of it or more
// gets a block of its own (so a block's tail is never a large waste).
constexpr size_t kBlockBytes = size_t{8} << 20;
constexpr size_t kAlignment = 64;

std::atomic<size_t> mapped_bytes{0};

size_t round_up(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

struct WeightBuffer::Block {
  explicit Block(size_t bytes) : size(round_up(bytes, kHugePage)) {
    // Over-map by one huge page, then unmap the ends, leaving a 2 MB-aligned
    // range (mmap itself only promises 4 kB alignment). Fresh anonymous pages
    // read as zeros and take no memory until written.
    const size_t mapped = size + kHugePage;
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = round_up(start, kHugePage);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t end = start + mapped, aligned_end = aligned + size;
    if (end > aligned_end) munmap(reinterpret_cast<void*>(aligned_end), end - aligned_end);
    base = reinterpret_cast<char*>(aligned);
    madvise(base, size, MADV_HUGEPAGE);  // a hint: the kernel may still use 4 kB pages
    mapped_bytes += size;
  }
  ~Block() {
    munmap(base, size);
    mapped_bytes -= size;
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  char* base = nullptr;
  size_t size = 0;
  size_t used = 0;  // guarded by the pool's mutex
};

namespace {

// The shared block new small buffers are carved from (a bump allocator: a
// block's memory is given back when every buffer in it is gone).
struct Pool {
  std::mutex mutex;
  std::weak_ptr<WeightBuffer::Block> current;
};

Pool& pool() {
  static Pool instance;
  return instance;
}

}  // namespace

WeightBuffer::WeightBuffer(size_t bytes) : size_(bytes) {
  const size_t needed = round_up(bytes == 0 ? 1 : bytes, kAlignment);
  if (needed >= kBlockBytes / 2) {
    block_ = std::make_shared<Block>(needed);
    data_ = block_->base;
    return;
  }
  Pool& shared = pool();
  std::lock_guard<std::mutex> lock(shared.mutex);
  block_ = shared.current.lock();
  if (!block_ || block_->used + needed > block_->size) {
    block_ = std::make_shared<Block>(kBlockBytes);
    shared.current = block_;
  }
  data_ = block_->base + block_->used;
  block_->used += needed;
}

size_t weight_storage_mapped_bytes() { return mapped_bytes; }

}  // namespace encodec::fast
