#include "encodec/compress.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace encodec {
namespace {

// Frames the reference's decompress expects for a chunk of `chunk_length`
// samples: int(math.ceil(length * frame_rate / sample_rate)), in double as Python.
int64_t frames_for_chunk(const EncodecConfig& config, int64_t chunk_length) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(chunk_length) * config.frame_rate() /
                                        config.sample_rate_hz));
}

// The chunks of a file whose audio is `audio_length` samples long, as the
// reference's `range(0, audio_length, segment_stride)` walks them. Computed on
// demand: "al" comes from the file, and a corrupt one can be near 2^63.
class ChunkLayout {
 public:
  ChunkLayout(const EncodecConfig& config, int64_t audio_length)
      : audio_length_(audio_length),
        segment_length_(config.segment_length().value_or(audio_length)),
        stride_(config.segment_stride().value_or(audio_length)) {}

  int64_t count() const { return audio_length_ == 0 ? 0 : (audio_length_ - 1) / stride_ + 1; }
  // Samples of chunk `index` (< count()); index * stride < audio_length cannot overflow.
  int64_t length(int64_t index) const {
    return std::min(audio_length_ - index * stride_, segment_length_);
  }

 private:
  int64_t audio_length_;
  int64_t segment_length_;
  int64_t stride_;
};

std::string chunk_label(int64_t index, int64_t count) {
  return "chunk " + std::to_string(index + 1) + " of " + std::to_string(count);
}

// Reads one chunk's raw codes, frame-major ([num_frames, num_codebooks] in the
// stream), and returns them as [num_codebooks, num_frames].
// Hands a chunk's codes to a sink in pieces of at most kFramesPerPiece frames,
// so that memory does not grow with the chunk (a 24 kHz file is one chunk).
class CodePieces {
 public:
  static constexpr int64_t kFramesPerPiece = 1500;  // 20 s at 75 Hz
  CodePieces(CodesSink& sink, int num_codebooks) : sink_(sink), num_codebooks_(num_codebooks) {}
  void add_frame(const int64_t* codes) {
    values_.insert(values_.end(), codes, codes + num_codebooks_);
    if (++frames_ == kFramesPerPiece) flush();
  }
  void flush() {
    if (frames_ == 0) return;
    // from_blob borrows `values_`: clone (contiguous() would not copy a [K, 1] view).
    sink_.push_codes(torch::from_blob(values_.data(), {frames_, num_codebooks_}, torch::kInt64)
                         .t()
                         .clone(torch::MemoryFormat::Contiguous));
    values_.clear();
    frames_ = 0;
  }

 private:
  CodesSink& sink_;
  int num_codebooks_;
  int64_t frames_ = 0;
  std::vector<int64_t> values_;
};

// Reads a chunk's raw bit-packed codes (frame by frame, each frame's K codes in a row).
void read_chunk_codes(std::istream& in, int64_t num_frames, int num_codebooks,
                      const EncodecConfig& config, const std::string& label, CodePieces& out) {
  BitUnpacker unpacker(config.bits_per_codebook(), in);
  std::vector<int64_t> frame(static_cast<size_t>(num_codebooks));
  for (int64_t t = 0; t < num_frames; ++t) {
    for (int k = 0; k < num_codebooks; ++k) {
      const std::optional<uint32_t> value = unpacker.pull();
      if (!value) {
        throw EcdcFormatError("truncated .ecdc file: the stream ended inside the codes of " +
                              label + ", after " + std::to_string(t) + " of its " +
                              std::to_string(num_frames) + " frames");
      }
      // Only reachable when bins is not a power of two (a custom model).
      if (*value >= static_cast<uint32_t>(config.bins)) {
        throw EcdcFormatError("corrupt .ecdc file: code " + std::to_string(*value) + " in " +
                              label + " is out of range for a codebook of " +
                              std::to_string(config.bins) + " entries");
      }
      frame[static_cast<size_t>(k)] = *value;
    }
    out.add_frame(frame.data());
  }
}

}  // namespace

