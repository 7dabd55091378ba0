// Block-wise audio I/O against the whole-file functions: the reader's converted
// blocks against convert_audio of the whole file (rates and channel counts),
// its length, known before reading, against the reference's formula; the WAV
// writer's bytes against write_wav_atomic's (clamped and rescaled), and nothing
// left on disk without commit().
#include "encodec/audio_stream.h"

#include <gtest/gtest.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "golden.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;
using ::encodec::testing::make_temp_dir;
using ::encodec::testing::read_file_bytes;

// Tones plus noise, [channels, frames], each channel different.
torch::Tensor test_audio(int channels, int64_t frames, int sample_rate_hz, uint64_t seed = 7) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  const torch::Tensor time = torch::arange(frames, torch::kFloat64) / sample_rate_hz;
  std::vector<torch::Tensor> rows;
  for (int c = 0; c < channels; ++c) {
    const double hz = 220.0 * (c + 1) + 17.0;
    rows.push_back((0.4 * torch::sin(2 * M_PI * hz * time)).to(torch::kFloat32) +
                   0.05f * torch::randn({frames}, generator, torch::kFloat32));
  }
  return torch::stack(rows);
}

// Everything the reader yields, in blocks of at most `block_frames`.
torch::Tensor read_all(AudioFileReader& reader, int64_t block_frames) {
  std::vector<torch::Tensor> blocks;
  while (auto block = reader.read(block_frames)) {
    EXPECT_GT(block->size(1), 0);
    EXPECT_LE(block->size(1), block_frames);
    blocks.push_back(*block);
  }
  if (blocks.empty()) return torch::zeros({0});
  return torch::cat(blocks, 1);
}

// The reference's length (torchaudio: ceil(new * length / orig) with the rates
// reduced by their gcd), computed here in long double, independently of
// resampled_length's integer arithmetic.
int64_t reference_length(int64_t frames, int from_hz, int to_hz) {
  const int divisor = std::gcd(from_hz, to_hz);
  const long double scaled = static_cast<long double>(to_hz / divisor) * frames;
  return static_cast<int64_t>(std::ceil(scaled / (from_hz / divisor)));
}

struct Conversion {
  int input_rate_hz;
  int input_channels;
  int target_rate_hz;
  int target_channels;
  int64_t input_frames;
};

void PrintTo(const Conversion& c, std::ostream* out) {
  *out << c.input_frames << " frames, " << c.input_channels << " channels at " << c.input_rate_hz
       << " Hz to " << c.target_channels << " at " << c.target_rate_hz;
}

class BlockConversion : public ::testing::TestWithParam<Conversion> {};

