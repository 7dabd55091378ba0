// The causal 24 kHz EnCodec model frame by frame: audio in blocks of any size
// in, one frame of codes (320 samples, 13.3 ms) out as soon as its samples are
// in; codes in, audio out with no added delay. Many streams can be stepped
// together in one batched pass (StreamBatcher).
//
// Exactness: the streamed codes are the codes the offline fast path
// (Kernels::kFast) gives for the same samples, bit for bit, and the streamed
// audio is its offline decode, bit for bit, whatever the block sizes and
// whether a stream runs alone or batched. Every product runs on a kernel whose
// sums have one fixed order (core/src/fast/ordered_gemm.h).
//
// Start and end: the model pads its convolutions' inputs on the left by
// reflecting the first samples, so the first outputs depend on a little of what
// follows. The engine reproduces that exactly: the first 7 frames of codes come
// out together once 7 frames of audio are in (93 ms), the first 7 frames of
// audio once 7 frames of codes are in; from then on every frame comes out as
// soon as its last sample (or its codes) is in.
// finish() ends a stream as the offline path ends a file: the last partial
// frame is padded as the reference pads it, and everything is flushed.
//
// Usage:
//   encodec::StreamingEncoder encoder(model);  // model: encodec_24khz
//   encoder.set_bandwidth(6.0);
//   encoder.push(samples, count);              // any count
//   encodec::CodeFrame frame;
//   while (encoder.pop(&frame)) send(frame);
//   ...
//   encodec::StreamingDecoder decoder(model);
//   decoder.push(frame);                       // or decoder.push_lost()
//   std::vector<float> audio(decoder.samples_ready());
//   decoder.pop(audio.data(), audio.size());
//
// Thread safety: an encoder, decoder or batcher is used by one thread at a
// time; any number of them can share one model.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "encodec/encodec.h"

namespace encodec {

inline constexpr int kMaxStreamCodebooks = 32;

// One frame of codes: levels [0, num_codebooks) of the residual quantizer.
struct CodeFrame {
  int num_codebooks = 0;
  std::array<int32_t, kMaxStreamCodebooks> codes{};
};

class StreamingEncoder {
 public:
  // `model`: a causal model without chunk normalization (encodec_24khz, any
  // widths); otherwise std::invalid_argument. The bandwidth starts as the
  // model's (all codebooks when it has none).
  explicit StreamingEncoder(const EncodecModel& model);
  ~StreamingEncoder();
  StreamingEncoder(StreamingEncoder&&) noexcept;
  StreamingEncoder& operator=(StreamingEncoder&&) noexcept;

  // Applies to every frame quantized after the call. Throws
  // std::invalid_argument for a bandwidth the model does not have.
  void set_bandwidth(double bandwidth_kbps);
  int num_codebooks() const;

  // Mono samples at the model's rate. Computes every frame they complete.
  void push(const float* samples, int64_t count);
  // End of stream: pads the last partial frame as the offline path does and
  // computes the remaining frames. Nothing may be pushed after it until reset().
  void finish();
  // The next computed frame, if any.
  bool pop(CodeFrame* frame);
  int64_t frames_ready() const;
  // Back to a new stream (the bandwidth is kept).
  void reset();

  struct Engine;

 private:
  std::unique_ptr<Engine> engine_;
};

class StreamingDecoder {
 public:
  // Same models as StreamingEncoder.
  explicit StreamingDecoder(const EncodecModel& model);
  ~StreamingDecoder();
  StreamingDecoder(StreamingDecoder&&) noexcept;
  StreamingDecoder& operator=(StreamingDecoder&&) noexcept;

