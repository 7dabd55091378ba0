// The causal SEANet run incrementally for a group of streams that advance in
// lockstep. Every layer keeps its input rows (time-major [slot, row, channel])
// from which outputs are still to be computed: the left context of a conv, the
// rows of a transposed conv's previous step, the LSTM's hidden and cell states.
// Rows pushed in are computed as soon as the layer has what it needs and passed
// on; nothing is computed twice.
//
// Exactness: every product runs on the ordered kernel (ordered_gemm.h) and every
// ELU and addition is the offline fast path's, element by element, so each
// output row has the bits the offline fast path gives it, whatever the block
// sizes or the number of streams in the group.
//
// Start and end of a stream: the reference pads a causal conv's input on the
// left by reflecting its first rows (x[p], ..., x[1]), so the first outputs of a
// layer need rows beyond the current one: a layer starts once it holds p + 1
// rows (the encoder's last conv, p = 6 frames, delays the first codes by 6
// frames; the decoder's first conv its first audio likewise), then runs without
// delay. At the end, finish() pads each layer's last window on the right as the
// reference does (reflection of the last rows) so the last partial frame comes
// out as the offline path's.
#pragma once

#include <memory>
#include <variant>
#include <vector>

#include "fast/fast_seanet.h"

namespace encodec::streaming {

// Rows of `channels` floats for `slots` streams, every slot holding `rows()` rows.
class RowBuffer {
 public:
  RowBuffer() = default;
  RowBuffer(int64_t channels, int64_t slots, int64_t capacity_rows);

  int64_t channels() const { return channels_; }
  int64_t slots() const { return slots_; }
  int64_t rows() const { return rows_; }
  float* row(int64_t slot, int64_t index) { return data_.data() + (slot * capacity_ + index) * channels_; }
  const float* row(int64_t slot, int64_t index) const {
    return data_.data() + (slot * capacity_ + index) * channels_;
  }

  // Makes room for `count` more rows (growing only when needed) and returns the
  // index of the first; the caller writes them.
  int64_t append(int64_t count);
  void drop_front(int64_t count);
  // Inserts `count` rows before the first (their content is for the caller to write).
  void insert_front(int64_t count);
  void clear() { rows_ = 0; }
  // Slot management for the batcher: every buffer of a group changes together.
  void set_slots(int64_t slots);
  void copy_slot(const RowBuffer& from, int64_t from_slot, int64_t to_slot);

 private:
  void reserve(int64_t capacity_rows);
  int64_t channels_ = 0, slots_ = 0, capacity_ = 0, rows_ = 0;
  std::vector<float> data_;
};

// Scratch space a group reuses on every step (sized on first use).
struct Scratch {
  std::vector<const float*> input_rows;
  std::vector<float*> output_rows;
  std::vector<float> lstm_input, lstm_output, lstm_gates;
  void reserve_rows(int64_t count);
};

struct ConvState {
  const fast::Conv1d* conv = nullptr;
  bool elu_output = false;
  RowBuffer input;
  bool started = false;
  int64_t received = 0;  // rows received since the start of the stream
};

struct TransposedConvState {
  const fast::ConvTranspose1d* conv = nullptr;
  bool elu_output = false;
  RowBuffer input;  // the previous rows (zeros at the start), then new rows
};

struct LstmState {
  const fast::Lstm* lstm = nullptr;
  bool elu_output = false;
  RowBuffer input;
  std::vector<float> hidden, cell;  // [layers, slots, H]
};

struct ResnetState {
  RowBuffer input;               // the block's input rows, read by both paths
  std::vector<ConvState> block;  // each reads ELU of its input
  std::optional<ConvState> shortcut;
  bool elu_output = false;
  RowBuffer skip;  // skip-path rows waiting for the main path
};

using LayerState = std::variant<ConvState, TransposedConvState, LstmState, ResnetState>;

// One SEANet (encoder or decoder) for a group of streams.
class StreamGraph {
 public:
  StreamGraph(const fast::SEANet& network, int64_t slots);

  int64_t slots() const { return slots_; }
  int64_t input_channels() const;
  int64_t output_channels() const { return output_.channels(); }

  // Makes room for `count` input rows per slot and returns the index of the
  // first; the caller writes them through input().row(slot, index).
  int64_t append_input(int64_t count);
  RowBuffer& input();
  // Computes what the new input allows; the results are appended to output().
  void run(Scratch& scratch);
  // End of stream (single-stream groups): pads as the offline path and computes the rest.
  void finish(Scratch& scratch);
  RowBuffer& output() { return output_; }
  void reset();

  // Slot management for the batcher.
  void set_slots(int64_t slots);
  void copy_slot(const StreamGraph& from, int64_t from_slot, int64_t to_slot);
  // Whether every layer has passed its start (all later steps see the same shapes).
  bool all_started() const;
  // Whether two graphs hold the same number of rows in every buffer (so that
  // a stream of one can join the other's group).
  bool same_shape(const StreamGraph& other) const;

 private:
  void step(Scratch& scratch, bool finishing);

  std::vector<LayerState> layers_;
  RowBuffer output_;
  int64_t slots_;
};

}  // namespace encodec::streaming
