#include "encodec/streaming.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include <ATen/Parallel.h>

#include "fast/fast_quantizer.h"
#include "model_weights.h"
#include "stream_graph.h"

namespace encodec {
namespace {

void check_streamable(const EncodecModel& model) {
  const EncodecConfig& config = model.config();
  if (!config.causal || config.normalize || config.channels != 1 || config.segment_s) {
    throw std::invalid_argument("streaming needs a causal mono model without chunks (encodec_24khz); " +
                                config.name + " is not one");
  }
  if (config.n_q > kMaxStreamCodebooks) {
    throw std::invalid_argument("streaming supports at most " + std::to_string(kMaxStreamCodebooks) +
                                " codebooks; " + config.name + " has " + std::to_string(config.n_q));
  }
  if (model.kernel_set() == KernelSet::kReferenceOnly && model.precision() == Precision::kFp32) {
    throw std::invalid_argument("streaming runs the fast kernels; this " + config.name +
                                " model was loaded with KernelSet::kReferenceOnly (fp32)");
  }
}

// A FIFO that reuses its storage: the per-frame path allocates nothing once it
// has held its largest backlog.
template <typename T>
class Queue {
 public:
  void push(const T& value) {
    compact();
    items_.push_back(value);
  }
  void push(const T* values, int64_t count) {
    compact();
    items_.insert(items_.end(), values, values + count);
  }
  bool pop(T* value) {
    if (head_ == items_.size()) return false;
    *value = items_[head_++];
    return true;
  }
  int64_t pop(T* out, int64_t max_count) {
    const int64_t count = std::min<int64_t>(max_count, size());
    std::copy_n(items_.begin() + head_, count, out);
    head_ += count;
    return count;
  }
  const T* front() const { return items_.data() + head_; }
  void drop(int64_t count) { head_ += count; }
  int64_t size() const { return static_cast<int64_t>(items_.size() - head_); }
  void clear() { items_.clear(), head_ = 0; }

 private:
  void compact() {
    if (head_ == 0) return;
    items_.erase(items_.begin(), items_.begin() + head_);
    head_ = 0;
  }
  std::vector<T> items_;
  size_t head_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------
// Encoder

struct StreamingEncoder::Engine {
  explicit Engine(const EncodecModel& source)
      : model(source), graph((check_streamable(source), fast_layers(source).encoder), 1) {
    num_codebooks = model.num_codebooks();
  }

  const fast::Quantizer& quantizer() const { return fast_layers(model).quantizer; }

  // rows [count, D] -> frames with `codebooks` levels, onto `ready`.
  void quantize(const float* rows, int64_t count, int codebooks) {
    const int64_t dimension = quantizer().dimension();
    codes.resize(static_cast<size_t>(count * codebooks));
    residual.resize(static_cast<size_t>(count * dimension));
    scores.resize(static_cast<size_t>(count * quantizer().bins()));
    quantizer().encode(rows, count, codebooks, codes.data(), count, residual.data(), scores.data());
    for (int64_t row = 0; row < count; ++row) {
      CodeFrame frame;
      frame.num_codebooks = codebooks;
      for (int level = 0; level < codebooks; ++level) {
        frame.codes[level] = static_cast<int32_t>(codes[level * count + row]);
      }
      ready.push(frame);
    }
  }

  void run(bool finishing) {
    finishing ? graph.finish(scratch) : graph.run(scratch);
    streaming::RowBuffer& output = graph.output();
    if (output.rows() > 0) quantize(output.row(0, 0), output.rows(), num_codebooks);
    output.clear();
  }

