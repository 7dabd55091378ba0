#include "encodec/net/opus_codec.h"

#include <opus.h>

namespace encodec::net {

std::unique_ptr<OpusFrameEncoder> OpusFrameEncoder::create(const OpusFrameOptions& options,
                                                           std::string* error) {
  std::unique_ptr<OpusFrameEncoder> encoder(new OpusFrameEncoder(options));
  int status = OPUS_OK;
  encoder->encoder_ = opus_encoder_create(
      options.sample_rate_hz, 1, options.voip ? OPUS_APPLICATION_VOIP : OPUS_APPLICATION_AUDIO,
      &status);
  if (status != OPUS_OK || encoder->encoder_ == nullptr) {
    *error = "libopus refuses a sample rate of " + std::to_string(options.sample_rate_hz) +
             " Hz: " + opus_strerror(status);
    return nullptr;
  }
  const int frame_us = static_cast<int>(int64_t{options.frame_samples} * 1000000 /
                                        options.sample_rate_hz);
  if (frame_us != 2500 && frame_us != 5000 && frame_us != 10000 && frame_us != 20000 &&
      frame_us != 40000 && frame_us != 60000) {
    *error = "an Opus frame of " + std::to_string(options.frame_samples) + " samples at " +
             std::to_string(options.sample_rate_hz) +
             " Hz is not 2.5, 5, 10, 20, 40 or 60 ms";
    return nullptr;
  }
  if (opus_encoder_ctl(encoder->encoder_, OPUS_SET_BITRATE(options.bitrate_bps)) != OPUS_OK) {
    *error = "libopus refuses a bitrate of " + std::to_string(options.bitrate_bps) + " bit/s";
    return nullptr;
  }
  opus_encoder_ctl(encoder->encoder_, OPUS_SET_COMPLEXITY(options.complexity));
  // Constant bitrate: the comparison with EnCodec's fixed-rate codes is fair.
  opus_encoder_ctl(encoder->encoder_, OPUS_SET_VBR(0));
  return encoder;
}

OpusFrameEncoder::OpusFrameEncoder(const OpusFrameOptions& options) : options_(options) {}

OpusFrameEncoder::~OpusFrameEncoder() {
  if (encoder_ != nullptr) opus_encoder_destroy(encoder_);
}

size_t OpusFrameEncoder::encode(const float* samples, uint8_t* packet, size_t capacity) {
  const opus_int32 bytes = opus_encode_float(encoder_, samples, options_.frame_samples, packet,
                                             static_cast<opus_int32>(capacity));
  return bytes > 0 ? static_cast<size_t>(bytes) : 0;
}

std::unique_ptr<OpusFrameDecoder> OpusFrameDecoder::create(int sample_rate_hz, int frame_samples,
                                                           std::string* error) {
  std::unique_ptr<OpusFrameDecoder> decoder(new OpusFrameDecoder(frame_samples));
  int status = OPUS_OK;
  decoder->decoder_ = opus_decoder_create(sample_rate_hz, 1, &status);
  if (status != OPUS_OK || decoder->decoder_ == nullptr) {
    *error = "libopus refuses a sample rate of " + std::to_string(sample_rate_hz) +
             " Hz: " + opus_strerror(status);
    return nullptr;
  }
  return decoder;
}

OpusFrameDecoder::~OpusFrameDecoder() {
  if (decoder_ != nullptr) opus_decoder_destroy(decoder_);
}

bool OpusFrameDecoder::decode(const uint8_t* packet, size_t size, float* out) {
  const int samples = opus_decode_float(decoder_, packet, static_cast<opus_int32>(size), out,
                                        frame_samples_, 0);
  if (samples == frame_samples_) return true;
  conceal(out);
  return false;
}

void OpusFrameDecoder::conceal(float* out) {
  const int samples = opus_decode_float(decoder_, nullptr, 0, out, frame_samples_, 0);
  for (int i = samples < 0 ? 0 : samples; i < frame_samples_; ++i) out[i] = 0.0f;
}

void OpusFrameDecoder::reset() { opus_decoder_ctl(decoder_, OPUS_RESET_STATE); }

}  // namespace encodec::net
