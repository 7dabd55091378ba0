#include "encodec/audio_stream.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <sndfile.h>
#include <soxr.h>

#include "audio_internal.h"

namespace encodec {

using detail::SndfilePtr;
using detail::TempFile;

namespace {

constexpr sf_count_t kInputBlockFrames = 1 << 15;

struct SoxrDeleter {
  void operator()(soxr* resampler) const { soxr_delete(resampler); }
};

// A file held in memory, read through libsndfile's virtual I/O.
struct MemoryFile {
  std::shared_ptr<const std::string> bytes;
  sf_count_t position = 0;

  static MemoryFile& of(void* user) { return *static_cast<MemoryFile*>(user); }
  static sf_count_t length(void* user) { return static_cast<sf_count_t>(of(user).bytes->size()); }
  static sf_count_t seek(sf_count_t offset, int whence, void* user) {
    MemoryFile& file = of(user);
    const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? file.position : length(user);
    const sf_count_t target = base + offset;
    if (target < 0 || target > length(user)) return -1;
    file.position = target;
    return target;
  }
  static sf_count_t read(void* destination, sf_count_t count, void* user) {
    MemoryFile& file = of(user);
    const sf_count_t got = std::max<sf_count_t>(0, std::min(count, length(user) - file.position));
    std::memcpy(destination, file.bytes->data() + file.position, static_cast<size_t>(got));
    file.position += got;
    return got;
  }
  static sf_count_t write(const void*, sf_count_t, void*) { return 0; }
  static sf_count_t tell(void* user) { return of(user).position; }
};

}  // namespace

struct AudioFileReader::State {
  std::string path;
  std::optional<MemoryFile> memory;  // the bytes read, for a reader over memory
  SF_VIRTUAL_IO memory_io{};
  SndfilePtr file;
  SF_INFO info{};
  int target_rate_hz = 0;
  int target_channels = 0;
  int64_t length = 0;
  std::unique_ptr<soxr, SoxrDeleter> resampler;  // null when the rates are equal

  int64_t input_frames_read = 0;
  bool input_done = false;    // the file's frames are all in
  bool conversion_done = false;  // padding fed and the resampler flushed
  std::vector<float> input_block;  // interleaved, the file's channels

  // Converted frames not returned yet, interleaved; `pending_offset` frames of
  // it were returned already (compacted now and then).
  std::vector<float> pending;
  size_t pending_offset = 0;
  int64_t frames_accepted = 0;  // converted frames produced, capped at `length`
  int64_t frames_returned = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw AudioError("cannot read audio file '" + path + "': " + what);
  }

  size_t pending_frames() const {
    return pending.size() / static_cast<size_t>(target_channels) - pending_offset;
  }

  // Keeps converted frames up to the reference's length (the resampler's tail
  // beyond it is cut, as convert_audio cuts it).
  void accept(const float* frames, size_t count) {
    const auto room = static_cast<size_t>(length - frames_accepted);
    count = std::min(count, room);
    pending.insert(pending.end(), frames, frames + count * static_cast<size_t>(target_channels));
    frames_accepted += static_cast<int64_t>(count);
  }

  // Pushes `count` interleaved frames (nullptr: flush) through libsoxr and
  // accepts what comes out. Returns the number of frames produced.
  size_t resample(const float* input, size_t count) {
    const auto channels = static_cast<size_t>(target_channels);
    const double ratio = static_cast<double>(target_rate_hz) / info.samplerate;
    std::vector<float> output((static_cast<size_t>(std::ceil(count * ratio)) + 4096) * channels);
    size_t produced = 0;
    do {
      size_t consumed = 0;
      size_t written = 0;
      const soxr_error_t error =
          soxr_process(resampler.get(), input, count, input ? &consumed : nullptr, output.data(),
                       output.size() / channels, &written);
      if (error) fail(std::string("libsoxr resampling failed: ") + error);
      accept(output.data(), written);
      produced += written;
      if (input == nullptr) return written == 0 ? produced : produced + resample(nullptr, 0);
      input += consumed * channels;
      count -= consumed;
      if (consumed == 0 && written == 0) fail("libsoxr accepted no input");
    } while (count > 0);
    return produced;
  }

