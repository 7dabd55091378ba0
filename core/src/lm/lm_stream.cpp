// LmStreamEncoder / LmStreamDecoder: the reference's compress loop (one LM step
// per frame, then each codebook's code through the arithmetic coder with that
// codebook's quantized CDF), one frame at a time.
#include <istream>

#include "encodec/ecdc.h"
#include "encodec/lm.h"
#include "lm/arithmetic_coder.h"
#include "lm/lm_stepper.h"

namespace encodec {

// ---------------------------------------------------------------- encoder

struct LmStreamEncoder::Coder {
  lm::ArithmeticEncoder coder;
  std::vector<uint32_t> cdf;
  const int64_t* previous = nullptr;
  std::vector<int64_t> previous_codes;
};

LmStreamEncoder::LmStreamEncoder(const LmModel& model, int num_codebooks)
    : stepper_(make_lm_stepper(model, num_codebooks)),
      coder_(std::make_unique<Coder>()),
      num_codebooks_(num_codebooks) {
  coder_->cdf.resize(model.config().card);
  coder_->previous_codes.resize(num_codebooks);
}

LmStreamEncoder::~LmStreamEncoder() = default;
LmStreamEncoder::LmStreamEncoder(LmStreamEncoder&&) noexcept = default;
LmStreamEncoder& LmStreamEncoder::operator=(LmStreamEncoder&&) noexcept = default;

std::string LmStreamEncoder::push_frame(const std::vector<int64_t>& codes) {
  if (static_cast<int>(codes.size()) != num_codebooks_) {
    throw std::invalid_argument("push_frame: expected " + std::to_string(num_codebooks_) +
                                " codes, got " + std::to_string(codes.size()));
  }
  return push_frame(codes.data());
}

std::string LmStreamEncoder::push_frame(const int64_t* codes) {
  code_frame(codes);
  return coder_->coder.take_bytes();
}

void LmStreamEncoder::push_frame(const int64_t* codes, std::string* out) {
  code_frame(codes);
  coder_->coder.append_bytes(out);
}

void LmStreamEncoder::code_frame(const int64_t* codes) {
  const int card = static_cast<int>(coder_->cdf.size());
  for (int k = 0; k < num_codebooks_; ++k) {
    if (codes[k] < 0 || codes[k] >= card) {
      throw std::invalid_argument("push_frame: code " + std::to_string(codes[k]) +
                                  " of codebook " + std::to_string(k) + " is not in [0, " +
                                  std::to_string(card) + ")");
    }
  }
  const float* probabilities = stepper_->step(frames_ == 0 ? nullptr : coder_->previous_codes.data());
  for (int k = 0; k < num_codebooks_; ++k) {
    uint32_t* cdf = coder_->cdf.data();
    lm::build_quantized_cdf(probabilities + static_cast<size_t>(k) * card, card, cdf);
    const int symbol = static_cast<int>(codes[k]);
    coder_->coder.push(symbol == 0 ? 0 : cdf[symbol - 1], cdf[symbol]);
  }
  std::copy(codes, codes + num_codebooks_, coder_->previous_codes.begin());
  ++frames_;
}

std::string LmStreamEncoder::end_segment() {
  coder_->coder.flush();
  return coder_->coder.take_bytes();
}

void LmStreamEncoder::end_segment(std::string* out) {
  coder_->coder.flush();
  coder_->coder.append_bytes(out);
}

std::string LmStreamEncoder::finish() {
  std::string bytes = end_segment();
  stepper_->reset();
  frames_ = 0;
  return bytes;
}

void LmStreamEncoder::finish(std::string* out) {
  end_segment(out);
  stepper_->reset();
  frames_ = 0;
}

// ---------------------------------------------------------------- decoder

struct LmStreamDecoder::Coder {
  lm::ArithmeticDecoder coder;
  std::vector<uint32_t> cdf;
  std::vector<int64_t> previous_codes;
};

LmStreamDecoder::LmStreamDecoder(const LmModel& model, int num_codebooks)
    : stepper_(make_lm_stepper(model, num_codebooks)),
      coder_(std::make_unique<Coder>()),
      num_codebooks_(num_codebooks) {
  coder_->cdf.resize(model.config().card);
  coder_->previous_codes.resize(num_codebooks);
  partial_.reserve(num_codebooks);
}

LmStreamDecoder::~LmStreamDecoder() = default;
LmStreamDecoder::LmStreamDecoder(LmStreamDecoder&&) noexcept = default;
LmStreamDecoder& LmStreamDecoder::operator=(LmStreamDecoder&&) noexcept = default;

void LmStreamDecoder::feed(const std::string& bytes) { feed(bytes.data(), bytes.size()); }
void LmStreamDecoder::feed(const char* data, size_t size) { coder_->coder.feed(data, size); }

std::optional<std::vector<int64_t>> LmStreamDecoder::next_frame() {
  std::vector<int64_t> frame(static_cast<size_t>(num_codebooks_));
  if (!next_frame(frame.data())) return std::nullopt;
  return frame;
}

bool LmStreamDecoder::next_frame(int64_t* codes) {
  const int card = static_cast<int>(coder_->cdf.size());
  if (!probabilities_) {
    // The LM runs once per frame, even if the frame's bits come in several feeds.
    probabilities_ = stepper_->step(frames_ == 0 ? nullptr : coder_->previous_codes.data());
    partial_.clear();
  }
  while (static_cast<int>(partial_.size()) < num_codebooks_) {
    const int k = static_cast<int>(partial_.size());
    lm::build_quantized_cdf(probabilities_ + static_cast<size_t>(k) * card, card,
                            coder_->cdf.data());
    const std::optional<int> symbol = coder_->coder.pull(coder_->cdf.data(), card);
    if (!symbol) return false;
    partial_.push_back(*symbol);
  }
  probabilities_ = nullptr;
  std::copy(partial_.begin(), partial_.end(), coder_->previous_codes.begin());
  std::copy(partial_.begin(), partial_.end(), codes);
  partial_.clear();
  ++frames_;
  return true;
}

void LmStreamDecoder::end_segment() {
  // Codes already pulled for the next frame came from the padding of this
  // segment's last byte (a pull can need no new bits): drop them. The LM step
  // for that frame stays valid: it only depends on the frames before it.
  partial_.clear();
  coder_->coder.end_segment();
}

void LmStreamDecoder::finish() {
  end_segment();
  stepper_->reset();
  probabilities_ = nullptr;
  partial_.clear();
  frames_ = 0;
}

size_t LmStreamDecoder::unread_bytes() const { return coder_->coder.unread_bytes(); }

// ---------------------------------------------------------------- chunks

std::string lm_encode_chunk(const LmModel& model, const torch::Tensor& codes) {
  TORCH_CHECK(codes.dim() == 2, "lm_encode_chunk expects codes [K, T], got ", codes.sizes());
  const torch::Tensor frames = codes.t().contiguous().to(torch::kInt64);  // [T, K]
  const int num_codebooks = static_cast<int>(codes.size(0));
  LmStreamEncoder encoder(model, num_codebooks);
  std::string bytes;
  const int64_t* data = frames.data_ptr<int64_t>();
  for (int64_t t = 0; t < frames.size(0); ++t) bytes += encoder.push_frame(data + t * num_codebooks);
  bytes += encoder.finish();
  return bytes;
}

void lm_decode_chunk(const LmModel& model, std::istream& in, int num_codebooks, int64_t num_frames,
                     const std::function<void(const std::vector<int64_t>& frame)>& on_frame) {
  LmStreamDecoder decoder(model, num_codebooks);
  // Bytes are read one at a time as the decoder asks for them, so `in` stops
  // exactly after the chunk (the reference's decoder reads single bytes too).
  for (int64_t t = 0; t < num_frames; ++t) {
    std::optional<std::vector<int64_t>> frame;
    while (!(frame = decoder.next_frame())) {
      const int byte = in.get();
      if (byte == std::char_traits<char>::eof()) {
        throw EcdcFormatError("truncated LM-coded data: the stream ended inside frame " +
                              std::to_string(t + 1) + " of " + std::to_string(num_frames));
      }
      const char c = static_cast<char>(byte);
      decoder.feed(&c, 1);
    }
    on_frame(*frame);
  }
}

torch::Tensor lm_decode_chunk(const LmModel& model, std::istream& in, int num_codebooks,
                              int64_t num_frames) {
  std::vector<int64_t> values;
  lm_decode_chunk(model, in, num_codebooks, num_frames, [&values](const std::vector<int64_t>& frame) {
    values.insert(values.end(), frame.begin(), frame.end());
  });
  // from_blob borrows `values`: clone (contiguous() would not copy a [K, 1] view).
  return torch::from_blob(values.data(), {num_frames, num_codebooks}, torch::kInt64)
      .t()
      .clone(torch::MemoryFormat::Contiguous);
}

}  // namespace encodec