  // Decodes one frame; its audio (hop samples) is ready at once, except during
  // the stream's start (see above). Throws std::invalid_argument for a frame
  // with no codebooks, more than the model has, or a code out of range.
  void push(const CodeFrame& frame);
  // Several frames in one pass (the same audio as one at a time; faster for
  // files, where the weights are then read once per group, not per frame).
  void push(const CodeFrame* frames, int64_t count);
  // A frame that never arrived: concealed by decoding the last frame's codes
  // again while fading out (gain halves with every lost frame, silent after 8),
  // fading back in over the next good frame. Keeps the stream's timing: every
  // lost frame still gives hop samples.
  void push_lost();
  // End of stream: flushes what the start delay holds (streams shorter than
  // the delay are decoded as the offline path decodes them).
  void finish();
  int64_t samples_ready() const;
  // Copies up to `max_count` ready samples to `out`; returns how many.
  int64_t pop(float* out, int64_t max_count);
  void reset();

  struct Engine;

 private:
  std::unique_ptr<Engine> engine_;
};

// Many independent streams stepped together: each tick runs one batched pass
// of the encoder over every stream that has a frame of audio, and one of the
// decoder over every stream that has a frame of codes (or a loss), stacking the
// streams' states so that the weights are read once per tick (and lane, see
// below), not once per stream. Streams open and close between ticks. Every stream's codes and audio
// are bit-identical to a StreamingEncoder / StreamingDecoder of its own.
//
// A stream spends its first frames (the start delay) running alone, then joins
// the batch; a stream without a frame at a tick leaves the batch and rejoins later.
//
// Threads: a small batch runs as one pass whose products are split across
// LibTorch's threads. A large one is split into lanes, one per thread, each a
// batched pass of its own over its share of the streams, all at once: the
// threads then meet once per tick instead of at every layer, and the
// element-wise work runs on every thread too. With T threads (at::get_num_threads()
// at the tick) and N batched streams there are min(T, N / min_streams_per_lane)
// lanes (at least one), whose sizes differ by one at most; tick() gives each
// side T / 2 of the threads and runs both sides' lanes at once. Lanes change
// nothing in the results.
class StreamBatcher {
 public:
  using StreamId = int64_t;
  // Below 2 x 4 streams on 2 threads, one pass split by products is faster
  // (each lane reads every weight, which one stream's frame is bound by).
  static constexpr int64_t kDefaultMinStreamsPerLane = 4;

  explicit StreamBatcher(const EncodecModel& model, int64_t min_streams_per_lane = kDefaultMinStreamsPerLane);
  ~StreamBatcher();

  StreamId open_stream();
  // Throws std::invalid_argument for an unknown id (as every call taking one).
  void close_stream(StreamId id);
  int64_t stream_count() const;
  void set_bandwidth(StreamId id, double bandwidth_kbps);

  // Encoder side: audio in (any count), one frame per stream per tick, codes out.
  void push_audio(StreamId id, const float* samples, int64_t count);
  void encode_tick();
  bool pop_codes(StreamId id, CodeFrame* frame);
  // End of a stream's audio, as StreamingEncoder::finish: the audio not yet
  // ticked is encoded at once, the last partial frame padded as the offline path
  // pads it, every remaining frame ready to pop. No audio may follow (logic_error).
  void finish_audio(StreamId id);

  // Decoder side: codes (or losses) in, one frame per stream per tick, audio out.
  void push_codes(StreamId id, const CodeFrame& frame);
  void push_lost(StreamId id);
  void decode_tick();
  // End of a stream's codes, as StreamingDecoder::finish: the codes not yet ticked
  // are decoded at once and the start delay flushed. No codes may follow.
  void finish_codes(StreamId id);
  // Both sides in one tick: encode_tick() and decode_tick() with the decoder
  // taking the codes pushed before the call (not those this tick encodes), the
  // two sides' lanes running at once (with 2 threads, one side per thread).
  // The results are those of encode_tick() then decode_tick().
  void tick();
  int64_t samples_ready(StreamId id) const;
  int64_t pop_audio(StreamId id, float* out, int64_t max_count);

  // How many streams the last ticks ran batched (the rest ran alone), and on how many lanes.
  int64_t batched_encoder_streams() const;
  int64_t batched_decoder_streams() const;
  int64_t encoder_lanes() const;
  int64_t decoder_lanes() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace encodec