  EncodecModel model;
  streaming::StreamGraph graph;
  streaming::Scratch scratch;
  int num_codebooks = 0;
  bool finished = false;
  Queue<CodeFrame> ready;
  std::vector<int64_t> codes;
  std::vector<float> residual, scores;
};

StreamingEncoder::StreamingEncoder(const EncodecModel& model)
    : engine_(std::make_unique<Engine>(model)) {}
StreamingEncoder::~StreamingEncoder() = default;
StreamingEncoder::StreamingEncoder(StreamingEncoder&&) noexcept = default;
StreamingEncoder& StreamingEncoder::operator=(StreamingEncoder&&) noexcept = default;

void StreamingEncoder::set_bandwidth(double bandwidth_kbps) {
  engine_->model.set_target_bandwidth(bandwidth_kbps);
  engine_->num_codebooks = engine_->model.num_codebooks();
}

int StreamingEncoder::num_codebooks() const { return engine_->num_codebooks; }

void StreamingEncoder::push(const float* samples, int64_t count) {
  if (engine_->finished) throw std::logic_error("StreamingEncoder::push after finish (reset first)");
  if (count <= 0) return;
  streaming::StreamGraph& graph = engine_->graph;
  const int64_t first = graph.append_input(count);
  std::copy_n(samples, count, graph.input().row(0, first));
  engine_->run(false);
}

void StreamingEncoder::finish() {
  if (engine_->finished) return;
  engine_->finished = true;
  engine_->run(true);
}

bool StreamingEncoder::pop(CodeFrame* frame) { return engine_->ready.pop(frame); }

int64_t StreamingEncoder::frames_ready() const { return engine_->ready.size(); }

void StreamingEncoder::reset() {
  engine_->graph.reset();
  engine_->ready.clear();
  engine_->finished = false;
}

// ---------------------------------------------------------------------------
// Decoder

struct StreamingDecoder::Engine {
  // Concealment: a lost frame repeats the last codes with the gain halved;
  // after this many losses in a row the output is silent.
  static constexpr int kLossesToSilence = 8;
  static constexpr int64_t kRampFrames = 64;  // more than the start delay

  explicit Engine(const EncodecModel& source)
      : model(source),
        graph((check_streamable(source), fast_layers(source).decoder), 1),
        hop(source.config().hop_length()),
        ramps(kRampFrames, {1.0f, 1.0f}) {}

  const fast::Quantizer& quantizer() const { return fast_layers(model).quantizer; }

  void validate(const CodeFrame& frame) const {
    if (frame.num_codebooks < 1 || frame.num_codebooks > quantizer().max_codebooks()) {
      throw std::invalid_argument("code frame with " + std::to_string(frame.num_codebooks) +
                                  " codebooks; the model has 1 to " +
                                  std::to_string(quantizer().max_codebooks()));
    }
    for (int level = 0; level < frame.num_codebooks; ++level) {
      if (frame.codes[level] < 0 || frame.codes[level] >= quantizer().bins()) {
        throw std::invalid_argument("code " + std::to_string(frame.codes[level]) + " at level " +
                                    std::to_string(level) + " is outside [0, " +
                                    std::to_string(quantizer().bins()) + ")");
      }
    }
  }

  // The embedding row of the next frame (`frame` null: a lost one), recording
  // the gain ramp its audio gets.
  void prepare(const CodeFrame* frame, float* embedding) {
    float start = gain, end;
    if (frame) {
      last = *frame;
      has_last = true;
      losses = 0;
      end = 1.0f;
    } else {
      ++losses;
      end = losses >= kLossesToSilence ? 0.0f : gain * 0.5f;
    }
    gain = end;
    ramps[frames_in % kRampFrames] = {start, end};
    ++frames_in;
    if (!has_last) {
      std::fill_n(embedding, quantizer().dimension(), 0.0f);  // lost before any frame: silence
      ramps[(frames_in - 1) % kRampFrames] = {0.0f, 0.0f};
      return;
    }
    int64_t level_codes[kMaxStreamCodebooks];
    for (int level = 0; level < last.num_codebooks; ++level) level_codes[level] = last.codes[level];
    quantizer().decode(level_codes, 1, last.num_codebooks, embedding);
  }

  // Audio the graph produced for this stream, in order: applies the gain ramps.
  void deliver(const float* samples, int64_t count) {
    const int64_t first = audio_produced;
    audio_produced += count;
    int64_t i = 0;
    while (i < count) {
      const int64_t position = first + i;
      const int64_t frame = position / hop, offset = position % hop;
      const int64_t run = std::min(count - i, hop - offset);
      const auto [start, end] = ramps[frame % kRampFrames];
      if (start == 1.0f && end == 1.0f) {
        ready.push(samples + i, run);
      } else {
        for (int64_t j = 0; j < run; ++j) {
          const float weight = static_cast<float>(offset + j + 1) / static_cast<float>(hop);
          const float value = samples[i + j] * (start + (end - start) * weight);
          ready.push(&value, 1);
        }
      }
      i += run;
    }
  }

