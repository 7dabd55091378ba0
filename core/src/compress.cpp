#include "encodec/compress.h"

#include <cmath>
#include <sstream>

namespace encodec {
namespace {

// Frames the reference's decompress expects for a chunk of `chunk_length` samples.
int64_t frames_for_chunk(const EncodecConfig& config, int64_t chunk_length) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(chunk_length) * config.frame_rate() /
                                        config.sample_rate_hz));
}

// Audio length of each chunk of a file whose audio is `audio_length` samples long.
std::vector<int64_t> chunk_lengths(const EncodecConfig& config, int64_t audio_length) {
  const int64_t segment_length = config.segment_length().value_or(audio_length);
  const int64_t stride = config.segment_stride().value_or(audio_length);
  std::vector<int64_t> lengths;
  for (int64_t offset = 0; offset < audio_length; offset += stride) {
    lengths.push_back(std::min(audio_length - offset, segment_length));
  }
  return lengths;
}

}  // namespace

void write_ecdc(std::ostream& out, const EcdcHeader& header, const std::vector<EncodedFrame>& frames,
                int bits_per_codebook) {
  write_ecdc_header(out, header);
  for (const EncodedFrame& frame : frames) {
    if (frame.scale) write_be_float32(out, frame.scale->item<float>());
    // Frame-major order: every codebook of time step t, then t + 1.
    torch::Tensor codes = frame.codes[0].t().contiguous().to(torch::kInt64);
    const int64_t* values = codes.data_ptr<int64_t>();
    BitPacker packer(bits_per_codebook, out);
    for (int64_t i = 0; i < codes.numel(); ++i) packer.push(static_cast<uint32_t>(values[i]));
    packer.flush();
  }
  if (!out) throw std::runtime_error("failed to write the .ecdc stream");
}

void compress_to_stream(const EncodecModel& model, const torch::Tensor& wav, std::ostream& out,
                        bool use_lm) {
  if (use_lm) {
    throw std::invalid_argument("LM entropy coding (--lm) is not implemented yet");
  }
  TORCH_CHECK(wav.dim() == 2, "compress expects audio of shape [channels, T], got ", wav.sizes());
  if (wav.size(1) == 0) throw std::invalid_argument("cannot compress empty audio (0 samples)");
  const std::vector<EncodedFrame> frames = model.encode(wav.unsqueeze(0));
  EcdcHeader header;
  header.model_name = model.name();
  header.audio_length = wav.size(-1);
  header.num_codebooks = static_cast<int>(frames.at(0).codes.size(1));
  header.use_lm = use_lm;
  write_ecdc(out, header, frames, model.config().bits_per_codebook());
}

std::string compress(const EncodecModel& model, const torch::Tensor& wav, bool use_lm) {
  std::ostringstream out;
  compress_to_stream(model, wav, out, use_lm);
  return out.str();
}

std::vector<EncodedFrame> read_ecdc_frames(std::istream& in, const EcdcHeader& header,
                                           const EncodecConfig& config) {
  std::vector<EncodedFrame> frames;
  if (header.use_lm) {
    throw EcdcFormatError(
        "this .ecdc file uses LM entropy coding (\"lm\": true), which is not supported yet");
  }
  if (header.num_codebooks > config.n_q) {
    throw EcdcFormatError("the file uses " + std::to_string(header.num_codebooks) +
                          " codebooks but model " + config.name + " has only " +
                          std::to_string(config.n_q));
  }
  const std::vector<int64_t> lengths = chunk_lengths(config, header.audio_length);
  for (size_t chunk = 0; chunk < lengths.size(); ++chunk) {
    EncodedFrame frame;
    if (config.normalize) {
      frame.scale = torch::full({1, 1}, read_be_float32(in), torch::kFloat32);
    }
    const int64_t num_frames = frames_for_chunk(config, lengths[chunk]);
    torch::Tensor codes = torch::empty({num_frames, header.num_codebooks}, torch::kInt64);
    int64_t* values = codes.data_ptr<int64_t>();
    BitUnpacker unpacker(config.bits_per_codebook(), in);
    for (int64_t i = 0; i < codes.numel(); ++i) {
      std::optional<uint32_t> value = unpacker.pull();
      if (!value) {
        throw EcdcFormatError("the .ecdc stream ended early: chunk " + std::to_string(chunk + 1) +
                              " of " + std::to_string(lengths.size()) + " has " +
                              std::to_string(i / header.num_codebooks) + " of its " +
                              std::to_string(num_frames) + " frames");
      }
      values[i] = *value;
    }
    frame.codes = codes.t().unsqueeze(0).contiguous();
    frames.push_back(std::move(frame));
  }
  return frames;
}

DecompressedAudio decompress_from_stream(std::istream& in, const ModelProvider& models) {
  const EcdcHeader header = read_ecdc_header(in);
  const EncodecModel model = models(header.model_name);
  const std::vector<EncodedFrame> frames = read_ecdc_frames(in, header, model.config());
  DecompressedAudio audio;
  audio.header = header;
  audio.sample_rate_hz = model.sample_rate_hz();
  if (frames.empty()) {
    audio.samples = torch::zeros({model.channels(), 0}, torch::kFloat32);
    return audio;
  }
  torch::Tensor wav = model.decode(frames);
  audio.samples = wav[0].narrow(-1, 0, std::min(wav.size(-1), header.audio_length)).contiguous();
  return audio;
}

DecompressedAudio decompress(const std::string& bytes, const ModelProvider& models) {
  std::istringstream in(bytes);
  return decompress_from_stream(in, models);
}

}  // namespace encodec
