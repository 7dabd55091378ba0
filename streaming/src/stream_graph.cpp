#include "stream_graph.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "fast/fast_layers.h"
#include "fast/ordered_matrix.h"

namespace encodec::streaming {

RowBuffer::RowBuffer(int64_t channels, int64_t slots, int64_t capacity_rows)
    : channels_(channels), slots_(slots) {
  reserve(std::max<int64_t>(capacity_rows, 1));
}

void RowBuffer::reserve(int64_t capacity_rows) {
  if (capacity_rows <= capacity_) return;
  // Growing re-lays out every slot; it happens while a stream warms up (or
  // when a larger block than ever before arrives), not in the steady state.
  const int64_t new_capacity = std::max(capacity_rows, capacity_ * 2);
  std::vector<float> grown(static_cast<size_t>(slots_ * new_capacity * channels_));
  for (int64_t slot = 0; slot < slots_; ++slot) {
    std::copy_n(data_.data() + slot * capacity_ * channels_, rows_ * channels_,
                grown.data() + slot * new_capacity * channels_);
  }
  data_.swap(grown);
  capacity_ = new_capacity;
}

int64_t RowBuffer::append(int64_t count) {
  reserve(rows_ + count);
  const int64_t first = rows_;
  rows_ += count;
  return first;
}

void RowBuffer::drop_front(int64_t count) {
  if (count <= 0) return;
  const int64_t kept = rows_ - count;
  for (int64_t slot = 0; slot < slots_; ++slot) {
    std::memmove(row(slot, 0), row(slot, count), static_cast<size_t>(kept * channels_) * sizeof(float));
  }
  rows_ = kept;
}

void RowBuffer::insert_front(int64_t count) {
  if (count <= 0) return;
  reserve(rows_ + count);
  for (int64_t slot = 0; slot < slots_; ++slot) {
    std::memmove(row(slot, count), row(slot, 0), static_cast<size_t>(rows_ * channels_) * sizeof(float));
  }
  rows_ += count;
}

void RowBuffer::set_slots(int64_t slots) {
  if (slots > slots_) data_.resize(static_cast<size_t>(slots * capacity_ * channels_));
  slots_ = slots;
}

void RowBuffer::copy_slot(const RowBuffer& from, int64_t from_slot, int64_t to_slot) {
  if (from.rows_ != rows_ || from.channels_ != channels_) {
    throw std::logic_error("copy_slot between buffers of different shapes");
  }
  std::copy_n(from.row(from_slot, 0), rows_ * channels_, row(to_slot, 0));
}

void Scratch::reserve_rows(int64_t count) {
  if (static_cast<int64_t>(input_rows.size()) < count) {
    input_rows.resize(count);
    output_rows.resize(count);
  }
}

namespace {

// Conv outputs for every slot: rows t of `input` at stride `stride`, into
// `output` rows [first_output, first_output + count) (added to what they hold
// with `accumulate`), then ELU.
void conv_rows(const RowBuffer& input, int64_t stride, int64_t count, const fast::OrderedMatrix& weights,
               const float* bias, RowBuffer& output, int64_t first_output, bool accumulate, bool elu,
               Scratch& scratch) {
  if (count <= 0) return;
  const int64_t slots = input.slots();
  scratch.reserve_rows(slots * count);
  for (int64_t slot = 0; slot < slots; ++slot) {
    for (int64_t t = 0; t < count; ++t) {
      scratch.input_rows[slot * count + t] = input.row(slot, t * stride);
      scratch.output_rows[slot * count + t] = output.row(slot, first_output + t);
    }
  }
  fast::ordered_gemm(scratch.input_rows.data(), slots * count, weights, scratch.output_rows.data(),
                     {bias, accumulate});
  if (elu) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      fast::elu_in_place(output.row(slot, first_output), count * output.channels());
    }
  }
}