  void run(bool finishing) {
    finishing ? graph.finish(scratch) : graph.run(scratch);
    streaming::RowBuffer& output = graph.output();
    if (output.rows() > 0) deliver(output.row(0, 0), output.rows());
    output.clear();
  }

  void push(const CodeFrame* frame) { push(frame, 1, /*lost=*/frame == nullptr); }

  // `count` frames (or one lost frame) in one pass of the graph.
  void push(const CodeFrame* frames, int64_t count, bool lost) {
    if (finished) throw std::logic_error("StreamingDecoder::push after finish (reset first)");
    const int64_t first = graph.append_input(count);
    for (int64_t i = 0; i < count; ++i) {
      prepare(lost ? nullptr : frames + i, graph.input().row(0, first + i));
    }
    run(false);
  }

  void reset() {
    graph.reset();
    ready.clear();
    std::fill(ramps.begin(), ramps.end(), std::pair<float, float>{1.0f, 1.0f});
    gain = 1.0f;
    losses = 0;
    has_last = false;
    frames_in = audio_produced = 0;
    finished = false;
  }

  EncodecModel model;
  streaming::StreamGraph graph;
  streaming::Scratch scratch;
  int64_t hop;
  std::vector<std::pair<float, float>> ramps;  // per frame (mod kRampFrames): gain at start, end
  float gain = 1.0f;
  int losses = 0;
  CodeFrame last;
  bool has_last = false;
  int64_t frames_in = 0, audio_produced = 0;
  bool finished = false;
  Queue<float> ready;
};

StreamingDecoder::StreamingDecoder(const EncodecModel& model)
    : engine_(std::make_unique<Engine>(model)) {}
StreamingDecoder::~StreamingDecoder() = default;
StreamingDecoder::StreamingDecoder(StreamingDecoder&&) noexcept = default;
StreamingDecoder& StreamingDecoder::operator=(StreamingDecoder&&) noexcept = default;

void StreamingDecoder::push(const CodeFrame& frame) {
  engine_->validate(frame);
  engine_->push(&frame);
}

void StreamingDecoder::push(const CodeFrame* frames, int64_t count) {
  for (int64_t i = 0; i < count; ++i) engine_->validate(frames[i]);
  if (count > 0) engine_->push(frames, count, /*lost=*/false);
}

void StreamingDecoder::push_lost() { engine_->push(nullptr); }

void StreamingDecoder::finish() {
  if (engine_->finished) return;
  engine_->finished = true;
  engine_->run(true);
}

int64_t StreamingDecoder::samples_ready() const { return engine_->ready.size(); }

int64_t StreamingDecoder::pop(float* out, int64_t max_count) {
  return engine_->ready.pop(out, max_count);
}

void StreamingDecoder::reset() { engine_->reset(); }

// ---------------------------------------------------------------------------
// Batcher

namespace {

// Streams of one side (encoder or decoder) that run batched together: a graph
// whose slots are theirs, which stream owns each slot, and the lane's scratch.
struct Group {
  std::optional<streaming::StreamGraph> graph;
  streaming::Scratch scratch;
  std::vector<int64_t> owners;  // stream id per slot
  // Encoder lanes: the lane's embedding rows, contiguous, and their quantization.
  std::vector<float> rows;
  std::vector<int64_t> codes;
  std::vector<float> residual, scores;

  int64_t size() const { return static_cast<int64_t>(owners.size()); }
};

// Where a stream runs on one side: alone (lane -1) or in slot `slot` of a lane.
struct Membership {
  int64_t lane = -1, slot = -1;
};

}  // namespace

struct StreamBatcher::State {
  struct Stream {
    StreamingEncoder::Engine encoder;
    StreamingDecoder::Engine decoder;
    Queue<float> audio_in;
    Queue<CodeFrame> codes_in;  // num_codebooks 0: a lost frame
    Membership encoder_member, decoder_member;
  };

