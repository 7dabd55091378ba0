// The `encodecd` command, as a library function so that tests drive it directly.
//
//   encodecd [--udp ADDR:PORT] [--tcp ADDR:PORT] [--config FILE] [--checkpoint FILE]
//            [--threads N] [--io-threads N] [--log-level LEVEL]
//
// Settings come from the built-in defaults, then --config, then the flags.
// Runs until SIGINT or SIGTERM, which end every session with a Goodbye; exits 0.
//
// Thread safety: not reentrant (it sets the process's log level and thread count).
#pragma once

namespace encodec::server {

// Returns the exit code: 0 after a clean shutdown, 1 on errors (the message
// names the file, field or address at fault), 2 on invalid arguments.
int run_encodecd(int argc, const char* const* argv);

}  // namespace encodec::server
