// The `encodec` command, as a library function so that tests drive it directly.
//
//   encodec [-b BW] [-f] [--hq] [--lm] [-r] INPUT [OUTPUT]
//
// Thread safety: not reentrant (it sets the process's thread count from --threads).
#pragma once

namespace encodec {

// Parses the arguments and runs compression, decompression or both; prints
// errors to stderr. Returns the process exit code (0 on success).
int run_encodec_cli(int argc, const char* const* argv);

}  // namespace encodec