// `accumulate`: the outputs are added onto the first rows `output` already holds
// (a residual block's skip path) instead of being appended.
void run_conv(ConvState& state, RowBuffer& output, Scratch& scratch, bool finishing,
              bool accumulate = false) {
  const SConv1d& reference = state.conv->reference();
  const int64_t kernel = reference.effective_kernel_size(), stride = reference.stride();
  const int64_t padding = reference.padding_total();
  const float* bias = reference.bias().data_ptr<float>();
  RowBuffer& input = state.input;
  const auto place_outputs = [&](int64_t count) {
    return accumulate ? int64_t{0} : output.append(count);
  };

  if (!state.started) {
    if (finishing) {
      // The whole stream is shorter than the reflection needs: the offline rule
      // (zeros appended before reflecting) on everything this layer received.
      if (state.received == 0) return;
      const int64_t extra = extra_padding_for_conv1d(state.received, kernel, stride, padding);
      for (int64_t slot = 0; slot < input.slots(); ++slot) {
        const torch::Tensor rows = torch::from_blob(input.row(slot, 0),
                                                    {1, input.rows(), input.channels()});
        const torch::Tensor padded = fast::reflect_pad_time_major(rows, padding, extra);
        const int64_t count = (padded.size(1) - kernel) / stride + 1;
        RowBuffer window(input.channels(), 1, padded.size(1));
        window.append(padded.size(1));
        std::copy_n(padded.data_ptr<float>(), padded.numel(), window.row(0, 0));
        RowBuffer result(output.channels(), 1, count);
        result.append(count);
        if (accumulate) std::copy_n(output.row(slot, 0), count * output.channels(), result.row(0, 0));
        conv_rows(window, stride, count, state.conv->ordered_weights(), bias, result, 0, accumulate,
                  state.elu_output, scratch);
        const int64_t first = slot == 0 ? place_outputs(count) : (accumulate ? 0 : output.rows() - count);
        std::copy_n(result.row(0, 0), count * output.channels(), output.row(slot, first));
      }
      input.clear();
      return;
    }
    if (input.rows() < padding + 1) return;
    // Left padding by reflection: padded row j is x[padding - j].
    input.insert_front(padding);
    for (int64_t slot = 0; slot < input.slots(); ++slot) {
      for (int64_t j = 0; j < padding; ++j) {
        std::copy_n(input.row(slot, 2 * padding - j), input.channels(), input.row(slot, j));
      }
    }
    state.started = true;
  }
  if (finishing) {
    // Right padding by reflection of the last rows, as much as makes the last window full.
    const int64_t extra = extra_padding_for_conv1d(state.received, kernel, stride, padding);
    const int64_t first = input.append(extra);
    for (int64_t slot = 0; slot < input.slots(); ++slot) {
      for (int64_t j = 0; j < extra; ++j) {
        std::copy_n(input.row(slot, first - 2 - j), input.channels(), input.row(slot, first + j));
      }
    }
  }
  const int64_t count = input.rows() >= kernel ? (input.rows() - kernel) / stride + 1 : 0;
  if (count == 0) return;
  conv_rows(input, stride, count, state.conv->ordered_weights(), bias, output, place_outputs(count),
            accumulate, state.elu_output, scratch);
  input.drop_front(count * stride);
}

void run_transposed(TransposedConvState& state, RowBuffer& output, Scratch& scratch) {
  // Phase rows: each input row (with the previous ones as context) gives
  // `stride` output rows; the reference trims the last phase row of a causal
  // stream, which is never computed here.
  const fast::ConvTranspose1d& conv = *state.conv;
  RowBuffer& input = state.input;
  const int64_t taps = conv.taps(), stride = conv.reference().stride();
  const int64_t count = input.rows() - taps + 1;
  if (count <= 0) return;
  const int64_t first = output.append(count * stride);
  const int64_t slots = input.slots();
  scratch.reserve_rows(slots * count);
  for (int64_t slot = 0; slot < slots; ++slot) {
    for (int64_t t = 0; t < count; ++t) {
      scratch.input_rows[slot * count + t] = input.row(slot, t);
      scratch.output_rows[slot * count + t] = output.row(slot, first + t * stride);
    }
  }
  fast::ordered_gemm(scratch.input_rows.data(), slots * count, conv.ordered_phases(),
                     scratch.output_rows.data(), {conv.phase_bias().data_ptr<float>()});
  if (state.elu_output) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      fast::elu_in_place(output.row(slot, first), count * stride * output.channels());
    }
  }
  input.drop_front(count);
}

