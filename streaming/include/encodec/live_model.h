// The model a live stream runs (encodecd and encodec-client): the causal 24 kHz
// codec with the fast kernels, and the identity peers compare before they
// exchange codes (codes only decode with the same weights).
//
// Usage:
//   encodec::LiveModel live = encodec::load_live_model({.checkpoint = path});
//   encodec::StreamingEncoder encoder(live.model);
//   hello.model.checksum = live.checksum;
//
// Thread safety: the functions keep no state.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "encodec/encodec.h"
#include "encodec/lm.h"

namespace encodec {

// No usable model: the message says what was looked for and what to pass.
class LiveModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct LiveModelOptions {
  std::string checkpoint;      // this file (any width); else the official one when cached
  std::string model_dir;       // where to look for the official file (default: the hub cache)
  bool random_weights = false; // official size, random weights (benchmarks)
};

struct LiveModel {
  EncodecModel model;
  std::string checksum;        // sha256 of the checkpoint file (or "random-weights-0")
  std::string source;          // for logs: the file, or "random weights"; names the demo model as such
  bool demo = false;           // the shipped demo model (find_demo_checkpoint), no official one being cached
};

// The path of the official checkpoint `file_name` (kCheckpoint48kHz, ...) if it
// is already in `model_dir` (default: the torch hub cache) with its checksum
// right; never downloads. Otherwise LiveModelError naming the folder.
std::string cached_official_checkpoint(const std::string& file_name, const std::string& model_dir);

// The codec from options.checkpoint, else the official encodec_24khz checkpoint
// if it is already in the model directory or the torch hub cache (a server does
// not download at start), else, when no model directory was given, the demo
// model (encodec/demo_model.h), else LiveModelError naming both and --checkpoint.
LiveModel load_live_model(const LiveModelOptions& options);

// The LM for `codec`: from `checkpoint`, else the official one when cached;
// otherwise LiveModelError. It runs the deterministic kernels
// (LmKernels::kDeterministic, "det1"): live LM-coded packets are the same bytes
// on every CPU and thread count, so peers on different CPUs decode each other
// (the protocol version says so: net::kProtocolVersion 2).
std::shared_ptr<const LmModel> load_live_lm(const std::string& checkpoint,
                                            const std::string& model_dir,
                                            const EncodecConfig& codec);

}  // namespace encodec
