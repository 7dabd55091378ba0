// Whole files through a model, as the `encodec` command codes them: the shared
// path of the CLI and of encodecd's HTTP transcoding (POST /v1/encode and
// /v1/decode give the CLI's bytes because they run this same code).
//
// Usage:
//   encodec::FileCoding coding;
//   coding.streaming = encodec::streams_by_default(model.config());  // the fast kernels' default
//   encodec::encode_audio_file(reader, model, header, lm, out, coding);
//
//   const encodec::EcdcHeader header = encodec::read_ecdc_header(in);
//   encodec::decode_ecdc_file(in, header, model, lm, wav_writer, coding);
//
// Thread safety: no shared state; the model's weights may be shared.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>

#include "encodec/audio_stream.h"
#include "encodec/compress.h"
#include "encodec/ecdc.h"
#include "encodec/encodec.h"
#include "encodec/lm.h"

namespace encodec {

// The reference kernels hold the whole waveform and every activation (about
// 0.5 GB per minute of 24 kHz audio, as the Python package), and their sums
// depend on the input length, so they cannot stream. Longer 24 kHz audio than
// this goes through the streaming engine with the fast kernels (the CLI's
// --reference unless --whole-file; the default and HTTP always run those).
inline constexpr double kWholeFileLimitSeconds = 300;

// Samples per block pushed to the streaming engine by default: the deep layers
// then see 30 rows per pass and read their weights once for all of them (frame
// by frame, reading the weights dominates), while the layers' row buffers stay
// small (about 2.3 MB per second of block in the encoder: 1 s blocks cost 35 MB
// more peak memory for 4% more speed).
inline constexpr int64_t kDefaultStreamBlock = 9600;

struct FileCoding {
  // The causal model through the streaming engine (the model must run its fast
  // kernels): bounded memory, the same bytes as the offline fast path.
  bool streaming = false;
  int64_t stream_block = kDefaultStreamBlock;
  // Seconds of audio done so far, now and then (may be empty).
  std::function<void(double seconds)> progress;
};

// True for a model the streaming engine runs (causal, no chunks: the 24 kHz
// model): what the fast kernels code through it by default.
bool streams_by_default(const EncodecConfig& config);

// True when `audio_length` samples at `model_name`'s rate are too long for the
// reference kernels (kWholeFileLimitSeconds; only the 24 kHz model).
bool too_long_for_whole_file(const std::string& model_name, int64_t audio_length);

// Encodes everything `reader` yields (at the model's rate and channels) into the
// .ecdc stream `out` that `header` opens, chunk by chunk. With `lm`, LM-coded
// (header.use_lm must say so).
void encode_audio_file(AudioFileReader& reader, const EncodecModel& model, const EcdcHeader& header,
                       const LmModel* lm, std::ostream& out, const FileCoding& coding);

// Decodes the chunks of `in` (its `header` already read) into `out`, writing
// header.audio_length samples. Throws EcdcFormatError for a corrupt stream.
void decode_ecdc_file(std::istream& in, const EcdcHeader& header, const EncodecModel& model,
                      const LmModel* lm, AudioSink& out, const FileCoding& coding);

}  // namespace encodec
