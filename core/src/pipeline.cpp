#include "encodec/pipeline.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <vector>

namespace encodec {
namespace {

class ChunkEncoder : public AudioEncoder {
 public:
  explicit ChunkEncoder(const EncodecModel& model)
      : model_(model),
        channels_(model.channels()),
        segment_length_(model.config().segment_length()),
        stride_(model.config().segment_stride()),
        buffer_(static_cast<size_t>(model.channels())) {}

  void push_audio(const torch::Tensor& samples, CodesSink& sink) override {
    if (samples.dim() != 2 || samples.size(0) != channels_) {
      throw std::invalid_argument("encoding with " + model_.name() + " expects audio [" +
                                  std::to_string(channels_) + ", n], got " +
                                  c10::str(samples.sizes()));
    }
    const torch::Tensor planar = samples.to(torch::kFloat32).contiguous();
    const int64_t count = planar.size(1);
    for (int64_t c = 0; c < channels_; ++c) {
      const float* data = planar.data_ptr<float>() + c * count;
      buffer_[static_cast<size_t>(c)].insert(buffer_[static_cast<size_t>(c)].end(), data,
                                             data + count);
    }
    pushed_ += count;
    if (!segment_length_) return;  // one chunk of everything, at finish()
    while (next_chunk_ + *segment_length_ <= pushed_) {
      encode_chunk(next_chunk_, *segment_length_, sink);
      next_chunk_ += *stride_;
    }
  }

  void finish(CodesSink& sink) override {
    if (!segment_length_) {
      if (pushed_ > 0) encode_chunk(0, pushed_, sink);
      return;
    }
    // The reference's range(0, length, stride): the chunks that end past the
    // input are shorter, and there can be several.
    for (; next_chunk_ < pushed_; next_chunk_ += *stride_) {
      encode_chunk(next_chunk_, std::min(*segment_length_, pushed_ - next_chunk_), sink);
    }
  }

 private:
  // Encodes samples [offset, offset + length) and drops what no later chunk needs.
  void encode_chunk(int64_t offset, int64_t length, CodesSink& sink) {
    torch::Tensor chunk = torch::empty({1, channels_, length}, torch::kFloat32);
    for (int64_t c = 0; c < channels_; ++c) {
      const std::vector<float>& channel = buffer_[static_cast<size_t>(c)];
      std::memcpy(chunk.data_ptr<float>() + c * length,
                  channel.data() + (offset - buffer_start_), sizeof(float) * static_cast<size_t>(length));
    }
    const EncodedFrame frame = model_.encode_chunk(chunk);
    sink.begin_chunk(frame.scale ? std::optional<float>(frame.scale->item<float>())
                                 : std::nullopt);
    sink.push_codes(frame.codes[0]);
    sink.end_chunk();
    const int64_t keep_from = stride_ ? offset + *stride_ : offset + length;
    const int64_t drop = std::min(keep_from, pushed_) - buffer_start_;
    for (std::vector<float>& channel : buffer_) {
      channel.erase(channel.begin(), channel.begin() + drop);
    }
    buffer_start_ += drop;
  }

  EncodecModel model_;
  int64_t channels_;
  std::optional<int64_t> segment_length_;
  std::optional<int64_t> stride_;
  std::vector<std::vector<float>> buffer_;  // per channel, from sample buffer_start_
  int64_t buffer_start_ = 0;
  int64_t pushed_ = 0;
  int64_t next_chunk_ = 0;  // start of the next chunk to encode
};

class ChunkDecoder : public AudioDecoder {
 public:
  ChunkDecoder(const EncodecModel& model, int64_t audio_length, AudioSink& out)
      : model_(model), audio_length_(audio_length), stride_(model.config().segment_stride()),
        out_(out) {}

  void begin_chunk(std::optional<float> scale) override {
    scale_ = scale;
    codes_.clear();
  }

  void push_codes(const torch::Tensor& codes) override { codes_.push_back(codes); }

