// A model over audio of any length, in bounded memory: an AudioEncoder turns
// blocks of model-rate audio into the chunks of a .ecdc stream (a CodesSink,
// e.g. EcdcStreamWriter), an AudioDecoder turns chunks back into audio blocks
// (an AudioSink, e.g. WavFileWriter). Each is one replaceable piece: the
// chunked ones here follow the reference's chunking exactly (48 kHz: 1 s chunks
// with 1% overlap, so memory holds one chunk); a model without chunks (24 kHz)
// is encoded whole at finish() until a streaming implementation replaces it.
//
// Usage:
//   encodec::AudioFileReader reader(input, model.sample_rate_hz(), model.channels());
//   encodec::EcdcStreamWriter writer(out, header, model.config().bits_per_codebook());
//   auto encoder = encodec::make_chunk_encoder(model);
//   while (auto block = reader.read()) encoder->push_audio(*block, writer);
//   encoder->finish(writer);
//
//   auto decoder = encodec::make_chunk_decoder(model, header.audio_length, wav_writer);
//   encodec::read_ecdc_chunks(in, header, model.config(), nullptr, *decoder);
//   decoder->finish();
//
// Thread safety: each encoder or decoder belongs to one thread; they share the
// model's immutable weights.
#pragma once

#include <cstdint>
#include <memory>

#include <torch/torch.h>

#include "encodec/audio_stream.h"
#include "encodec/compress.h"
#include "encodec/encodec.h"

namespace encodec {

class AudioEncoder {
 public:
  virtual ~AudioEncoder() = default;
  // More audio: float32 [channels, n] at the model's rate. Chunks that are
  // complete go to `sink` now.
  virtual void push_audio(const torch::Tensor& samples, CodesSink& sink) = 0;
  // End of input: the remaining chunks go to `sink`.
  virtual void finish(CodesSink& sink) = 0;
};

// Receives chunks (as a CodesSink) and writes their decoded audio, trimmed to
// the file's audio length, to the AudioSink it was made with.
class AudioDecoder : public CodesSink {
 public:
  // After the last chunk: writes the remaining audio. Throws std::logic_error
  // if the chunks decoded to fewer samples than the audio length.
  virtual void finish() = 0;
};

// The reference's encode(): chunks of config().segment_length() samples every
// segment_stride() samples, each encoded as soon as its samples are in (one
// chunk of the whole input when the model has no segments).
std::unique_ptr<AudioEncoder> make_chunk_encoder(const EncodecModel& model);

// The reference's decode() and decompress trimming: each chunk decoded when it
// ends, overlap-added with linear_overlap_add's weights and order of operations
// (bit-identical), audio written as soon as no later chunk can change it.
std::unique_ptr<AudioDecoder> make_chunk_decoder(const EncodecModel& model, int64_t audio_length,
                                                 AudioSink& out);

}  // namespace encodec