  // One side's lanes, and how to reach a stream's membership and own graph.
  struct Side {
    std::vector<Group> lanes;
    Membership Stream::*member;
    streaming::StreamGraph& (*own_graph)(Stream&);
    int64_t last_batched = 0, last_lanes = 0;
  };

  State(const EncodecModel& source, int64_t min_streams_per_lane)
      : model(source), min_per_lane(min_streams_per_lane) {
    check_streamable(source);
    if (min_streams_per_lane < 1) {
      throw std::invalid_argument("StreamBatcher: min_streams_per_lane must be at least 1, not " +
                                  std::to_string(min_streams_per_lane));
    }
    encoders.member = &Stream::encoder_member;
    encoders.own_graph = [](Stream& stream) -> streaming::StreamGraph& { return stream.encoder.graph; };
    decoders.member = &Stream::decoder_member;
    decoders.own_graph = [](Stream& stream) -> streaming::StreamGraph& { return stream.decoder.graph; };
  }

  Stream& stream(StreamId id) {
    auto found = streams.find(id);
    if (found == streams.end()) throw std::invalid_argument("unknown stream " + std::to_string(id));
    return *found->second;
  }

  // Lanes for `batched` streams on `threads` threads.
  int64_t lane_count(int64_t batched, int64_t threads) const {
    return std::clamp<int64_t>(batched / min_per_lane, 1, std::max<int64_t>(threads, 1));
  }

  static int64_t batched(const Side& side) {
    int64_t total = 0;
    for (const Group& lane : side.lanes) total += lane.size();
    return total;
  }

  // Moves a stream's state out of its lane into its own graph, filling the
  // hole with the lane's last slot.
  void leave(Side& side, StreamId id) {
    Stream& leaving = stream(id);
    Membership& member = leaving.*side.member;
    Group& group = side.lanes[member.lane];
    side.own_graph(leaving).copy_slot(*group.graph, member.slot, 0);
    const int64_t last = group.size() - 1;
    if (member.slot != last) {
      group.graph->copy_slot(*group.graph, last, member.slot);
      group.owners[member.slot] = group.owners[last];
      (stream(group.owners[member.slot]).*side.member).slot = member.slot;
    }
    group.owners.pop_back();
    // An emptied lane keeps its graph (no slots): the next stream to join
    // copies into it instead of building a graph.
    group.graph->set_slots(last);
    member = Membership{};
  }

  // Moves a stream that has passed its start into a lane, when its state has
  // the lane's shape (always, once both are past their start and fed whole frames).
  bool join(Side& side, StreamId id, int64_t lane) {
    Stream& joining = stream(id);
    const streaming::StreamGraph& own = side.own_graph(joining);
    if (!own.all_started()) return false;
    Group& group = side.lanes[lane];
    if (!group.graph || (group.size() == 0 && !group.graph->same_shape(own))) {
      group.graph.emplace(own);
    } else {
      if (!group.graph->same_shape(own)) return false;
      group.graph->set_slots(group.graph->slots() + 1);
      group.graph->copy_slot(own, 0, group.graph->slots() - 1);
    }
    joining.*side.member = Membership{lane, group.graph->slots() - 1};
    group.owners.push_back(id);
    return true;
  }

  // The emptiest of the first `lanes` lanes.
  static int64_t emptiest(const Side& side, int64_t lanes) {
    int64_t best = 0;
    for (int64_t lane = 1; lane < lanes; ++lane) {
      if (side.lanes[lane].size() < side.lanes[best].size()) best = lane;
    }
    return best;
  }

  // Lanes are created as they are first needed and kept (emptied, not freed).
  static void ensure_lanes(Side& side, int64_t lanes) {
    if (static_cast<int64_t>(side.lanes.size()) < lanes) side.lanes.resize(lanes);
  }

