// libFuzzer target: the .ecdc reader must turn any bytes into frames or a
// clean exception, never a crash, a hang or an unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "encodec/compress.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const encodec::EcdcHeader header = encodec::read_ecdc_header(in);
    const encodec::EncodecConfig config = header.model_name == "encodec_48khz"
                                              ? encodec::EncodecConfig::official_48khz()
                                              : encodec::EncodecConfig::official_24khz();
    encodec::read_ecdc_frames(in, header, config);
  } catch (const std::exception&) {
    // Rejected with a message: the expected outcome for malformed input.
  }
  return 0;
}
