#include "encodec/file_coding.h"

#include <memory>
#include <optional>

#include "encodec/pipeline.h"
#include "encodec/stream_pipeline.h"

namespace encodec {
namespace {

// Passes decoded audio on and reports how much is done.
class ProgressAudioSink : public AudioSink {
 public:
  ProgressAudioSink(AudioSink& out, const FileCoding& coding, int sample_rate_hz)
      : out_(out), coding_(coding), sample_rate_hz_(sample_rate_hz) {}
  void write(const torch::Tensor& samples) override {
    out_.write(samples);
    frames_ += samples.size(1);
    if (coding_.progress) coding_.progress(static_cast<double>(frames_) / sample_rate_hz_);
  }

 private:
  AudioSink& out_;
  const FileCoding& coding_;
  int sample_rate_hz_;
  int64_t frames_ = 0;
};

}  // namespace

bool streams_by_default(const EncodecConfig& config) { return config.causal && !config.segment_s; }

bool too_long_for_whole_file(const std::string& model_name, int64_t audio_length) {
  if (!is_24khz_model_name(model_name)) return false;
  const double seconds =
      static_cast<double>(audio_length) / EncodecConfig::official_24khz().sample_rate_hz;
  return seconds > kWholeFileLimitSeconds;
}

void encode_audio_file(AudioFileReader& reader, const EncodecModel& model, const EcdcHeader& header,
                       const LmModel* lm, std::ostream& out, const FileCoding& coding) {
  EcdcStreamWriter writer(out, header, model.config().bits_per_codebook(), lm);
  // The reference kernels encode a 24 kHz input whole (their sums depend on the
  // input length, so no streaming gives their bytes); the fast ones stream.
  const std::unique_ptr<AudioEncoder> encoder =
      coding.streaming ? make_streaming_encoder(model, coding.stream_block)
                       : make_chunk_encoder(model);
  const double rate_hz = model.sample_rate_hz();
  while (const std::optional<torch::Tensor> block = reader.read()) {
    encoder->push_audio(*block, writer);
    if (coding.progress) coding.progress(static_cast<double>(reader.frames_read()) / rate_hz);
  }
  encoder->finish(writer);
}

void decode_ecdc_file(std::istream& in, const EcdcHeader& header, const EncodecModel& model,
                      const LmModel* lm, AudioSink& out, const FileCoding& coding) {
  ProgressAudioSink sink(out, coding, model.sample_rate_hz());
  const std::unique_ptr<AudioDecoder> decoder =
      coding.streaming ? make_streaming_decoder(model, header.audio_length, sink, coding.stream_block)
                       : make_chunk_decoder(model, header.audio_length, sink);
  read_ecdc_chunks(in, header, model.config(), lm, *decoder);
  decoder->finish();
}

}  // namespace encodec