  // Spreads the batched streams over as many lanes as their number calls for,
  // sizes differing by one at most, moving as few streams as that takes.
  void balance(Side& side, int64_t threads) {
    const int64_t lanes = lane_count(batched(side), threads);
    ensure_lanes(side, lanes);
    while (true) {
      // The stream to move: from a lane past the count first, else from the
      // fullest lane when it holds two more than the emptiest.
      int64_t source = -1;
      for (int64_t lane = lanes; lane < static_cast<int64_t>(side.lanes.size()) && source < 0; ++lane) {
        if (side.lanes[lane].size() > 0) source = lane;
      }
      const int64_t target = emptiest(side, lanes);
      if (source < 0) {
        int64_t fullest = 0;
        for (int64_t lane = 1; lane < lanes; ++lane) {
          if (side.lanes[lane].size() > side.lanes[fullest].size()) fullest = lane;
        }
        if (side.lanes[fullest].size() - side.lanes[target].size() <= 1) return;
        source = fullest;
      }
      const StreamId moving = side.lanes[source].owners.back();
      leave(side, moving);
      // A stream whose state cannot join (never in the steady state) runs
      // alone next tick and rejoins when it can.
      if (!join(side, moving, target)) return;
    }
  }

  // After a tick: streams running alone that have passed their start join the
  // emptiest lane; then the lanes are balanced.
  void admit(Side& side, int64_t threads) {
    for (auto& [id, stream] : streams) {
      if ((stream.get()->*side.member).lane >= 0) continue;
      const int64_t lanes = lane_count(batched(side) + 1, threads);
      ensure_lanes(side, lanes);
      join(side, id, emptiest(side, lanes));
    }
    balance(side, threads);
  }

  // The lanes of a side that have streams are among its first `used` ones.
  static int64_t used_lanes(Side& side) {
    int64_t used = 0;
    side.last_lanes = 0;
    for (int64_t lane = 0; lane < static_cast<int64_t>(side.lanes.size()); ++lane) {
      if (side.lanes[lane].size() == 0) continue;
      used = lane + 1;
      ++side.last_lanes;
    }
    side.last_batched = batched(side);
    return used;
  }

  // Runs the lanes of the encoder side (when `encoding`) and of the decoder side
  // (when `decoding`), each lane on a thread of its own, all at once. A single
  // lane runs here, its products split across the threads instead (products
  // inside a parallel region run on their thread).
  void run_lanes(bool encoding, bool decoding) {
    const int64_t encoder_lanes = encoding ? used_lanes(encoders) : 0;
    const int64_t decoder_lanes = decoding ? used_lanes(decoders) : 0;
    at::parallel_for(0, encoder_lanes + decoder_lanes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        Group& lane = task < encoder_lanes ? encoders.lanes[task] : decoders.lanes[task - encoder_lanes];
        if (lane.size() == 0) continue;
        task < encoder_lanes ? encode_lane(lane) : decode_lane(lane);
      }
    });
  }

  // Before a tick's batched passes: streams without a frame leave their lane,
  // streams running alone run their frame alone, the lanes are balanced.
  void prepare_encoders(int64_t threads) {
    const int64_t hop = model.config().hop_length();
    for (auto& [id, stream] : streams) {
      const bool has_frame = stream->audio_in.size() >= hop;
      if (stream->encoder_member.lane >= 0 && !has_frame) {
        leave(encoders, id);
      } else if (stream->encoder_member.lane < 0 && has_frame) {
        StreamingEncoder::Engine& engine = stream->encoder;
        const int64_t first = engine.graph.append_input(hop);
        std::copy_n(stream->audio_in.front(), hop, engine.graph.input().row(0, first));
        stream->audio_in.drop(hop);
        engine.run(false);
      }
    }
    balance(encoders, threads);
  }

  void prepare_decoders(int64_t threads) {
    for (auto& [id, stream] : streams) {
      const bool has_frame = stream->codes_in.size() > 0;
      if (stream->decoder_member.lane >= 0 && !has_frame) {
        leave(decoders, id);
      } else if (stream->decoder_member.lane < 0 && has_frame) {
        CodeFrame frame;
        stream->codes_in.pop(&frame);
        stream->decoder.push(frame.num_codebooks > 0 ? &frame : nullptr);
      }
    }
    balance(decoders, threads);
  }

