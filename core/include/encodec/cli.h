// The `encodec` command, as a library function so that tests drive it directly.
//
//   encodec [-b BW] [-f] [--hq] [--lm] [-r] [-s SUFFIX] [-q] [--checkpoint FILE]
//           [--lm-checkpoint FILE] [--model-dir DIR] [--threads N] INPUT [OUTPUT]
//
// The reference CLI's interface, except that -q is --quiet (--hq is long-only).
// An existing output is replaced only with -f, and outputs appear only complete.
//
// Thread safety: not reentrant (it sets the process's thread count from --threads).
#pragma once

namespace encodec {

// Parses the arguments and runs compression, decompression or both. --help goes
// to stdout; errors go to stderr as "encodec: error: <message>". Returns the
// process exit code: 0 on success, 1 on errors, 2 on invalid arguments.
int run_encodec_cli(int argc, const char* const* argv);

}  // namespace encodec