void run_lstm(LstmState& state, RowBuffer& output, Scratch& scratch) {
  const fast::Lstm& lstm = *state.lstm;
  RowBuffer& input = state.input;
  const int64_t size = lstm.dimension(), slots = input.slots(), rows = input.rows();
  if (rows == 0) return;
  scratch.lstm_input.resize(std::max<size_t>(scratch.lstm_input.size(), slots * size));
  scratch.lstm_output.resize(std::max<size_t>(scratch.lstm_output.size(), slots * size));
  scratch.lstm_gates.resize(std::max<size_t>(scratch.lstm_gates.size(), 8 * size * slots));
  const int64_t first = output.append(rows);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      std::copy_n(input.row(slot, t), size, scratch.lstm_input.data() + slot * size);
    }
    lstm.step(scratch.lstm_input.data(), scratch.lstm_output.data(), state.hidden.data(),
              state.cell.data(), slots, scratch.lstm_gates.data());
    for (int64_t slot = 0; slot < slots; ++slot) {
      float* target = output.row(slot, first + t);
      std::copy_n(scratch.lstm_output.data() + slot * size, size, target);
      if (state.elu_output) fast::elu_in_place(target, size);
    }
  }
  input.clear();
}

// Appends the rows `source` holds to a conv's input (ELU applied on the way
// when `elu`), counting them for the end-of-stream padding.
void feed_conv(ConvState& state, const RowBuffer& source, bool elu) {
  const int64_t count = source.rows();
  const int64_t first = state.input.append(count);
  for (int64_t slot = 0; slot < source.slots(); ++slot) {
    const float* from = source.row(slot, 0);
    float* to = state.input.row(slot, first);
    if (elu) {
      fast::copy_elu(from, to, count * source.channels());
    } else {
      std::copy_n(from, count * source.channels(), to);
    }
  }
  state.received += count;
}

void run_resnet(ResnetState& state, RowBuffer& output, Scratch& scratch, bool finishing) {
  // Skip path first: the shortcut is a 1-tap conv (or the identity), so it is
  // never behind; its rows wait in `skip` until the main path catches up.
  RowBuffer& input = state.input;
  const int64_t count = input.rows();
  if (count > 0) {
    const int64_t first = state.skip.append(count);
    if (state.shortcut) {
      const fast::Conv1d& shortcut = *state.shortcut->conv;
      conv_rows(input, 1, count, shortcut.ordered_weights(),
                shortcut.reference().bias().data_ptr<float>(), state.skip, first, false, false,
                scratch);
    } else {
      for (int64_t slot = 0; slot < input.slots(); ++slot) {
        std::copy_n(input.row(slot, 0), count * input.channels(), state.skip.row(slot, first));
      }
    }
    feed_conv(state.block.front(), input, /*elu=*/true);
    input.clear();
  }
  for (size_t i = 0; i + 1 < state.block.size(); ++i) {
    ConvState& next = state.block[i + 1];
    const int64_t before = next.input.rows();
    run_conv(state.block[i], next.input, scratch, finishing);
    next.received += next.input.rows() - before;
  }
  // The last conv (1 tap: one output per input row) adds onto the skip rows it
  // lines up with, as the offline block does.
  ConvState& last = state.block.back();
  const int64_t produced = last.input.rows();
  if (produced == 0) return;
  RowBuffer& skip = state.skip;
  run_conv(last, skip, scratch, finishing, /*accumulate=*/true);
  // The finished rows move on (through the ELU that follows the block, in the same pass).
  const int64_t first = output.append(produced);
  for (int64_t slot = 0; slot < skip.slots(); ++slot) {
    if (state.elu_output) {
      fast::copy_elu(skip.row(slot, 0), output.row(slot, first), produced * skip.channels());
    } else {
      std::copy_n(skip.row(slot, 0), produced * skip.channels(), output.row(slot, first));
    }
  }
  skip.drop_front(produced);
}