  // One batched encoder pass over a lane's streams (on any thread: it touches
  // only the lane and its streams).
  void encode_lane(Group& lane) {
    const int64_t hop = model.config().hop_length();
    const fast::Quantizer& quantizer = fast_layers(model).quantizer;
    const std::vector<int64_t>& owners = lane.owners;
    const int64_t slots = lane.graph->slots();
    const int64_t first = lane.graph->append_input(hop);
    for (int64_t slot = 0; slot < slots; ++slot) {
      Stream& stream = *streams.at(owners[slot]);
      std::copy_n(stream.audio_in.front(), hop, lane.graph->input().row(slot, first));
      stream.audio_in.drop(hop);
    }
    lane.graph->run(lane.scratch);
    // One embedding row per slot, quantized as one batch at the largest
    // bandwidth among them (a level's code does not depend on later levels).
    streaming::RowBuffer& output = lane.graph->output();
    const int64_t rows = output.rows(), dimension = output.channels(), count = slots * rows;
    lane.rows.resize(static_cast<size_t>(count * dimension));
    int max_codebooks = 1;
    for (int64_t slot = 0; slot < slots; ++slot) {
      std::copy_n(output.row(slot, 0), rows * dimension, lane.rows.data() + slot * rows * dimension);
      max_codebooks = std::max(max_codebooks, streams.at(owners[slot])->encoder.num_codebooks);
    }
    output.clear();
    lane.codes.resize(static_cast<size_t>(count * max_codebooks));
    lane.residual.resize(static_cast<size_t>(count * dimension));
    lane.scores.resize(static_cast<size_t>(count * quantizer.bins()));
    quantizer.encode(lane.rows.data(), count, max_codebooks, lane.codes.data(), count, lane.residual.data(),
                     lane.scores.data());
    for (int64_t slot = 0; slot < slots; ++slot) {
      StreamingEncoder::Engine& engine = streams.at(owners[slot])->encoder;
      for (int64_t row = 0; row < rows; ++row) {
        CodeFrame frame;
        frame.num_codebooks = engine.num_codebooks;
        for (int level = 0; level < frame.num_codebooks; ++level) {
          frame.codes[level] = static_cast<int32_t>(lane.codes[level * count + slot * rows + row]);
        }
        engine.ready.push(frame);
      }
    }
  }

  void decode_lane(Group& lane) {
    const int64_t slots = lane.graph->slots();
    const int64_t first = lane.graph->append_input(1);
    for (int64_t slot = 0; slot < slots; ++slot) {
      Stream& stream = *streams.at(lane.owners[slot]);
      CodeFrame frame;
      stream.codes_in.pop(&frame);
      stream.decoder.prepare(frame.num_codebooks > 0 ? &frame : nullptr, lane.graph->input().row(slot, first));
    }
    lane.graph->run(lane.scratch);
    streaming::RowBuffer& output = lane.graph->output();
    for (int64_t slot = 0; slot < slots; ++slot) {
      streams.at(lane.owners[slot])->decoder.deliver(output.row(slot, 0), output.rows());
    }
    output.clear();
  }

  // A tick of the sides asked for, with `threads` threads for each: members of
  // a lane without a frame leave it; streams alone run their frame alone; every
  // lane runs one batched pass; streams alone that are past their start join a
  // lane for the next tick.
  void tick(bool encoding, bool decoding, int64_t threads) {
    if (encoding) prepare_encoders(threads);
    if (decoding) prepare_decoders(threads);
    run_lanes(encoding, decoding);
    if (encoding) admit(encoders, threads);
    if (decoding) admit(decoders, threads);
  }

