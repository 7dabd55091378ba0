// libFuzzer target: the checkpoint reader (zip + pickle) must turn any bytes
// into tensors or a CheckpointError, never a crash, a hang or a huge allocation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "encodec/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    encodec::load_checkpoint_from_memory(std::string(reinterpret_cast<const char*>(data), size),
                                         "fuzz input");
  } catch (const encodec::CheckpointError&) {
    // Rejected with a message: the expected outcome for malformed input.
  }
  return 0;
}