  // Converts the channels of `frames` interleaved input frames exactly as
  // convert_audio does (same tensor operations on the same layout).
  std::vector<float> convert_channels(const float* interleaved, int64_t frames) const {
    const torch::Tensor planar =
        torch::from_blob(const_cast<float*>(interleaved), {frames, info.channels}, torch::kFloat32)
            .t()
            .contiguous();
    const torch::Tensor converted =
        detail::convert_channels(planar, target_channels).t().contiguous();
    const float* data = converted.data_ptr<float>();
    return std::vector<float>(data, data + converted.numel());
  }

  // Moves the conversion forward by one input block (or the end of input).
  void pump() {
    if (!input_done) {
      input_block.resize(static_cast<size_t>(kInputBlockFrames * info.channels));
      const sf_count_t got = sf_readf_float(file.get(), input_block.data(), kInputBlockFrames);
      if (got > 0) {
        input_frames_read += got;
        const std::vector<float> converted = convert_channels(input_block.data(), got);
        if (resampler) {
          resample(converted.data(), static_cast<size_t>(got));
        } else {
          accept(converted.data(), static_cast<size_t>(got));
        }
        return;
      }
      if (sf_error(file.get()) != SF_ERR_NO_ERROR) fail(sf_strerror(file.get()));
      // The header's audio length was computed from the declared count.
      if (input_frames_read != info.frames) {
        fail("the file declares " + std::to_string(info.frames) + " frames but holds " +
             std::to_string(input_frames_read));
      }
      input_done = true;
      return;
    }
    if (resampler && input_frames_read > 0) {
      // As convert_audio: a few zeros beyond the end let libsoxr produce the
      // last sample the reference's (longer, ceil) length has, then the flush.
      const int64_t extra_input =
          (info.samplerate + target_rate_hz - 1) / target_rate_hz + 1;
      const std::vector<float> zeros(static_cast<size_t>(extra_input * target_channels), 0.0f);
      resample(zeros.data(), static_cast<size_t>(extra_input));
      resample(nullptr, 0);
    }
    // Not expected, but the length contract holds regardless.
    const std::vector<float> zeros(
        static_cast<size_t>((length - frames_accepted) * target_channels), 0.0f);
    accept(zeros.data(), static_cast<size_t>(length - frames_accepted));
    conversion_done = true;
  }
};

AudioFileReader::AudioFileReader(const std::string& path, int target_rate_hz, int target_channels)
    : state_(std::make_unique<State>()) {
  state_->path = path;
  state_->file.reset(sf_open(path.c_str(), SFM_READ, &state_->info));
  start_conversion(target_rate_hz, target_channels);
}

AudioFileReader::AudioFileReader(std::shared_ptr<const std::string> bytes, const std::string& name,
                                 int target_rate_hz, int target_channels)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.path = name;
  s.memory.emplace();
  s.memory->bytes = std::move(bytes);
  s.memory_io = {&MemoryFile::length, &MemoryFile::seek, &MemoryFile::read, &MemoryFile::write,
                 &MemoryFile::tell};
  s.file.reset(sf_open_virtual(&s.memory_io, SFM_READ, &s.info, &*s.memory));
  start_conversion(target_rate_hz, target_channels);
}

