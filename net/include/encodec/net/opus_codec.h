// libopus for peers that do not run the model: mono float frames in, Opus
// packets out, and back, with Opus's own loss concealment.
//
// Usage:
//   auto encoder = OpusFrameEncoder::create({.sample_rate_hz = 24000, .frame_samples = 480,
//                                            .bitrate_bps = 6000}, &error);
//   size_t bytes = encoder->encode(samples, packet, sizeof packet);
//   auto decoder = OpusFrameDecoder::create(24000, 480, &error);
//   decoder->decode(packet, bytes, out);   // or decoder->conceal(out)
//
// Thread safety: each encoder or decoder belongs to one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct OpusEncoder;
struct OpusDecoder;

namespace encodec::net {

struct OpusFrameOptions {
  int sample_rate_hz = 24000;   // 8000, 12000, 16000, 24000 or 48000
  int frame_samples = 480;      // 2.5, 5, 10, 20, 40 or 60 ms
  int bitrate_bps = 6000;
  bool voip = true;             // OPUS_APPLICATION_VOIP, else _AUDIO
  int complexity = 10;
};

class OpusFrameEncoder {
 public:
  // nullptr and `error` set when libopus refuses the options (the message names the value).
  static std::unique_ptr<OpusFrameEncoder> create(const OpusFrameOptions& options,
                                                  std::string* error);
  ~OpusFrameEncoder();
  // One frame of frame_samples samples in [-1, 1]; returns the packet's size, 0 on error.
  size_t encode(const float* samples, uint8_t* packet, size_t capacity);
  int frame_samples() const { return options_.frame_samples; }

 private:
  explicit OpusFrameEncoder(const OpusFrameOptions& options);
  OpusFrameOptions options_;
  OpusEncoder* encoder_ = nullptr;
};

class OpusFrameDecoder {
 public:
  static std::unique_ptr<OpusFrameDecoder> create(int sample_rate_hz, int frame_samples,
                                                  std::string* error);
  ~OpusFrameDecoder();
  // Writes frame_samples samples; false for a corrupt packet (then out holds a concealment).
  bool decode(const uint8_t* packet, size_t size, float* out);
  void conceal(float* out);
  // Back to a fresh decoder's state (a new stream), without reallocating it.
  void reset();
  int frame_samples() const { return frame_samples_; }

 private:
  OpusFrameDecoder(int frame_samples) : frame_samples_(frame_samples) {}
  int frame_samples_;
  OpusDecoder* decoder_ = nullptr;
};

}  // namespace encodec::net
