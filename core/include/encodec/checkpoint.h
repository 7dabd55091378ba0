// Reader for PyTorch `torch.save` checkpoints (zip archives holding `data.pkl`
// and one raw storage per tensor), as written by the reference package and the
// official EnCodec releases. LibTorch 1.13's `torch::pickle_load` cannot read a
// state_dict, so this reads the archive with libzip and interprets the pickle itself.
//
// Usage:
//   encodec::StateDict state = encodec::load_checkpoint("encodec_24khz-d7cc33bc.th");
//   torch::Tensor w = state.at("encoder.model.0.conv.conv.weight_v");
//
// Thread safety: the functions are reentrant; they share no state.
#pragma once

#include <map>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace encodec {

// Tensor name -> tensor (CPU, contiguous, owning its memory), ordered by name.
using StateDict = std::map<std::string, torch::Tensor>;

// Any problem with a checkpoint file: unreadable, not a zip, truncated, an
// unsupported pickle construct, a missing storage. The message names the file
// and what is wrong.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Loads every tensor of a state_dict checkpoint. Throws CheckpointError.
StateDict load_checkpoint(const std::string& path);

// Same, from the bytes of a checkpoint file already in memory; `name` is used in
// error messages only.
StateDict load_checkpoint_from_memory(const std::string& bytes, const std::string& name);

}  // namespace encodec