void AudioFileReader::start_conversion(int target_rate_hz, int target_channels) {
  State& s = *state_;
  const std::string& path = s.path;
  if (!s.file) s.fail(sf_strerror(nullptr));
  if (s.info.channels < 1 || s.info.samplerate < 1) {
    s.fail(std::to_string(s.info.channels) + " channels at " + std::to_string(s.info.samplerate) +
           " Hz");
  }
  if (target_channels != 1 && !(target_channels == 2 && s.info.channels <= 2)) {
    throw AudioError("cannot convert '" + path + "' from " + std::to_string(s.info.channels) +
                     " to " + std::to_string(target_channels) + " channels");
  }
  // The length must be known before the first block (it opens the .ecdc
  // header), so it comes from the declared count; pump() checks it at the end.
  if (s.info.frames < 0 || s.info.frames == SF_COUNT_MAX) {
    s.fail("the file does not declare its length (a pipe or a stream format?)");
  }
  s.target_rate_hz = target_rate_hz;
  s.target_channels = target_channels;
  s.length = resampled_length(s.info.frames, s.info.samplerate, target_rate_hz);
  if (s.info.samplerate != target_rate_hz) {
    const soxr_io_spec_t io_spec = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    const soxr_quality_spec_t quality_spec = soxr_quality_spec(SOXR_VHQ, 0);
    soxr_error_t error = nullptr;
    s.resampler.reset(soxr_create(s.info.samplerate, target_rate_hz,
                                  static_cast<unsigned>(target_channels), &error, &io_spec,
                                  &quality_spec, nullptr));
    if (error) s.fail(std::string("cannot create the libsoxr resampler: ") + error);
  }
}

AudioFileReader::~AudioFileReader() = default;
AudioFileReader::AudioFileReader(AudioFileReader&&) noexcept = default;
AudioFileReader& AudioFileReader::operator=(AudioFileReader&&) noexcept = default;

int AudioFileReader::input_sample_rate_hz() const { return state_->info.samplerate; }
int AudioFileReader::input_channels() const { return state_->info.channels; }
int64_t AudioFileReader::input_frames() const { return state_->info.frames; }
int64_t AudioFileReader::length() const { return state_->length; }
int64_t AudioFileReader::frames_read() const { return state_->frames_returned; }

std::optional<torch::Tensor> AudioFileReader::read(int64_t max_frames) {
  State& s = *state_;
  if (max_frames < 1) throw std::invalid_argument("AudioFileReader::read: max_frames < 1");
  while (s.pending_frames() == 0 && !s.conversion_done) s.pump();
  if (s.pending_frames() == 0) return std::nullopt;
  const auto count = std::min<size_t>(s.pending_frames(), static_cast<size_t>(max_frames));
  const auto channels = static_cast<size_t>(s.target_channels);
  const torch::Tensor block =
      torch::from_blob(s.pending.data() + s.pending_offset * channels,
                       {static_cast<int64_t>(count), s.target_channels}, torch::kFloat32)
          .t()
          .clone(torch::MemoryFormat::Contiguous);
  s.pending_offset += count;
  s.frames_returned += static_cast<int64_t>(count);
  if (s.pending_offset * 2 >= s.pending.size() / channels) {  // amortized O(1) compaction
    s.pending.erase(s.pending.begin(),
                    s.pending.begin() + static_cast<std::ptrdiff_t>(s.pending_offset * channels));
    s.pending_offset = 0;
  }
  return block;
}

struct WavFileWriter::State {
  std::string path;
  int sample_rate_hz = 0;
  int channels = 0;
  WavFileOptions options;
  std::optional<TempFile> output;   // the WAV being written (at commit() with rescale)
  SndfilePtr wav;
  std::optional<TempFile> scratch;  // rescale: raw interleaved float32 of the first pass
  int64_t frames = 0;
  float peak = 0.0f;
  bool committed = false;
  std::vector<int16_t> pcm;

  void open_wav() {
    output.emplace(path);
    SF_INFO info{};
    info.samplerate = sample_rate_hz;
    info.channels = channels;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    wav.reset(sf_open_fd(output->fd(), SFM_WRITE, &info, /*close_desc=*/SF_FALSE));
    if (!wav) {
      throw AudioError("cannot write '" + path + "' as " + std::to_string(channels) +
                       "-channel " + std::to_string(sample_rate_hz) +
                       " Hz 16-bit WAV: " + sf_strerror(nullptr));
    }
  }

