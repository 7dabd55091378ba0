// WeightBuffer (core/src/fast/weight_storage.h): zeroed, aligned, disjoint
// memory for packed weights, small buffers sharing 2 MB-aligned blocks, blocks
// returned with their last buffer, and the blocks offered to huge pages.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fast/weight_storage.h"

namespace {

using encodec::fast::WeightBuffer;
using encodec::fast::weight_storage_mapped_bytes;

constexpr size_t kMiB = size_t{1} << 20;

uintptr_t address(const WeightBuffer& buffer) { return reinterpret_cast<uintptr_t>(buffer.data()); }

bool all_zero(const WeightBuffer& buffer) {
  const auto* bytes = buffer.as<const unsigned char>();
  for (size_t i = 0; i < buffer.size(); ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

TEST(WeightStorageTest, BuffersAreZeroedAlignedAndDisjoint) {
  std::vector<WeightBuffer> buffers;
  for (size_t bytes : {size_t{1}, size_t{100}, size_t{4096}, 3 * kMiB / 2, 5 * kMiB, size_t{63}}) {
    buffers.emplace_back(bytes);
    const WeightBuffer& buffer = buffers.back();
    EXPECT_EQ(buffer.size(), bytes);
    EXPECT_EQ(address(buffer) % 64, 0u) << bytes << " bytes";
    EXPECT_TRUE(all_zero(buffer)) << bytes << " bytes";
    std::fill_n(buffer.as<unsigned char>(), bytes, 0xff);  // must not reach any other buffer
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    for (size_t j = i + 1; j < buffers.size(); ++j) {
      const bool disjoint = address(buffers[i]) + buffers[i].size() <= address(buffers[j]) ||
                            address(buffers[j]) + buffers[j].size() <= address(buffers[i]);
      EXPECT_TRUE(disjoint) << "buffers " << i << " and " << j;
    }
  }
}

TEST(WeightStorageTest, SmallBuffersShareBlocks) {
  const size_t before = weight_storage_mapped_bytes();
  std::vector<WeightBuffer> buffers;
  for (int i = 0; i < 200; ++i) buffers.emplace_back(10000);
  // 2 MB of buffers: one new 8 MB block at most, not a block (or a page) each.
  EXPECT_LE(weight_storage_mapped_bytes() - before, 8 * kMiB);
  for (size_t i = 1; i < buffers.size(); ++i) {
    EXPECT_EQ(address(buffers[i]), address(buffers[i - 1]) + 10048) << "packed one after another";
  }
}

TEST(WeightStorageTest, LargeBuffersGetAlignedBlocksOfTheirOwn) {
  const size_t before = weight_storage_mapped_bytes();
  {
    const WeightBuffer large(5 * kMiB);
    EXPECT_EQ(address(large) % (2 * kMiB), 0u);
    EXPECT_EQ(weight_storage_mapped_bytes() - before, 6 * kMiB);  // whole huge pages
  }
  EXPECT_EQ(weight_storage_mapped_bytes(), before);
}

TEST(WeightStorageTest, BlocksAreReturnedWithTheirLastBuffer) {
  const size_t before = weight_storage_mapped_bytes();
  {
    std::vector<WeightBuffer> buffers;
    for (int i = 0; i < 24; ++i) buffers.emplace_back(kMiB);  // three 8 MB blocks' worth
    EXPECT_GE(weight_storage_mapped_bytes() - before, 16 * kMiB);
    WeightBuffer moved = std::move(buffers.front());
    EXPECT_EQ(buffers.front().data(), nullptr);
    EXPECT_EQ(buffers.front().size(), 0u);
    buffers.clear();
    EXPECT_TRUE(all_zero(moved));  // still mapped: a buffer keeps its block
  }
  EXPECT_EQ(weight_storage_mapped_bytes(), before);
}

// The mapping holding `pointer`, as /proc/self/smaps describes it.
std::string smaps_entry(const void* pointer) {
  std::ifstream smaps("/proc/self/smaps");
  const auto target = reinterpret_cast<uintptr_t>(pointer);
  std::string line, entry;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (line.find(':') > line.find(' ') && (header >> std::hex >> start >> dash >> end) && dash == '-') {
      if (inside) return entry;
      inside = target >= start && target < end;
      entry.clear();
    }
    if (inside) entry += line + "\n";
  }
  return entry;
}

TEST(WeightStorageTest, BlocksAreOfferedToHugePages) {
  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(mode_file, mode);
  if (mode.empty() || mode.find("[never]") != std::string::npos) {
    GTEST_SKIP() << "transparent huge pages are off on this machine (" << mode << ")";
  }
  const WeightBuffer buffer(4 * kMiB);
  const std::string entry = smaps_entry(buffer.data());
  ASSERT_FALSE(entry.empty()) << "no mapping holds the buffer";
  // "hg" in VmFlags: the mapping was advised MADV_HUGEPAGE.
  const size_t flags = entry.find("VmFlags:");
  if (flags == std::string::npos) GTEST_SKIP() << "this kernel's smaps has no VmFlags";
  const std::string flag_list = entry.substr(flags + 8, entry.find('\n', flags) - flags - 8) + " ";
  EXPECT_NE(flag_list.find(" hg "), std::string::npos) << entry;
}

}  // namespace