  EncodecModel model;
  int64_t min_per_lane;
  std::map<StreamId, std::unique_ptr<Stream>> streams;
  StreamId next_id = 1;
  Side encoders, decoders;
};

StreamBatcher::StreamBatcher(const EncodecModel& model, int64_t min_streams_per_lane)
    : state_(std::make_unique<State>(model, min_streams_per_lane)) {}
StreamBatcher::~StreamBatcher() = default;

StreamBatcher::StreamId StreamBatcher::open_stream() {
  const StreamId id = state_->next_id++;
  state_->streams.emplace(id, std::unique_ptr<State::Stream>(new State::Stream{
                                  StreamingEncoder::Engine(state_->model),
                                  StreamingDecoder::Engine(state_->model), {}, {}, {}, {}}));
  return id;
}

void StreamBatcher::close_stream(StreamId id) {
  State& state = *state_;
  State::Stream& stream = state.stream(id);
  if (stream.encoder_member.lane >= 0) state.leave(state.encoders, id);
  if (stream.decoder_member.lane >= 0) state.leave(state.decoders, id);
  state.streams.erase(id);  // the next tick rebalances the lanes
}

int64_t StreamBatcher::stream_count() const { return static_cast<int64_t>(state_->streams.size()); }

void StreamBatcher::set_bandwidth(StreamId id, double bandwidth_kbps) {
  StreamingEncoder::Engine& encoder = state_->stream(id).encoder;
  encoder.model.set_target_bandwidth(bandwidth_kbps);
  encoder.num_codebooks = encoder.model.num_codebooks();
}

void StreamBatcher::push_audio(StreamId id, const float* samples, int64_t count) {
  State::Stream& stream = state_->stream(id);
  if (stream.encoder.finished) throw std::logic_error("StreamBatcher::push_audio after finish_audio");
  if (count > 0) stream.audio_in.push(samples, count);
}

void StreamBatcher::finish_audio(StreamId id) {
  State& state = *state_;
  State::Stream& stream = state.stream(id);
  if (stream.encoder.finished) return;
  // The rest runs alone: a partial frame has no place in a batched pass.
  if (stream.encoder_member.lane >= 0) state.leave(state.encoders, id);
  StreamingEncoder::Engine& engine = stream.encoder;
  const int64_t count = stream.audio_in.size();
  if (count > 0) {
    const int64_t first = engine.graph.append_input(count);
    std::copy_n(stream.audio_in.front(), count, engine.graph.input().row(0, first));
    stream.audio_in.drop(count);
    engine.run(false);
  }
  engine.finished = true;
  engine.run(true);
}

void StreamBatcher::finish_codes(StreamId id) {
  State& state = *state_;
  State::Stream& stream = state.stream(id);
  if (stream.decoder.finished) return;
  if (stream.decoder_member.lane >= 0) state.leave(state.decoders, id);
  CodeFrame frame;
  while (stream.codes_in.pop(&frame)) stream.decoder.push(frame.num_codebooks > 0 ? &frame : nullptr);
  stream.decoder.finished = true;
  stream.decoder.run(true);
}

bool StreamBatcher::pop_codes(StreamId id, CodeFrame* frame) {
  return state_->stream(id).encoder.ready.pop(frame);
}

void StreamBatcher::push_codes(StreamId id, const CodeFrame& frame) {
  State::Stream& stream = state_->stream(id);
  if (stream.decoder.finished) throw std::logic_error("StreamBatcher::push_codes after finish_codes");
  stream.decoder.validate(frame);
  stream.codes_in.push(frame);
}

void StreamBatcher::push_lost(StreamId id) {
  State::Stream& stream = state_->stream(id);
  if (stream.decoder.finished) throw std::logic_error("StreamBatcher::push_lost after finish_codes");
  stream.codes_in.push(CodeFrame{});
}

int64_t StreamBatcher::samples_ready(StreamId id) const { return state_->stream(id).decoder.ready.size(); }

int64_t StreamBatcher::pop_audio(StreamId id, float* out, int64_t max_count) {
  return state_->stream(id).decoder.ready.pop(out, max_count);
}

int64_t StreamBatcher::batched_encoder_streams() const { return state_->encoders.last_batched; }
int64_t StreamBatcher::batched_decoder_streams() const { return state_->decoders.last_batched; }
int64_t StreamBatcher::encoder_lanes() const { return state_->encoders.last_lanes; }
int64_t StreamBatcher::decoder_lanes() const { return state_->decoders.last_lanes; }

void StreamBatcher::encode_tick() { state_->tick(/*encoding=*/true, /*decoding=*/false, at::get_num_threads()); }

void StreamBatcher::decode_tick() { state_->tick(/*encoding=*/false, /*decoding=*/true, at::get_num_threads()); }

void StreamBatcher::tick() {
  // The threads are shared between the sides: with two, the encoder lanes run
  // on one and the decoder lanes on the other, each reading only its network's weights.
  state_->tick(/*encoding=*/true, /*decoding=*/true, std::max(1, at::get_num_threads() / 2));
}

}  // namespace encodec
