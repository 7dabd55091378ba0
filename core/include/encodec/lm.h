// LM entropy coding (`--lm`), byte-compatible with the reference package: the
// EnCodec language model (per-codebook embeddings, a streaming transformer with
// a 3.5 s past context, per-codebook softmax heads) predicts each frame's codes
// from the previous frames, and an arithmetic coder spends about -log2(p) bits on
// a code of probability p.
//
// Usage:
//   encodec::LmModel lm = encodec::LmModel::official("encodec_24khz");  // cache or download
//   encodec::LmStreamEncoder encoder(lm, /*num_codebooks=*/8);
//   std::string bytes;
//   for (each frame) bytes += encoder.push_frame(codes_of_frame);        // 8 codes in [0, 1024)
//   bytes += encoder.finish();
//
//   encodec::LmStreamDecoder decoder(lm, 8);
//   decoder.feed(bytes);
//   while (auto frame = decoder.next_frame()) use(*frame);
//
// Exactness (kernels other than kDeterministic, which is exact to itself on
// every CPU instead): the probabilities are those of the reference run with LibTorch 1.13
// and OpenBLAS 0.3.21 on one thread, bit for bit, so the bytes are those of the
// Python package (whose quantized CDF floors each probability to a multiple of
// 1e-8: a one-ulp difference can change the bytes, and a decoder whose
// probabilities differ from the encoder's loses sync). Two sets of kernels
// compute them: the reference's own LibTorch operations (it re-projects the whole
// past at every step: slow), and exact kernels that reproduce those operations'
// rounding (OpenBLAS's SkylakeX sgemm kernels, ATen's AVX2 kernels) with a
// key/value cache.
// A model uses the exact kernels only when a self-check (run once, when they are
// first needed) finds them identical to LibTorch on this machine; otherwise it
// falls back to the reference operations (same bytes, slower).
//
// Thread safety: an LmModel's weights are immutable and shared by its copies, so
// any number of encoders and decoders may use one model concurrently; each
// encoder or decoder belongs to one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "encodec/checkpoint.h"
#include "encodec/encodec.h"
#include "encodec/model_store.h"

namespace encodec {

// The architecture of an LM (the reference's LMModel / StreamingTransformerEncoder).
struct LmConfig {
  int n_q = 32;          // codebooks it predicts
  int card = 1024;       // entries per codebook (embeddings have card + 1: 0 = no previous code)
  int dim = 200;         // transformer width
  int num_layers = 5;
  int num_heads = 8;
  double hidden_scale = 4.0;
  int past_context = 262;  // frames each step attends back (int(3.5 * frame_rate))
  int max_period = 10000;  // of the sinusoidal positions

  int hidden_dim() const { return static_cast<int>(dim * hidden_scale); }
  // The official LM of a codec: its n_q and bins, dim 200, 5 layers, 8 heads,
  // past_context int(3.5 * frame_rate).
  static LmConfig for_codec(const EncodecConfig& codec);
  // for_codec with dim, n_q and layers read from a checkpoint's tensors
  // (`transformer.norm_in.weight`, `emb.*`, `transformer.layers.*`). The heads
  // cannot be read from the shapes: 8, as in every released model.
  static LmConfig infer_from_state_dict(const EncodecConfig& codec, const StateDict& state);
};

// How the LM's probabilities are computed. kAuto, kFast and kReference give
// identical results, the Python package's (on the BLAS kernels it ran with);
// kDeterministic gives other ones, the same on every CPU.
enum class LmKernels {
  kAuto,       // exact fast kernels when the load-time self-check passes, else kReference
  kFast,       // exact fast kernels (throws at set_kernels if the self-check fails)
  kReference,  // the reference's LibTorch operations, as the Python package runs them
  // The project's own fixed-order kernels ("det1"): the same probabilities, so
  // the same bytes, on AVX-512, AVX2 and plain x86-64 CPUs (ENCODEC_CPU forces
  // the tier) and any thread count, but not the Python package's. What the
  // network protocol codes with; .ecdc files coded with it say "lmk": "det1".
  kDeterministic,
};

class LmModel {
 public:
  // The official LM of "encodec_24khz" / "encodec_48khz" (encodec_lm_24khz-1608e3c0.th,
  // encodec_lm_48khz-7add9fc3.th) through the model store. Throws std::invalid_argument
  // for other names, ModelStoreError, CheckpointError.
  static LmModel official(const std::string& codec_name, const ModelStoreOptions& options = {});
  static std::string official_checkpoint_name(const std::string& codec_name);
  // An LM for `codec` from a checkpoint file of any width (no checksum).
  static LmModel from_checkpoint(const std::string& path, const EncodecConfig& codec);
  // Strict loading: every tensor of `config` with its shape, and no other.
  static LmModel from_state_dict(const LmConfig& config, const StateDict& state,
                                 const std::string& source = "state_dict");
  // Random weights of a realistic scale (benchmarks and tests).
  static LmModel with_random_weights(const LmConfig& config, uint64_t seed = 0);
  // Name and shape of every tensor a checkpoint of `config` holds, in module order.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_shapes(
      const LmConfig& config);