std::string lm_fit_problem(const LmModel& lm, const EncodecConfig& codec, int num_codebooks) {
  if (lm.config().card != codec.bins) {
    return "the LM predicts codebooks of " + std::to_string(lm.config().card) + " entries but " +
           codec.name + " has " + std::to_string(codec.bins);
  }
  if (lm.config().n_q < num_codebooks) {
    return "the LM predicts " + std::to_string(lm.config().n_q) + " codebooks but the codes use " +
           std::to_string(num_codebooks);
  }
  return "";
}

LmModel lm_coder_for(const LmModel& lm, const EcdcHeader& header) {
  if (header.lm_coder == kLmCoderDeterministic) return lm.with_kernels(LmKernels::kDeterministic);
  if (!header.lm_coder.empty()) {
    // (read_ecdc_header refuses such a file: this is a header made by hand.)
    throw std::invalid_argument("unknown LM coder \"lmk\": \"" + header.lm_coder + "\"");
  }
  return lm.deterministic() ? lm.with_kernels(LmKernels::kAuto) : lm;
}

std::string lm_coder_mark(const LmModel& lm) {
  return lm.deterministic() ? kLmCoderDeterministic : "";
}

bool is_24khz_model_name(const std::string& model_name) {
  return model_name == kModelName24kHz || model_name == kModelNameDemo24kHz;
}

std::string known_model_names() {
  return std::string(kModelName24kHz) + ", " + kModelName48kHz + ", " + kModelNameDemo24kHz;
}

bool is_known_model_name(const std::string& model_name) {
  return is_24khz_model_name(model_name) || model_name == kModelName48kHz;
}

EcdcStreamWriter::EcdcStreamWriter(std::ostream& out, const EcdcHeader& header,
                                   int bits_per_codebook, const LmModel* lm)
    : out_(out), header_(header), bits_per_codebook_(bits_per_codebook) {
  if (header.use_lm && !lm) throw std::invalid_argument("write_ecdc: \"lm\": true needs an LM");
  if (header.use_lm) lm_ = lm_coder_for(*lm, header);
  write_ecdc_header(out_, header_);
}

EcdcStreamWriter::~EcdcStreamWriter() = default;

void EcdcStreamWriter::begin_chunk(std::optional<float> scale) {
  if (scale) write_be_float32(out_, *scale);
  // Per chunk a fresh LM state and arithmetic coder, as the reference.
  if (lm_) {
    lm_encoder_.emplace(*lm_, header_.num_codebooks);
  } else {
    packer_.emplace(bits_per_codebook_, out_);
  }
}

