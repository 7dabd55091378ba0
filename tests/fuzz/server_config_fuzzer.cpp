// libFuzzer target: the encodecd configuration loader must turn any file into a
// configuration or a ConfigError naming what is wrong, never a crash or a hang.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "encodec/server_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/encodecd_config_fuzz_" + std::to_string(::getpid()) + ".textproto";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    encodec::server::load_server_config(path);
  } catch (const encodec::server::ConfigError&) {
    // Refused with a message: the expected outcome for malformed input.
  }
  return 0;
}
