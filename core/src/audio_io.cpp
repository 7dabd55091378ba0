#include "encodec/audio_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <sndfile.h>
#include <soxr.h>

#include "audio_internal.h"

namespace encodec {
namespace detail {

std::string system_error_text() { return std::strerror(errno); }

TempFile::TempFile(const std::string& final_path) : final_path_(final_path) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device seed;
  std::mt19937 random(seed());
  std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 2);
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    path_ = final_path + ".tmp-";
    for (int i = 0; i < 6; ++i) path_ += kAlphabet[pick(random)];
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) {
    throw AudioError("cannot write '" + final_path + "': cannot create a temporary file: " +
                     system_error_text());
  }
  remove_on_signal_ = RemoveOnSignal(path_);
}

TempFile::~TempFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

void TempFile::commit() {
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close failed");
  if (std::rename(path_.c_str(), final_path_.c_str()) != 0) fail("rename failed");
  committed_ = true;
  remove_on_signal_.release();
}

void TempFile::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!committed_) ::unlink(path_.c_str());
  committed_ = true;  // nothing left to remove
  remove_on_signal_.release();
}

void TempFile::fail(const std::string& what) const {
  throw AudioError("cannot write '" + final_path_ + "': " + what + ": " + system_error_text());
}

void write_all(const TempFile& temp, const void* data, size_t bytes) {
  const char* next = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t written = ::write(temp.fd(), next, bytes);
    if (written < 0) {
      if (errno == EINTR) continue;
      temp.fail("write failed");
    }
    next += written;
    bytes -= static_cast<size_t>(written);
  }
}

// torchaudio 0.13's save (sox_io backend) turns float x into a sox sample
// s = trunc(clamp(x * 2^31)) and sox's 16-bit writer then computes
// (s + 2^15) >> 16, clipping at 32767: x * 32768 rounded half up. libsndfile's
// own float->int16 path scales by 32767 (no clipping) or 32768 (clipping), so
// we convert here and hand libsndfile integers: the output matches the reference.
int16_t sox_float_to_int16(float x) {
  if (std::isnan(x)) return 0;  // sox's behaviour here is undefined; silence is safest
  constexpr double kInt32Min = std::numeric_limits<int32_t>::min();
  constexpr double kInt32Max = std::numeric_limits<int32_t>::max();
  const auto sample =
      static_cast<int64_t>(std::clamp(static_cast<double>(x) * 2147483648.0, kInt32Min, kInt32Max));
  if (sample > std::numeric_limits<int32_t>::max() - (1 << 15)) return 32767;
  const int64_t shifted = sample + (1 << 15);  // >= INT32_MIN + 2^15: floor division by 2^16
  const int64_t quotient = shifted >= 0 ? shifted / 65536 : -((-shifted + 65535) / 65536);
  return static_cast<int16_t>(quotient);
}

torch::Tensor convert_channels(const torch::Tensor& samples, int target_channels) {
  if (samples.dim() != 2 || samples.size(0) < 1) {
    throw AudioError("audio must be [channels, frames] with at least one channel, got shape " +
                     c10::str(samples.sizes()));
  }
  const int64_t channels = samples.size(0);
  torch::Tensor converted = samples.to(torch::kFloat32);
  if (target_channels == 1) {
    converted = converted.mean(0, /*keepdim=*/true);
  } else if (target_channels == 2 && (channels == 1 || channels == 2)) {
    converted = converted.expand({2, samples.size(1)});
  } else {
    throw AudioError("cannot convert audio from " + std::to_string(channels) + " to " +
                     std::to_string(target_channels) + " channels");
  }
  return converted.contiguous();
}

}  // namespace detail