  const LmConfig& config() const;
  // Throws std::runtime_error when kFast is asked for but the self-check failed
  // (the message says which kernel differs). kDeterministic packs its weights on
  // first use (once per set of weights). A model starts with kAuto.
  void set_kernels(LmKernels kernels);
  // A copy (sharing the weights) with `kernels` set.
  LmModel with_kernels(LmKernels kernels) const;
  // The kernels that run: never kAuto, which resolves here to kFast or
  // kReference (running the exact kernels' self-check, once per set of weights).
  LmKernels kernels() const;
  // kernels() == kDeterministic, without resolving kAuto.
  bool deterministic() const { return kernels_ == LmKernels::kDeterministic; }
  // Why the exact kernels are not used ("" when they pass the self-check).
  const std::string& fast_kernels_unavailable_reason() const;

  struct Weights;
  const Weights& weights() const { return *weights_; }
  // Encoders and decoders keep the weights alive through this.
  const std::shared_ptr<const Weights>& shared_weights() const { return weights_; }

 private:
  explicit LmModel(std::shared_ptr<const Weights> weights);
  std::shared_ptr<const Weights> weights_;
  LmKernels kernels_ = LmKernels::kAuto;
};

class LmStepper;  // one stream's LM state (internal)

// Codes in, bytes out, one frame at a time. The bytes of a chunk of frames are
// exactly those the reference writes for it in an `.ecdc` file ("lm": true).
class LmStreamEncoder {
 public:
  LmStreamEncoder(const LmModel& model, int num_codebooks);
  ~LmStreamEncoder();
  LmStreamEncoder(LmStreamEncoder&&) noexcept;
  LmStreamEncoder& operator=(LmStreamEncoder&&) noexcept;

  // Codes one frame (num_codebooks values in [0, card)) and returns the bytes
  // completed so far. The arithmetic coder holds back the bits that later codes
  // can still change (about 3 bytes), so a frame's last bytes come with later frames.
  std::string push_frame(const int64_t* codes);
  std::string push_frame(const std::vector<int64_t>& codes);
  // The same bytes appended to `out`: for live packets, with no allocation
  // once `out` has room for a frame's bytes.
  void push_frame(const int64_t* codes, std::string* out);
  // Writes the held-back bits: every pushed frame becomes decodable from the bytes
  // returned so far. The LM keeps its context; the next frame starts a new
  // arithmetic-coded segment at a byte boundary (for packets: 1-4 bytes each).
  std::string end_segment();
  void end_segment(std::string* out);  // appended to `out`
  // end_segment, then a fresh LM state: what the reference does at the end of
  // each .ecdc chunk.
  std::string finish();
  void finish(std::string* out);  // appended to `out`; keeps the encoder's buffers
  int64_t frames_in_chunk() const { return frames_; }

 private:
  void code_frame(const int64_t* codes);

  std::unique_ptr<LmStepper> stepper_;
  struct Coder;
  std::unique_ptr<Coder> coder_;
  int num_codebooks_;
  int64_t frames_ = 0;
};

// Bytes in, codes out. A frame is returned once every bit it needs has been fed:
// the decoder reads ahead exactly the bits the encoder held back, so frame t of a
// segment needs the bytes of push_frame(0..t) plus up to about 4 bytes that the
// encoder emits later (with later frames, or at end_segment / finish).
class LmStreamDecoder {
 public:
  LmStreamDecoder(const LmModel& model, int num_codebooks);
  ~LmStreamDecoder();
  LmStreamDecoder(LmStreamDecoder&&) noexcept;
  LmStreamDecoder& operator=(LmStreamDecoder&&) noexcept;

  void feed(const std::string& bytes);
  void feed(const char* data, size_t size);
  // The next frame, or nullopt when more bytes are needed. Throws EcdcFormatError
  // when the bytes cannot come from the encoder (corrupt data). The decoder
  // cannot see where a segment ends (the caller knows its frame count): past
  // the last frame of a segment it may return garbage until end_segment.
  std::optional<std::vector<int64_t>> next_frame();
  // The same into `codes` (num_codebooks values; false: more bytes needed),
  // with no allocation: for live packets.
  bool next_frame(int64_t* codes);
  // After the last frame of a segment (the encoder's end_segment): skips the
  // segment's padding bits, so that the next frame starts at the next byte, and
  // drops any codes pulled past the segment's end.
  void end_segment();
  // end_segment, then a fresh LM state (the next .ecdc chunk).
  void finish();
  // Bytes fed but not consumed yet (after end_segment / finish: the next segment's).
  size_t unread_bytes() const;
  int64_t frames_in_chunk() const { return frames_; }

 private:
  std::unique_ptr<LmStepper> stepper_;
  struct Coder;
  std::unique_ptr<Coder> coder_;
  int num_codebooks_;
  int64_t frames_ = 0;
  const float* probabilities_ = nullptr;  // of the frame being decoded
  std::vector<int64_t> partial_;          // its codes decoded so far
};

// One .ecdc chunk: codes [K, T] (int64) -> the reference's LM-coded bytes.
std::string lm_encode_chunk(const LmModel& model, const torch::Tensor& codes);
// Reads one chunk of `num_frames` frames from `in` -> codes [K, T] int64, leaving
// `in` after the chunk's last byte. Memory grows with the frames decoded, not
// with num_frames. Throws EcdcFormatError for truncated or corrupt data.
torch::Tensor lm_decode_chunk(const LmModel& model, std::istream& in, int num_codebooks,
                              int64_t num_frames);
// The same, handing each frame's K codes to `on_frame` as soon as it is decoded
// (memory independent of the chunk's length).
void lm_decode_chunk(const LmModel& model, std::istream& in, int num_codebooks, int64_t num_frames,
                     const std::function<void(const std::vector<int64_t>& frame)>& on_frame);

}  // namespace encodec
