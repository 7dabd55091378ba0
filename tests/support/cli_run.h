// The `encodec` command run in-process (run_encodec_cli), its output captured.
#pragma once

#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "encodec/cli.h"

namespace encodec::testing {

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

inline CliRun run_cli(const std::vector<std::string>& args) {
  std::vector<const char*> argv = {"encodec"};
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  CliRun run;
  run.exit_code = run_encodec_cli(static_cast<int>(argv.size()), argv.data());
  std::cout.flush();
  std::cerr.flush();
  run.out = ::testing::internal::GetCapturedStdout();
  run.err = ::testing::internal::GetCapturedStderr();
  return run;
}

}  // namespace encodec::testing