namespace {

using detail::SndfilePtr;
using detail::system_error_text;
using detail::TempFile;

// Interleaved int16 frames of `samples` ([channels, frames]) after the
// reference's save_audio limiting, done in float32 exactly as torch does it.
std::vector<int16_t> to_pcm16(const torch::Tensor& samples, bool rescale) {
  const torch::Tensor frames_first = samples.to(torch::kFloat32).t().contiguous();
  const float* data = frames_first.data_ptr<float>();
  const auto count = static_cast<size_t>(frames_first.numel());
  constexpr float kLimit = detail::kWavLimit;
  float scale = 1.0f;
  if (rescale) {
    float peak = 0.0f;
    for (size_t i = 0; i < count; ++i) {
      if (!std::isnan(data[i])) peak = std::max(peak, std::abs(data[i]));
    }
    scale = detail::rescale_gain(peak);
  }
  std::vector<int16_t> pcm(count);
  for (size_t i = 0; i < count; ++i) {
    const float limited = rescale ? data[i] * scale : std::clamp(data[i], -kLimit, kLimit);
    pcm[i] = detail::sox_float_to_int16(limited);
  }
  return pcm;
}

// Interleaved [frames, channels] floats as a float32 [channels, frames] tensor
// that owns its memory. (A plain .contiguous() would, for one channel, return a
// view of `data` itself.)
torch::Tensor deinterleave(float* data, int64_t frames, int64_t channels) {
  return torch::from_blob(data, {frames, channels}, torch::kFloat32)
      .t()
      .clone(torch::MemoryFormat::Contiguous);
}

// Resamples float32 [channels, frames] with libsoxr's very-high-quality filter
// and returns everything it produces, including the flushed tail.
torch::Tensor soxr_resample(const torch::Tensor& samples, int from_rate_hz, int to_rate_hz) {
  const auto channels = static_cast<size_t>(samples.size(0));
  const torch::Tensor interleaved = samples.t().contiguous();
  const soxr_io_spec_t io_spec = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality_spec = soxr_quality_spec(SOXR_VHQ, 0);
  soxr_error_t error = nullptr;
  std::unique_ptr<soxr, decltype(&soxr_delete)> resampler(
      soxr_create(from_rate_hz, to_rate_hz, static_cast<unsigned>(channels), &error, &io_spec,
                  &quality_spec, nullptr),
      &soxr_delete);
  if (error) throw AudioError(std::string("cannot create the libsoxr resampler: ") + error);

  const float* input = interleaved.data_ptr<float>();
  size_t input_left = static_cast<size_t>(samples.size(1));
  std::vector<float> output;
  size_t produced = 0;  // frames
  constexpr size_t kMinFreeFrames = 16384;
  output.resize((resampled_length(samples.size(1), from_rate_hz, to_rate_hz) + kMinFreeFrames) *
                channels);
  // Feed all the input, then flush (input NULL) until no more output comes.
  while (true) {
    if (output.size() / channels - produced < kMinFreeFrames) {
      output.resize(output.size() * 2);
    }
    const bool flushing = input_left == 0;
    size_t consumed = 0;
    size_t written = 0;
    error = soxr_process(resampler.get(), flushing ? nullptr : input, input_left, &consumed,
                         output.data() + produced * channels, output.size() / channels - produced,
                         &written);
    if (error) throw AudioError(std::string("libsoxr resampling failed: ") + error);
    input += consumed * channels;
    input_left -= consumed;
    produced += written;
    if (flushing && written == 0) break;
  }
  return deinterleave(output.data(), static_cast<int64_t>(produced),
                      static_cast<int64_t>(channels));
}

}  // namespace

Audio read_audio(const std::string& path) {
  SF_INFO info{};
  SndfilePtr file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) {
    throw AudioError("cannot read audio file '" + path + "': " + sf_strerror(nullptr));
  }
  if (info.channels < 1 || info.samplerate < 1) {
    throw AudioError("cannot read audio file '" + path + "': " + std::to_string(info.channels) +
                     " channels at " + std::to_string(info.samplerate) + " Hz");
  }
  // Normalised float reading (libsndfile's default) gives int / 2^(bits-1).
  // Read until the end rather than trusting info.frames, which some formats
  // only estimate.
  const auto channels = static_cast<size_t>(info.channels);
  constexpr sf_count_t kBlockFrames = 1 << 16;
  std::vector<float> interleaved;
  size_t frames = 0;
  while (true) {
    interleaved.resize((frames + kBlockFrames) * channels);
    const sf_count_t got =
        sf_readf_float(file.get(), interleaved.data() + frames * channels, kBlockFrames);
    if (got <= 0) break;
    frames += static_cast<size_t>(got);
  }
  if (sf_error(file.get()) != SF_ERR_NO_ERROR) {
    throw AudioError("cannot read audio file '" + path + "': " + sf_strerror(file.get()));
  }
  Audio audio;
  audio.sample_rate_hz = info.samplerate;
  audio.samples =
      deinterleave(interleaved.data(), static_cast<int64_t>(frames), static_cast<int64_t>(channels));
  return audio;
}