void EcdcStreamWriter::push_codes(const torch::Tensor& codes) {
  if (codes.dim() != 2 || codes.size(0) != header_.num_codebooks) {
    throw std::invalid_argument("write_ecdc: a chunk's codes must be [" +
                                std::to_string(header_.num_codebooks) + ", T], got " +
                                c10::str(codes.sizes()));
  }
  // Frame-major order: every codebook of time step t, then t + 1.
  const torch::Tensor steps = codes.t().contiguous().to(torch::kInt64);
  const int64_t* values = steps.data_ptr<int64_t>();
  if (lm_encoder_) {
    for (int64_t t = 0; t < steps.size(0); ++t) {
      const std::string bytes = lm_encoder_->push_frame(values + t * header_.num_codebooks);
      out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    return;
  }
  if (!packer_) throw std::logic_error("EcdcStreamWriter: codes outside a chunk");
  for (int64_t i = 0; i < steps.numel(); ++i) {
    if (values[i] < 0) {
      throw std::invalid_argument("write_ecdc: negative code " + std::to_string(values[i]));
    }
    packer_->push(static_cast<uint32_t>(values[i]));
  }
}

void EcdcStreamWriter::end_chunk() {
  if (lm_encoder_) {
    const std::string bytes = lm_encoder_->finish();
    out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    lm_encoder_.reset();
  } else if (packer_) {
    packer_->flush();
    packer_.reset();
  }
  if (!out_) throw std::runtime_error("failed to write the .ecdc stream");
}

void write_ecdc(std::ostream& out, const EcdcHeader& header, const std::vector<EncodedFrame>& frames,
                int bits_per_codebook, const LmModel* lm) {
  if (header.use_lm && !lm) throw std::invalid_argument("write_ecdc: \"lm\": true needs an LM");
  EcdcStreamWriter writer(out, header, bits_per_codebook, lm);
  for (const EncodedFrame& frame : frames) {
    if (frame.codes.dim() != 3 || frame.codes.size(0) != 1 ||
        frame.codes.size(1) != header.num_codebooks) {
      throw std::invalid_argument("write_ecdc: each frame's codes must be [1, " +
                                  std::to_string(header.num_codebooks) + ", T], got " +
                                  c10::str(frame.codes.sizes()));
    }
    writer.begin_chunk(frame.scale ? std::optional<float>(frame.scale->item<float>())
                                   : std::nullopt);
    writer.push_codes(frame.codes[0]);
    writer.end_chunk();
  }
  if (!out) throw std::runtime_error("failed to write the .ecdc stream");
}

namespace {

void check_compress_input(const EncodecModel& model, const torch::Tensor& wav) {
  if (!is_known_model_name(model.name())) {
    // The reader looks the header's name up, so a file naming another model
    // could never be decompressed (the reference refuses it too).
    throw std::invalid_argument("cannot compress with model '" + model.name() +
                                "': .ecdc files only name " + known_model_names());
  }
  if (wav.dim() != 2 || wav.size(0) != model.channels()) {
    throw std::invalid_argument("compress with " + model.name() + " expects audio of shape [" +
                                std::to_string(model.channels()) + ", T], got " +
                                c10::str(wav.sizes()) + " (convert_audio converts channels)");
  }
  if (wav.size(1) == 0) throw std::invalid_argument("cannot compress empty audio (0 samples)");
}

void compress_impl(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                   const LmModel* lm) {
  check_compress_input(model, wav);
  const std::vector<EncodedFrame> frames = model.encode(wav.to(torch::kFloat32).unsqueeze(0));
  EcdcHeader header;
  header.model_name = model.name();
  header.audio_length = wav.size(-1);
  header.num_codebooks = static_cast<int>(frames.at(0).codes.size(1));
  header.use_lm = lm != nullptr;
  if (lm) {
    const std::string problem = lm_fit_problem(*lm, model.config(), header.num_codebooks);
    if (!problem.empty()) throw std::invalid_argument("cannot LM-code with this LM: " + problem);
    header.lm_coder = lm_coder_mark(*lm);
  }
  write_ecdc(out, header, frames, model.config().bits_per_codebook(), lm);
}

}  // namespace

void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        bool use_lm) {
  if (!use_lm) {
    compress_impl(model, wav, out, nullptr);
    return;
  }
  // The checks come before the LM is loaded (perhaps downloaded) for nothing.
  check_compress_input(model, wav);
  const LmModel lm = LmModel::official(model.name());
  compress_impl(model, wav, out, &lm);
}

void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        const LmModel& lm) {
  compress_impl(model, wav, out, &lm);
}

std::string compress(const EncodecModel& model, const torch::Tensor& wav, bool use_lm) {
  std::ostringstream out;
  compress_to_stream(model, wav, out, use_lm);
  return out.str();
}

std::string compress(const EncodecModel& model, const torch::Tensor& wav, const LmModel& lm) {
  std::ostringstream out;
  compress_to_stream(model, wav, out, lm);
  return out.str();
}