  void end_chunk() override {
    EncodedFrame frame;
    frame.codes = torch::cat(codes_, 1).unsqueeze(0);
    codes_.clear();
    if (scale_) frame.scale = torch::full({1, 1}, *scale_, torch::kFloat32);
    const torch::Tensor decoded = model_.decode_chunk(frame)[0];  // [C, L]
    if (!stride_) {
      // decode() of a model without chunks is decode_chunk itself.
      if (chunks_ > 0) throw std::logic_error("a model without segments decodes exactly one chunk");
      emit(decoded, decoded.size(1));
    } else {
      overlap_add(decoded);
    }
    ++chunks_;
  }

  void finish() override {
    if (stride_ && sum_.defined()) emit_overlapped(sum_.size(1));
    if (emitted_ < audio_length_) {
      throw std::logic_error("decoding gave " + std::to_string(emitted_) +
                             " samples for a file of " + std::to_string(audio_length_));
    }
  }

 private:
  // linear_overlap_add, one chunk at a time: out += w * frame and weight += w
  // on the same values in the same order, so the division gives the same bits.
  void overlap_add(const torch::Tensor& frame) {
    const int64_t length = frame.size(1);
    if (!weight_.defined()) {
      // The reference's weights come from the first frame's length.
      const torch::Tensor t =
          torch::linspace(0, 1, length + 2, frame.options()).slice(0, 1, -1);
      weight_ = 0.5 - (t - 0.5).abs();
      sum_ = torch::zeros({frame.size(0), 0}, frame.options());
      sum_weight_ = torch::zeros({0}, frame.options());
    }
    const int64_t offset = chunks_ * *stride_ - sum_start_;  // within sum_
    const int64_t grow = offset + length - sum_.size(1);
    if (grow > 0) {
      sum_ = torch::cat({sum_, torch::zeros({sum_.size(0), grow}, sum_.options())}, 1);
      sum_weight_ = torch::cat({sum_weight_, torch::zeros({grow}, sum_weight_.options())});
    }
    const torch::Tensor frame_weight = weight_.slice(0, 0, length);
    sum_.narrow(1, offset, length) += frame_weight * frame;
    sum_weight_.narrow(0, offset, length) += frame_weight;
    // The next chunk starts one stride later: everything before it is final.
    emit_overlapped(std::min(offset + *stride_, sum_.size(1)));
  }

  // Emits the first `count` overlap-added samples held in sum_.
  void emit_overlapped(int64_t count) {
    const torch::Tensor weights = sum_weight_.narrow(0, 0, count);
    if (count > 0 && !(weights.min().item<float>() > 0)) {
      throw std::logic_error("overlap-add left a gap");
    }
    emit(sum_.narrow(1, 0, count) / weights, count);
    sum_ = sum_.narrow(1, count, sum_.size(1) - count).contiguous();
    sum_weight_ = sum_weight_.narrow(0, count, sum_weight_.size(0) - count).contiguous();
    sum_start_ += count;
  }

  // Writes what of `samples` ([C, count]) lies within the audio length.
  void emit(const torch::Tensor& samples, int64_t count) {
    const int64_t wanted = std::min(count, audio_length_ - emitted_);
    if (wanted > 0) out_.write(samples.narrow(1, 0, wanted));
    emitted_ += std::max<int64_t>(wanted, 0);
  }

  EncodecModel model_;
  int64_t audio_length_;
  std::optional<int64_t> stride_;
  AudioSink& out_;
  std::optional<float> scale_;
  std::vector<torch::Tensor> codes_;  // of the current chunk
  int64_t chunks_ = 0;
  torch::Tensor weight_;      // overlap-add weights (from the first chunk's length)
  torch::Tensor sum_;         // weighted sum of samples sum_start_ onwards, [C, n]
  torch::Tensor sum_weight_;  // their weights, [n]
  int64_t sum_start_ = 0;
  int64_t emitted_ = 0;
};

}  // namespace

std::unique_ptr<AudioEncoder> make_chunk_encoder(const EncodecModel& model) {
  return std::make_unique<ChunkEncoder>(model);
}

std::unique_ptr<AudioDecoder> make_chunk_decoder(const EncodecModel& model, int64_t audio_length,
                                                 AudioSink& out) {
  return std::make_unique<ChunkDecoder>(model, audio_length, out);
}

}  // namespace encodec
