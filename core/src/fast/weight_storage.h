// Memory for the packed weight matrices of the fast kernels, carved from
// 2 MB-aligned blocks that the kernel is asked to back with huge pages
// (madvise(MADV_HUGEPAGE); without transparent huge pages it is only a hint).
//
// Why: one stream's frame reads every weight of the model once (59 MB in fp32,
// 30 MB in bf16), more than the L3 cache holds, so a single stream runs at the
// speed memory delivers. With 4 kB pages a sweep of 60 MB reads about 16 GB/s
// on one core here; with 2 MB pages, about 26 GB/s (32 MB: 19 against 37; fewer
// TLB misses, and the hardware prefetchers are not stopped at every 4 kB boundary). Packing many
// matrices into shared blocks keeps the small ones from wasting a 2 MB page each.
//
// Thread safety: WeightBuffers can be created and destroyed from any thread.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

namespace encodec::fast {

class WeightBuffer {
 public:
  WeightBuffer() = default;
  // `bytes` of zeros, 64-byte aligned. Throws std::bad_alloc.
  explicit WeightBuffer(size_t bytes);
  // A moved-from buffer is empty (no data, size 0).
  WeightBuffer(WeightBuffer&& other) noexcept
      : block_(std::move(other.block_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  WeightBuffer& operator=(WeightBuffer&& other) noexcept {
    block_ = std::move(other.block_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  void* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

  struct Block;  // a 2 MB-aligned mapping, freed when its last buffer is

 private:
  std::shared_ptr<Block> block_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Bytes of the blocks mapped now (for tests).
size_t weight_storage_mapped_bytes();

}  // namespace encodec::fast