void read_ecdc_chunks(std::istream& in, const EcdcHeader& header, const EncodecConfig& config,
                      const LmModel* lm, CodesSink& sink) {
  if (header.use_lm && !lm) {
    throw std::invalid_argument("read_ecdc_frames: an LM-coded file (\"lm\": true) needs an LM");
  }
  if (header.num_codebooks < 1 || header.num_codebooks > config.n_q) {
    throw EcdcFormatError("the .ecdc file uses " + std::to_string(header.num_codebooks) +
                          " codebooks but model " + config.name + " has " +
                          std::to_string(config.n_q));
  }
  if (header.audio_length < 0) {
    throw EcdcFormatError("negative .ecdc audio length " + std::to_string(header.audio_length));
  }
  std::optional<LmModel> coder;  // the LM coder the header names
  if (lm) {
    const std::string problem = lm_fit_problem(*lm, config, header.num_codebooks);
    if (!problem.empty()) throw std::invalid_argument("cannot decode with this LM: " + problem);
    if (header.use_lm) coder = lm_coder_for(*lm, header);
  }
  const ChunkLayout layout(config, header.audio_length);
  const int64_t num_chunks = layout.count();
  for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    const std::string label = chunk_label(chunk, num_chunks);
    std::optional<float> scale;
    if (config.normalize) {
      try {
        scale = read_be_float32(in);
      } catch (const EcdcFormatError& error) {
        throw EcdcFormatError("truncated .ecdc file: the stream ended inside the scale of " + label +
                              " (" + error.what() + ")");
      }
    }
    const int64_t num_frames = frames_for_chunk(config, layout.length(chunk));
    sink.begin_chunk(scale);
    CodePieces pieces(sink, header.num_codebooks);
    if (header.use_lm) {
      try {
        lm_decode_chunk(*coder, in, header.num_codebooks, num_frames,
                        [&pieces](const std::vector<int64_t>& frame) { pieces.add_frame(frame.data()); });
      } catch (const EcdcFormatError& error) {
        throw EcdcFormatError(std::string(error.what()) + " (" + label + ")");
      }
    } else {
      read_chunk_codes(in, num_frames, header.num_codebooks, config, label, pieces);
    }
    pieces.flush();
    sink.end_chunk();
  }
}

namespace {

// Collects the chunks as EncodedFrames (the whole-file API).
class FrameCollector : public CodesSink {
 public:
  void begin_chunk(std::optional<float> scale) override {
    frames.emplace_back();
    if (scale) frames.back().scale = torch::full({1, 1}, *scale, torch::kFloat32);
    codes_.clear();
  }
  void push_codes(const torch::Tensor& codes) override { codes_.push_back(codes); }
  void end_chunk() override { frames.back().codes = torch::cat(codes_, 1).unsqueeze(0); }

  std::vector<EncodedFrame> frames;

 private:
  std::vector<torch::Tensor> codes_;
};

}  // namespace

std::vector<EncodedFrame> read_ecdc_frames(std::istream& in, const EcdcHeader& header,
                                           const EncodecConfig& config, const LmModel* lm) {
  FrameCollector collector;
  read_ecdc_chunks(in, header, config, lm, collector);
  return std::move(collector.frames);
}

DecompressedAudio decompress_from_stream(std::istream& in, const ModelProvider& models,
                                         const LmProvider& lms) {
  const EcdcHeader header = read_ecdc_header(in);
  // Checked before the model is loaded (perhaps downloaded) for nothing.
  if (!is_known_model_name(header.model_name)) {
    throw EcdcFormatError("the audio was compressed with an unsupported model '" +
                          header.model_name + "' (known: " + known_model_names() + ")");
  }
  const EncodecModel model = models(header.model_name);
  if (model.name() != header.model_name) {
    throw std::invalid_argument("the file needs model " + header.model_name +
                                " but the model provider gave " + model.name());
  }
  std::optional<LmModel> lm;
  if (header.use_lm) lm = lms ? lms(header.model_name) : LmModel::official(header.model_name);
  const std::vector<EncodedFrame> frames =
      read_ecdc_frames(in, header, model.config(), lm ? &*lm : nullptr);
  DecompressedAudio audio;
  audio.header = header;
  audio.sample_rate_hz = model.sample_rate_hz();
  if (frames.empty()) {  // "al": 0
    audio.samples = torch::zeros({model.channels(), 0}, torch::kFloat32);
    return audio;
  }
  const torch::Tensor wav = model.decode(frames);
  // The decoder yields whole frames (and overlapped chunks), so at least
  // audio_length samples; fewer would mean the chunk layout above is wrong.
  if (wav.size(-1) < header.audio_length) {
    throw std::logic_error("decoding gave " + std::to_string(wav.size(-1)) +
                           " samples for a file of " + std::to_string(header.audio_length));
  }
  audio.samples = wav[0].narrow(-1, 0, header.audio_length).contiguous();
  return audio;
}

DecompressedAudio decompress(const std::string& bytes, const ModelProvider& models,
                             const LmProvider& lms) {
  std::istringstream in(bytes);
  return decompress_from_stream(in, models, lms);
}

}  // namespace encodec
