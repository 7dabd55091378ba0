// Writer for PyTorch `torch.save` checkpoints of a state_dict: the zip archive
// (stored entries `<top>/data.pkl`, `<top>/data/<key>`, `<top>/version`,
// `<top>/byteorder`) with a protocol-2 pickle of an OrderedDict of
// `_rebuild_tensor_v2` calls, as `torch.save(model.state_dict(), path)` writes
// it. Python's `torch.load` and this project's `load_checkpoint` read the result.
//
// Usage:
//   encodec::StateDict state = ...;   // e.g. a trained model's parameters and buffers
//   encodec::save_checkpoint("my_model.th", state);
//
// Thread safety: the functions are reentrant; they share no state.
#pragma once

#include <string>

#include "encodec/checkpoint.h"

namespace encodec {

// Writes `state` to `path`: every tensor copied to CPU and made contiguous,
// one storage each, in the map's order; the archive's top-level folder is the
// file stem, as torch.save names it. libzip writes a temporary file beside
// `path` and renames it on success, so a reader never sees a partial
// checkpoint and a failed write leaves an existing file untouched. Throws
// CheckpointError naming the file and the tensor or the libzip error at fault
// (an unsupported dtype, an empty name, an unwritable folder).
void save_checkpoint(const std::string& path, const StateDict& state);

}  // namespace encodec