int64_t resampled_length(int64_t length, int from_rate_hz, int to_rate_hz) {
  if (from_rate_hz <= 0 || to_rate_hz <= 0) {
    throw AudioError("cannot resample from " + std::to_string(from_rate_hz) + " Hz to " +
                     std::to_string(to_rate_hz) + " Hz");
  }
  if (length < 0) throw AudioError("negative audio length " + std::to_string(length));
  const int divisor = std::gcd(from_rate_hz, to_rate_hz);
  const int64_t from = from_rate_hz / divisor;
  const int64_t to = to_rate_hz / divisor;
  // torchaudio computes ceil(to * length / from) in double; exact integer
  // arithmetic agrees for any length below about 2^52 / from samples.
  const __int128 scaled = static_cast<__int128>(length) * to;
  return static_cast<int64_t>((scaled + from - 1) / from);
}

torch::Tensor convert_audio(const torch::Tensor& samples, int sample_rate_hz,
                            int target_rate_hz, int target_channels) {
  const torch::Tensor converted = detail::convert_channels(samples, target_channels);
  const int64_t length = samples.size(1);
  const int64_t target_length = resampled_length(length, sample_rate_hz, target_rate_hz);
  if (sample_rate_hz == target_rate_hz || length == 0) return converted;
  // soxr's flushed output has round(length * to / from) samples, torchaudio's
  // resampler (the reference) ceil(length * to / from), and the model depends on
  // the exact count (header audio length, frame count). torchaudio treats the
  // signal as zero beyond its end, so we append a few zeros for soxr to produce
  // the missing last sample from, then cut at the reference's length.
  const int64_t extra_input = (sample_rate_hz + target_rate_hz - 1) / target_rate_hz + 1;
  torch::Tensor resampled = soxr_resample(
      torch::constant_pad_nd(converted, {0, extra_input}, 0.0), sample_rate_hz, target_rate_hz);
  if (resampled.size(1) < target_length) {  // not expected; keep the length contract anyway
    resampled = torch::constant_pad_nd(resampled, {0, target_length - resampled.size(1)}, 0.0);
  }
  return resampled.narrow(1, 0, target_length).contiguous();
}

void write_wav_atomic(const std::string& path, const torch::Tensor& samples, int sample_rate_hz,
                      const WavWriteOptions& options) {
  if (samples.dim() != 2 || samples.size(0) < 1 || !samples.is_floating_point()) {
    throw AudioError("cannot write '" + path + "': samples must be float [channels, frames]");
  }
  if (sample_rate_hz <= 0) {
    throw AudioError("cannot write '" + path + "': invalid sample rate " +
                     std::to_string(sample_rate_hz));
  }
  const std::vector<int16_t> pcm = to_pcm16(samples, options.rescale);
  const sf_count_t frames = samples.size(1);

  TempFile temp(path);
  SF_INFO info{};
  info.samplerate = sample_rate_hz;
  info.channels = static_cast<int>(samples.size(0));
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SndfilePtr file(sf_open_fd(temp.fd(), SFM_WRITE, &info, /*close_desc=*/SF_FALSE));
  if (!file) {
    throw AudioError("cannot write '" + path + "' as " + std::to_string(info.channels) +
                     "-channel " + std::to_string(sample_rate_hz) +
                     " Hz 16-bit WAV: " + sf_strerror(nullptr));
  }
  if (sf_writef_short(file.get(), pcm.data(), frames) != frames) {
    throw AudioError("cannot write '" + path + "': " + sf_strerror(file.get()));
  }
  // sf_close writes the final header sizes, so its result matters.
  if (sf_close(file.release()) != 0) {
    throw AudioError("cannot write '" + path + "': finishing the WAV header failed");
  }
  temp.commit();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  TempFile temp(path);
  detail::write_all(temp, bytes.data(), bytes.size());
  temp.commit();
}

void write_stream_atomic(const std::string& path,
                         const std::function<void(std::ostream&)>& write) {
  TempFile temp(path);
  std::ofstream out(temp.path(), std::ios::binary | std::ios::trunc);
  if (!out) temp.fail("cannot open the temporary file");
  write(out);
  out.flush();
  if (!out) temp.fail("write failed");
  out.close();
  if (out.fail()) temp.fail("close failed");
  temp.commit();
}

}  // namespace encodec