// The buffer a layer reads its input rows from.
RowBuffer& input_of(LayerState& layer) {
  return std::visit([](auto& state) -> RowBuffer& { return state.input; }, layer);
}

template <typename Function>
void for_each_buffer(LayerState& layer, Function&& function) {
  std::visit(
      [&function](auto& state) {
        using State = std::decay_t<decltype(state)>;
        function(state.input);
        if constexpr (std::is_same_v<State, ResnetState>) {
          function(state.skip);
          for (ConvState& conv : state.block) function(conv.input);
        }
      },
      layer);
}

template <typename Function>
void for_each_conv(LayerState& layer, Function&& function) {
  std::visit(
      [&function](auto& state) {
        using State = std::decay_t<decltype(state)>;
        if constexpr (std::is_same_v<State, ConvState>) {
          function(state);
        } else if constexpr (std::is_same_v<State, ResnetState>) {
          for (ConvState& conv : state.block) function(conv);
        }
      },
      layer);
}

}  // namespace

StreamGraph::StreamGraph(const fast::SEANet& network, int64_t slots) : slots_(slots) {
  // Room for a frame's worth of rows at every layer without growing (a stream
  // warming up or a large block grows the buffers once).
  constexpr int64_t kInitialRows = 400;
  for (const fast::Layer& layer : network.layers()) {
    if (std::holds_alternative<fast::Elu>(layer)) {
      if (layers_.empty()) throw std::invalid_argument("streaming: a network starting with ELU");
      std::visit([](auto& state) { state.elu_output = true; }, layers_.back());
      continue;
    }
    if (const auto* conv = std::get_if<fast::Conv1d>(&layer)) {
      if (!conv->reference().causal() || conv->reference().group_norm()) {
        throw std::invalid_argument("streaming needs causal convolutions without group norm");
      }
      ConvState state;
      state.conv = conv;
      state.input = RowBuffer(conv->in_channels(), slots, kInitialRows);
      layers_.emplace_back(std::move(state));
    } else if (const auto* transposed = std::get_if<fast::ConvTranspose1d>(&layer)) {
      if (!transposed->reference().causal() || transposed->reference().group_norm()) {
        throw std::invalid_argument("streaming needs causal convolutions without group norm");
      }
      TransposedConvState state;
      state.conv = transposed;
      state.input = RowBuffer(transposed->in_channels(), slots, kInitialRows);
      layers_.emplace_back(std::move(state));
    } else if (const auto* lstm = std::get_if<fast::Lstm>(&layer)) {
      LstmState state;
      state.lstm = lstm;
      state.input = RowBuffer(lstm->dimension(), slots, kInitialRows);
      layers_.emplace_back(std::move(state));
    } else {
      const auto& block = std::get<fast::ResnetBlock>(layer);
      ResnetState state;
      for (const fast::Conv1d& conv : block.block()) {
        ConvState inner;
        inner.conv = &conv;
        inner.input = RowBuffer(conv.in_channels(), slots, kInitialRows);
        state.block.push_back(std::move(inner));
      }
      // Every conv but the last is followed by an ELU inside the block.
      for (size_t i = 0; i + 1 < state.block.size(); ++i) state.block[i].elu_output = true;
      if (block.shortcut()) {
        ConvState shortcut;
        shortcut.conv = &*block.shortcut();
        state.shortcut = std::move(shortcut);
      }
      if (block.block().back().reference().effective_kernel_size() != 1) {
        throw std::invalid_argument("streaming: a residual block must end with a 1-tap conv");
      }
      const int64_t channels = block.block().back().out_channels();
      state.skip = RowBuffer(channels, slots, kInitialRows);
      state.input = RowBuffer(block.block().front().in_channels(), slots, kInitialRows);
      layers_.emplace_back(std::move(state));
    }
  }
  // Output channels: those of the last layer.
  int64_t out_channels = 0;
  std::visit(
      [&out_channels](const auto& state) {
        using State = std::decay_t<decltype(state)>;
        if constexpr (std::is_same_v<State, ConvState>) {
          out_channels = state.conv->out_channels();
        } else if constexpr (std::is_same_v<State, TransposedConvState>) {
          out_channels = state.conv->out_channels();
        } else if constexpr (std::is_same_v<State, LstmState>) {
          out_channels = state.lstm->dimension();
        } else {
          out_channels = state.skip.channels();
        }
      },
      layers_.back());
  output_ = RowBuffer(out_channels, slots, kInitialRows);
  reset();
}

