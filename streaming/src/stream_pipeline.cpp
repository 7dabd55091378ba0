#include "encodec/stream_pipeline.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "encodec/streaming.h"

namespace encodec {
namespace {

void check_block_size(int64_t block_size) {
  if (block_size < 1) {
    throw std::invalid_argument("stream block size must be at least 1 sample, got " +
                                std::to_string(block_size));
  }
}

class StreamingAudioEncoder : public AudioEncoder {
 public:
  StreamingAudioEncoder(const EncodecModel& model, int64_t block_size)
      : encoder_(model), block_size_(block_size) {
    check_block_size(block_size);
  }

  void push_audio(const torch::Tensor& samples, CodesSink& sink) override {
    if (samples.dim() != 2 || samples.size(0) != 1) {
      throw std::invalid_argument("the streaming encoder takes mono audio [1, n], got " +
                                  c10::str(samples.sizes()));
    }
    const torch::Tensor mono = samples.to(torch::kFloat32).contiguous();
    const float* data = mono.data_ptr<float>();
    int64_t offset = 0;
    const int64_t count = mono.size(1);
    // Fill the pending block first, then whole blocks straight from the input.
    while (offset < count) {
      const int64_t take = std::min<int64_t>(block_size_ - static_cast<int64_t>(pending_.size()),
                                             count - offset);
      pending_.insert(pending_.end(), data + offset, data + offset + take);
      offset += take;
      if (static_cast<int64_t>(pending_.size()) == block_size_) {
        encoder_.push(pending_.data(), block_size_);
        pending_.clear();
        drain(sink);
      }
    }
  }

  void finish(CodesSink& sink) override {
    if (!pending_.empty()) encoder_.push(pending_.data(), static_cast<int64_t>(pending_.size()));
    pending_.clear();
    encoder_.finish();
    drain(sink);
    if (started_) sink.end_chunk();
  }

 private:
  void drain(CodesSink& sink) {
    const int64_t count = encoder_.frames_ready();
    if (count == 0) return;
    if (!started_) {
      sink.begin_chunk(std::nullopt);
      started_ = true;
    }
    torch::Tensor codes = torch::empty({encoder_.num_codebooks(), count}, torch::kInt64);
    CodeFrame frame;
    for (int64_t t = 0; t < count; ++t) {
      encoder_.pop(&frame);
      for (int level = 0; level < frame.num_codebooks; ++level) codes[level][t] = frame.codes[level];
    }
    sink.push_codes(codes);
  }

  StreamingEncoder encoder_;
  int64_t block_size_;
  std::vector<float> pending_;
  bool started_ = false;
};

class StreamingAudioDecoder : public AudioDecoder {
 public:
  StreamingAudioDecoder(const EncodecModel& model, int64_t audio_length, AudioSink& out,
                        int64_t block_size)
      : decoder_(model),
        audio_length_(audio_length),
        out_(out),
        block_size_(block_size),
        hop_(model.config().hop_length()) {
    check_block_size(block_size);
  }

  void begin_chunk(std::optional<float> scale) override {
    if (scale) throw std::invalid_argument("the streaming decoder takes no chunk scales");
    if (chunks_++ > 0) throw std::invalid_argument("a 24 kHz stream has exactly one chunk");
  }

  void push_codes(const torch::Tensor& codes) override {
    const torch::Tensor values = codes.to(torch::kInt64).contiguous();
    const auto code = values.accessor<int64_t, 2>();
    // Groups of frames covering about a block of audio go through the decoder
    // in one pass: the same audio as frame by frame, with the weights read once per group.
    for (int64_t t = 0; t < values.size(1); ++t) {
      CodeFrame& frame = pending_.emplace_back();
      frame.num_codebooks = static_cast<int>(values.size(0));
      for (int level = 0; level < frame.num_codebooks; ++level) {
        frame.codes[level] = static_cast<int32_t>(code[level][t]);
      }
      if (static_cast<int64_t>(pending_.size()) * hop_ >= block_size_) flush();
    }
  }

  void end_chunk() override {}

  void finish() override {
    flush();
    decoder_.finish();
    drain();
    if (written_ < audio_length_) {
      throw std::logic_error("decoding gave " + std::to_string(written_) +
                             " samples for a file of " + std::to_string(audio_length_));
    }
  }

 private:
  void flush() {
    decoder_.push(pending_.data(), static_cast<int64_t>(pending_.size()));
    pending_.clear();
    drain();
  }

  // Writes ready audio in blocks, never past the file's audio length.
  void drain() {
    while (decoder_.samples_ready() > 0) {
      const int64_t count = std::min(decoder_.samples_ready(), block_size_);
      torch::Tensor block = torch::empty({1, count}, torch::kFloat32);
      decoder_.pop(block.data_ptr<float>(), count);
      const int64_t keep = std::min(count, audio_length_ - written_);
      if (keep > 0) out_.write(block.narrow(1, 0, keep));
      written_ += std::max<int64_t>(keep, 0);
    }
  }

  StreamingDecoder decoder_;
  int64_t audio_length_;
  AudioSink& out_;
  int64_t block_size_;
  int64_t hop_;
  std::vector<CodeFrame> pending_;
  int64_t written_ = 0;
  int chunks_ = 0;
};

}  // namespace

std::unique_ptr<AudioEncoder> make_streaming_encoder(const EncodecModel& model, int64_t block_size) {
  return std::make_unique<StreamingAudioEncoder>(model, block_size);
}

std::unique_ptr<AudioDecoder> make_streaming_decoder(const EncodecModel& model, int64_t audio_length,
                                                     AudioSink& out, int64_t block_size) {
  return std::make_unique<StreamingAudioDecoder>(model, audio_length, out, block_size);
}

}  // namespace encodec