  // Interleaved float frames -> int16 as to_pcm16 converts them (gain: -r's
  // scale; none: clamp to the limit).
  void write_pcm(const float* interleaved, size_t count, std::optional<float> gain) {
    pcm.resize(count * static_cast<size_t>(channels));
    for (size_t i = 0; i < pcm.size(); ++i) {
      const float x = interleaved[i];
      const float limited = gain ? x * *gain : std::clamp(x, -detail::kWavLimit, detail::kWavLimit);
      pcm[i] = detail::sox_float_to_int16(limited);
    }
    const auto frames_to_write = static_cast<sf_count_t>(count);
    if (sf_writef_short(wav.get(), pcm.data(), frames_to_write) != frames_to_write) {
      throw AudioError("cannot write '" + path + "': " + sf_strerror(wav.get()));
    }
  }
};

WavFileWriter::WavFileWriter(const std::string& path, int sample_rate_hz, int channels,
                             const WavFileOptions& options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  if (sample_rate_hz <= 0 || channels < 1) {
    throw AudioError("cannot write '" + path + "': invalid format " + std::to_string(channels) +
                     " channels at " + std::to_string(sample_rate_hz) + " Hz");
  }
  s.path = path;
  s.sample_rate_hz = sample_rate_hz;
  s.channels = channels;
  s.options = options;
  if (options.rescale) {
    s.scratch.emplace(path);
  } else {
    s.open_wav();
  }
}

WavFileWriter::~WavFileWriter() = default;

void WavFileWriter::write(const torch::Tensor& samples) {
  State& s = *state_;
  if (s.committed) throw std::logic_error("WavFileWriter::write after commit");
  if (samples.dim() != 2 || samples.size(0) != s.channels || !samples.is_floating_point()) {
    throw AudioError("cannot write '" + s.path + "': expected float samples [" +
                     std::to_string(s.channels) + ", n], got " + c10::str(samples.sizes()));
  }
  const torch::Tensor interleaved = samples.to(torch::kFloat32).t().contiguous();
  const float* data = interleaved.data_ptr<float>();
  const auto count = static_cast<size_t>(interleaved.numel());
  for (size_t i = 0; i < count; ++i) {
    if (!std::isnan(data[i])) s.peak = std::max(s.peak, std::abs(data[i]));
  }
  if (s.scratch) {
    detail::write_all(*s.scratch, data, count * sizeof(float));
  } else {
    s.write_pcm(data, static_cast<size_t>(samples.size(1)), std::nullopt);
  }
  s.frames += samples.size(1);
}

void WavFileWriter::commit() {
  State& s = *state_;
  if (s.committed) return;
  if (s.scratch) {
    // Second pass: the peak of the whole signal is known now.
    const float gain = detail::rescale_gain(s.peak);
    s.open_wav();
    if (::lseek(s.scratch->fd(), 0, SEEK_SET) != 0) s.scratch->fail("rewinding the scratch file failed");
    constexpr size_t kBlockFrames = 1 << 15;
    std::vector<float> block(kBlockFrames * static_cast<size_t>(s.channels));
    const size_t frame_bytes = sizeof(float) * static_cast<size_t>(s.channels);
    size_t buffered_bytes = 0;
    int64_t frames_left = s.frames;
    while (frames_left > 0) {
      const ssize_t got = ::read(s.scratch->fd(), reinterpret_cast<char*>(block.data()) + buffered_bytes,
                                 block.size() * sizeof(float) - buffered_bytes);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) s.scratch->fail("reading the scratch file back failed");
      buffered_bytes += static_cast<size_t>(got);
      const size_t whole_frames = buffered_bytes / frame_bytes;
      s.write_pcm(block.data(), whole_frames, gain);
      frames_left -= static_cast<int64_t>(whole_frames);
      const size_t rest = buffered_bytes - whole_frames * frame_bytes;
      std::memmove(block.data(), reinterpret_cast<char*>(block.data()) + whole_frames * frame_bytes, rest);
      buffered_bytes = rest;
    }
    s.scratch->discard();
  }
  // sf_close writes the final header sizes, so its result matters.
  if (sf_close(s.wav.release()) != 0) {
    throw AudioError("cannot write '" + s.path + "': finishing the WAV header failed");
  }
  s.output->commit();
  s.committed = true;
}

int64_t WavFileWriter::frames_written() const { return state_->frames; }
float WavFileWriter::peak() const { return state_->peak; }

}  // namespace encodec