TEST_P(BlockConversion, EqualsTheWholeFileConversion) {
  const Conversion& c = GetParam();
  const std::string dir = make_temp_dir("audio_stream_conversion");
  const std::string path = dir + "/in.wav";
  testing::write_pcm16(path, test_audio(c.input_channels, c.input_frames, c.input_rate_hz), c.input_rate_hz);
  const Audio whole = read_audio(path);
  const torch::Tensor expected =
      convert_audio(whole.samples, whole.sample_rate_hz, c.target_rate_hz, c.target_channels);

  // Blocks smaller and larger than the reader's input blocks (32768 frames).
  for (const int64_t block_frames : {int64_t{997}, int64_t{100000}}) {
    SCOPED_TRACE("blocks of " + std::to_string(block_frames));
    AudioFileReader reader(path, c.target_rate_hz, c.target_channels);
    EXPECT_EQ(reader.input_frames(), c.input_frames);
    EXPECT_EQ(reader.length(), reference_length(c.input_frames, c.input_rate_hz, c.target_rate_hz));
    const torch::Tensor actual = read_all(reader, block_frames);
    EXPECT_EQ(reader.frames_read(), reader.length());
    ASSERT_EQ(actual.sizes(), expected.sizes());
    const double max_difference = (actual - expected).abs().max().item<double>();
    EXPECT_LE(max_difference, 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(
    RatesAndChannels, BlockConversion,
    ::testing::Values(Conversion{44100, 2, 24000, 1, 100003}, Conversion{44100, 1, 48000, 2, 77777},
                      Conversion{44100, 2, 48000, 2, 88201}, Conversion{22050, 1, 24000, 1, 54321},
                      Conversion{22050, 2, 48000, 2, 40009}, Conversion{8000, 1, 24000, 1, 33331},
                      Conversion{8000, 2, 48000, 2, 16001}, Conversion{24000, 2, 24000, 1, 70001},
                      Conversion{48000, 1, 48000, 2, 50000}, Conversion{96000, 2, 24000, 1, 96001}),
    [](const ::testing::TestParamInfo<Conversion>& info) {
      const Conversion& c = info.param;
      return std::to_string(c.input_rate_hz) + "Hz" + std::to_string(c.input_channels) + "ch_to_" +
             std::to_string(c.target_rate_hz) + "Hz" + std::to_string(c.target_channels) + "ch";
    });

TEST(AudioFileReader, LengthIsKnownBeforeReadingForOddRatesAndCounts) {
  const std::string dir = make_temp_dir("audio_stream_length");
  for (const int rate_hz : {44100, 22050, 8000, 11025, 32000, 37800}) {
    for (const int64_t frames : {int64_t{1}, int64_t{2}, int64_t{441}, int64_t{12347}}) {
      SCOPED_TRACE(std::to_string(frames) + " frames at " + std::to_string(rate_hz) + " Hz");
      const std::string path = dir + "/in.wav";
      testing::write_pcm16(path, test_audio(1, frames, rate_hz), rate_hz);
      for (const int target_hz : {24000, 48000}) {
        AudioFileReader reader(path, target_hz, 1);
        const int64_t expected = reference_length(frames, rate_hz, target_hz);
        EXPECT_EQ(reader.length(), expected);
        EXPECT_EQ(read_all(reader, 4096).size(-1), expected);
      }
    }
  }
}

// Over a file's bytes in memory (an HTTP upload): bit for bit the file's
// samples, for WAV and FLAC (whose decoder seeks), and errors name the given name.
TEST(AudioFileReader, BytesInMemoryGiveTheFilesSamples) {
  const std::string dir = make_temp_dir("audio_stream_memory");
  for (const char* extension : {".wav", ".flac"}) {
    SCOPED_TRACE(extension);
    const std::string path = dir + "/in" + extension;
    const torch::Tensor audio = test_audio(2, 50001, 44100);
    if (std::string(extension) == ".wav") {
      testing::write_pcm16(path, audio, 44100);
    } else {
      // libsndfile picks the format from the extension.
      SF_INFO info{};
      info.samplerate = 44100;
      info.channels = 2;
      info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
      SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
      ASSERT_NE(file, nullptr) << sf_strerror(nullptr);
      const torch::Tensor interleaved = audio.t().contiguous();
      sf_writef_float(file, interleaved.data_ptr<float>(), 50001);
      sf_close(file);
    }
    auto bytes = std::make_shared<const std::string>(testing::read_file_bytes(path));
    AudioFileReader from_file(path, 24000, 1);
    AudioFileReader from_memory(bytes, "the upload", 24000, 1);
    EXPECT_EQ(from_memory.input_frames(), 50001);
    EXPECT_EQ(from_memory.length(), from_file.length());
    const torch::Tensor expected = read_all(from_file, 4096);
    const torch::Tensor actual = read_all(from_memory, 4096);
    ASSERT_EQ(actual.sizes(), expected.sizes());
    EXPECT_TRUE(torch::equal(actual, expected));
  }
  try {
    AudioFileReader reader(std::make_shared<const std::string>("not audio"), "the upload", 24000, 1);
    ADD_FAILURE() << "no error";
  } catch (const AudioError& error) {
    EXPECT_NE(std::string(error.what()).find("'the upload'"), std::string::npos) << error.what();
  }
}

TEST(AudioFileReader, EmptyFileYieldsNothing) {
  const std::string dir = make_temp_dir("audio_stream_empty");
  testing::write_pcm16(dir + "/empty.wav", torch::zeros({1, 0}), 44100);
  AudioFileReader reader(dir + "/empty.wav", 24000, 1);
  EXPECT_EQ(reader.length(), 0);
  EXPECT_FALSE(reader.read().has_value());
}

TEST(AudioFileReader, ErrorsNameTheFile) {
  const std::string dir = make_temp_dir("audio_stream_errors");
  try {
    AudioFileReader reader(dir + "/missing.wav", 24000, 1);
    ADD_FAILURE() << "no error";
  } catch (const AudioError& error) {
    EXPECT_NE(std::string(error.what()).find("missing.wav"), std::string::npos) << error.what();
  }
  SF_INFO info{};
  info.samplerate = 16000;
  info.channels = 3;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open((dir + "/three.wav").c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr);
  const std::vector<short> frames(30, 0);
  sf_writef_short(file, frames.data(), 10);
  sf_close(file);
  try {
    AudioFileReader reader(dir + "/three.wav", 48000, 2);
    ADD_FAILURE() << "no error";
  } catch (const AudioError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("three.wav"), std::string::npos) << what;
    EXPECT_NE(what.find("3 to 2 channels"), std::string::npos) << what;
  }
}

// Audio that exercises the conversion: beyond +-0.99 and +-1, exact limits, NaN.
torch::Tensor awkward_audio(int channels, int64_t frames, float gain) {
  torch::Tensor audio = test_audio(channels, frames, 48000, 3) * gain;
  float* data = audio.data_ptr<float>();
  data[0] = 0.99f;
  data[1] = -0.99f;
  data[2] = 1.0f;
  data[3] = std::numeric_limits<float>::quiet_NaN();
  data[frames - 1] = -1.5f;
  return audio;
}

// Writes `audio` through WavFileWriter in uneven blocks.
void write_in_blocks(const std::string& path, const torch::Tensor& audio, int sample_rate_hz,
                     bool rescale) {
  WavFileOptions options;
  options.rescale = rescale;
  WavFileWriter writer(path, sample_rate_hz, static_cast<int>(audio.size(0)), options);
  int64_t offset = 0;
  for (int64_t block = 1; offset < audio.size(1); block = block * 3 + 1) {
    const int64_t count = std::min(block, audio.size(1) - offset);
    writer.write(audio.narrow(1, offset, count));
    offset += count;
  }
  EXPECT_EQ(writer.frames_written(), audio.size(1));
  writer.commit();
}

TEST(WavFileWriter, BytesEqualTheWholeFileWriterClampedAndRescaled) {
  const std::string dir = make_temp_dir("audio_stream_wav");
  for (const int channels : {1, 2}) {
    for (const float gain : {0.5f, 3.0f}) {
      for (const bool rescale : {false, true}) {
        SCOPED_TRACE(std::to_string(channels) + " channels, gain " + std::to_string(gain) +
                     (rescale ? ", rescaled" : ", clamped"));
        const torch::Tensor audio = awkward_audio(channels, 100003, gain);
        WavWriteOptions whole_options;
        whole_options.rescale = rescale;
        write_wav_atomic(dir + "/whole.wav", audio, 48000, whole_options);
        write_in_blocks(dir + "/blocks.wav", audio, 48000, rescale);
        EXPECT_TRUE(read_file_bytes(dir + "/blocks.wav") == read_file_bytes(dir + "/whole.wav"));
        EXPECT_EQ(testing::files_in(dir), (std::vector<std::string>{"blocks.wav", "whole.wav"}));
      }
    }
  }
}

TEST(WavFileWriter, PeakIsTheLargestMagnitudeIgnoringNaN) {
  const std::string dir = make_temp_dir("audio_stream_peak");
  WavFileWriter writer(dir + "/out.wav", 24000, 1, {});
  writer.write(torch::tensor({{0.25f, -0.75f, std::numeric_limits<float>::quiet_NaN()}}));
  writer.write(torch::tensor({{0.5f}}));
  EXPECT_EQ(writer.peak(), 0.75f);
}

TEST(WavFileWriter, WithoutCommitNothingIsLeft) {
  const std::string dir = make_temp_dir("audio_stream_uncommitted");
  for (const bool rescale : {false, true}) {
    WavFileOptions options;
    options.rescale = rescale;
    {
      WavFileWriter writer(dir + "/out.wav", 24000, 1, options);
      writer.write(test_audio(1, 5000, 24000));
      EXPECT_EQ(testing::files_in(dir).size(), 1u);  // the temporary (or scratch) file
    }
    EXPECT_TRUE(testing::files_in(dir).empty());
  }
}

TEST(WavFileWriter, WrongShapeNamesTheFile) {
  const std::string dir = make_temp_dir("audio_stream_shape");
  WavFileWriter writer(dir + "/out.wav", 24000, 2, {});
  try {
    writer.write(torch::zeros({1, 10}));
    ADD_FAILURE() << "no error";
  } catch (const AudioError& error) {
    EXPECT_NE(std::string(error.what()).find("out.wav"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace encodec