int64_t StreamGraph::input_channels() const {
  return std::visit([](const auto& state) { return state.input.channels(); }, layers_.front());
}

int64_t StreamGraph::append_input(int64_t count) {
  LayerState& first = layers_.front();
  if (auto* conv = std::get_if<ConvState>(&first)) conv->received += count;
  return input_of(first).append(count);
}

RowBuffer& StreamGraph::input() { return input_of(layers_.front()); }

void StreamGraph::step(Scratch& scratch, bool finishing) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    RowBuffer& next = i + 1 < layers_.size() ? input_of(layers_[i + 1]) : output_;
    const int64_t before = next.rows();
    std::visit(
        [&](auto& state) {
          using State = std::decay_t<decltype(state)>;
          if constexpr (std::is_same_v<State, ConvState>) {
            run_conv(state, next, scratch, finishing);
          } else if constexpr (std::is_same_v<State, TransposedConvState>) {
            run_transposed(state, next, scratch);
          } else if constexpr (std::is_same_v<State, LstmState>) {
            run_lstm(state, next, scratch);
          } else {
            run_resnet(state, next, scratch, finishing);
          }
        },
        layers_[i]);
    if (i + 1 < layers_.size()) {
      if (auto* conv = std::get_if<ConvState>(&layers_[i + 1])) conv->received += next.rows() - before;
    }
  }
}

void StreamGraph::run(Scratch& scratch) { step(scratch, false); }

void StreamGraph::finish(Scratch& scratch) { step(scratch, true); }

void StreamGraph::reset() {
  for (LayerState& layer : layers_) {
    for_each_buffer(layer, [](RowBuffer& buffer) { buffer.clear(); });
    for_each_conv(layer, [](ConvState& conv) {
      conv.started = false;
      conv.received = 0;
    });
    if (auto* transposed = std::get_if<TransposedConvState>(&layer)) {
      // The transposed conv's implicit zero padding: taps - 1 rows of zeros before the first.
      RowBuffer& input = transposed->input;
      const int64_t first = input.append(transposed->conv->taps() - 1);
      for (int64_t slot = 0; slot < input.slots(); ++slot) {
        std::fill_n(input.row(slot, first), (input.rows() - first) * input.channels(), 0.0f);
      }
    }
    if (auto* lstm = std::get_if<LstmState>(&layer)) {
      const size_t count = static_cast<size_t>(lstm->lstm->num_layers() * slots_ * lstm->lstm->dimension());
      lstm->hidden.assign(count, 0.0f);
      lstm->cell.assign(count, 0.0f);
    }
  }
  output_.clear();
}

