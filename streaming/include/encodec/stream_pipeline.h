// The streaming engine behind the file pipeline (encodec/pipeline.h): files of
// any length through StreamingEncoder / StreamingDecoder, in bounded memory.
// The .ecdc bytes equal those of the offline fast path (Kernels::kFast) for the
// same audio, the decoded audio its offline decode, bit for bit.
//
// Thread safety: each encoder or decoder belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>

#include "encodec/pipeline.h"

namespace encodec {

// Feeds the streaming encoder in blocks of `block_size` samples (whatever the
// blocks pushed to it) and writes codes to the sink as frames come out: one
// chunk, as the offline 24 kHz path. The model's bandwidth at construction is
// used. Throws std::invalid_argument for a model that cannot stream or a
// block size below 1.
std::unique_ptr<AudioEncoder> make_streaming_encoder(const EncodecModel& model, int64_t block_size);

// Decodes the codes it receives frame by frame and writes the audio to `out` in
// blocks of at most `block_size` samples, trimmed to `audio_length`.
std::unique_ptr<AudioDecoder> make_streaming_decoder(const EncodecModel& model, int64_t audio_length,
                                                     AudioSink& out, int64_t block_size);

}  // namespace encodec