void StreamGraph::set_slots(int64_t slots) {
  for (LayerState& layer : layers_) {
    for_each_buffer(layer, [slots](RowBuffer& buffer) { buffer.set_slots(slots); });
    if (auto* lstm = std::get_if<LstmState>(&layer)) {
      // [layers, slots, H]: re-laid out for the new slot count.
      const int64_t size = lstm->lstm->dimension(), layers = lstm->lstm->num_layers();
      // In place, so that slots coming and going (streams leaving and
      // rejoining a batch) allocate nothing once the vectors have held the most.
      const int64_t old_slots = slots_;
      for (std::vector<float>* values : {&lstm->hidden, &lstm->cell}) {
        float* data = nullptr;
        if (slots > old_slots) {
          values->resize(static_cast<size_t>(layers * slots * size));
          data = values->data();
          // Later layers move further: from the last layer down, each block
          // backward; the new slots start at zero.
          for (int64_t l = layers - 1; l >= 0; --l) {
            float* from = data + l * old_slots * size;
            std::copy_backward(from, from + old_slots * size, data + l * slots * size + old_slots * size);
            std::fill_n(data + (l * slots + old_slots) * size, (slots - old_slots) * size, 0.0f);
          }
        } else {
          data = values->data();
          for (int64_t l = 0; l < layers; ++l) {
            const float* from = data + l * old_slots * size;
            std::copy(from, from + slots * size, data + l * slots * size);
          }
          values->resize(static_cast<size_t>(layers * slots * size));
        }
      }
    }
  }
  output_.set_slots(slots);
  slots_ = slots;
}

void StreamGraph::copy_slot(const StreamGraph& from, int64_t from_slot, int64_t to_slot) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    // The buffers of for_each_buffer, pairwise (same layer kinds: same network).
    std::visit(
        [&](auto& state) {
          using State = std::decay_t<decltype(state)>;
          const State& source = std::get<State>(from.layers_[i]);
          state.input.copy_slot(source.input, from_slot, to_slot);
          if constexpr (std::is_same_v<State, ResnetState>) {
            state.skip.copy_slot(source.skip, from_slot, to_slot);
            for (size_t c = 0; c < state.block.size(); ++c) {
              state.block[c].input.copy_slot(source.block[c].input, from_slot, to_slot);
            }
          }
        },
        layers_[i]);
    if (auto* lstm = std::get_if<LstmState>(&layers_[i])) {
      const auto& other = std::get<LstmState>(from.layers_[i]);
      const int64_t size = lstm->lstm->dimension();
      for (int64_t l = 0; l < lstm->lstm->num_layers(); ++l) {
        std::copy_n(other.hidden.data() + (l * from.slots_ + from_slot) * size, size,
                    lstm->hidden.data() + (l * slots_ + to_slot) * size);
        std::copy_n(other.cell.data() + (l * from.slots_ + from_slot) * size, size,
                    lstm->cell.data() + (l * slots_ + to_slot) * size);
      }
    }
  }
  output_.copy_slot(from.output_, from_slot, to_slot);
}

bool StreamGraph::all_started() const {
  bool started = true;
  for (const LayerState& layer : layers_) {
    for_each_conv(const_cast<LayerState&>(layer),
                  [&started](ConvState& conv) { started = started && conv.started; });
  }
  return started;
}

bool StreamGraph::same_shape(const StreamGraph& other) const {
  if (layers_.size() != other.layers_.size() || output_.rows() != other.output_.rows()) return false;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].index() != other.layers_[i].index()) return false;
    // The buffers of for_each_buffer, pairwise.
    const bool same_rows = std::visit(
        [&](const auto& state) {
          using State = std::decay_t<decltype(state)>;
          const State& theirs = std::get<State>(other.layers_[i]);
          bool same = state.input.rows() == theirs.input.rows();
          if constexpr (std::is_same_v<State, ResnetState>) {
            same = same && state.skip.rows() == theirs.skip.rows() && state.block.size() == theirs.block.size();
            for (size_t c = 0; same && c < state.block.size(); ++c) {
              same = state.block[c].input.rows() == theirs.block[c].input.rows();
            }
          }
          return same;
        },
        layers_[i]);
    if (!same_rows) return false;
  }
  return all_started() && other.all_started();
}

}  // namespace encodec::streaming
