// Audio I/O: WAV reading and writing checked against the bytes of the files
// (parsed here independently of libsndfile), resampling against analytic sines.
#include "encodec/audio_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <sndfile.h>

#include "golden.h"

namespace encodec {
namespace {

namespace fs = std::filesystem;
using ::encodec::testing::golden_path;
using ::encodec::testing::make_temp_dir;
using ::encodec::testing::read_file_bytes;

constexpr double kPi = 3.14159265358979323846;

// The facts of a PCM WAV file, read straight from its RIFF chunks.
struct WavFacts {
  int format_tag = 0;
  int channels = 0;
  int sample_rate = 0;
  int bits = 0;
  std::vector<int16_t> samples;  // interleaved, when bits == 16
};

uint32_t little_endian(const std::string& bytes, size_t offset, int size) {
  uint32_t value = 0;
  for (int i = size - 1; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(bytes.at(offset + i));
  }
  return value;
}

WavFacts parse_wav(const std::string& path) {
  const std::string bytes = read_file_bytes(path);
  EXPECT_EQ(bytes.substr(0, 4), "RIFF");
  EXPECT_EQ(bytes.substr(8, 4), "WAVE");
  WavFacts facts;
  for (size_t offset = 12; offset + 8 <= bytes.size();) {
    const std::string id = bytes.substr(offset, 4);
    const uint32_t size = little_endian(bytes, offset + 4, 4);
    const size_t body = offset + 8;
    if (id == "fmt ") {
      facts.format_tag = static_cast<int>(little_endian(bytes, body, 2));
      facts.channels = static_cast<int>(little_endian(bytes, body + 2, 2));
      facts.sample_rate = static_cast<int>(little_endian(bytes, body + 4, 4));
      facts.bits = static_cast<int>(little_endian(bytes, body + 14, 2));
    } else if (id == "data") {
      for (size_t i = 0; i + 1 < size; i += 2) {
        facts.samples.push_back(static_cast<int16_t>(little_endian(bytes, body + i, 2)));
      }
    }
    offset = body + size + (size & 1);
  }
  return facts;
}

// The AudioError message of `action`, or a test failure if it does not throw one.
template <typename Action>
std::string audio_error_of(Action action) {
  try {
    action();
  } catch (const AudioError& error) {
    return error.what();
  }
  ADD_FAILURE() << "no AudioError thrown";
  return "";
}

torch::Tensor sine(double frequency_hz, int sample_rate_hz, int64_t frames, double amplitude,
                   double phase = 0.0) {
  torch::Tensor time = torch::arange(frames, torch::kFloat64) / sample_rate_hz;
  return (amplitude * torch::sin(2 * kPi * frequency_hz * time + phase)).to(torch::kFloat32);
}

// Signal-to-noise ratio of `actual` against `expected`, in dB.
double snr_db(const torch::Tensor& actual, const torch::Tensor& expected) {
  const auto reference = expected.to(torch::kFloat64);
  const double noise = (actual.to(torch::kFloat64) - reference).pow(2).sum().item<double>();
  return 10 * std::log10(reference.pow(2).sum().item<double>() / noise);
}

TEST(ReadAudio, GoldenInputsMatchTheirWavBytes) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const char* name : {"inputs/speech_24k.wav", "inputs/music_stereo_48k.wav",
                           "inputs/chirp_odd_24k.wav", "inputs/tiny_24k.wav"}) {
    SCOPED_TRACE(name);
    const std::string path = golden_path(name);
    const WavFacts facts = parse_wav(path);
    ASSERT_EQ(facts.bits, 16);
    const Audio audio = read_audio(path);
    EXPECT_EQ(audio.sample_rate_hz, facts.sample_rate);
    EXPECT_EQ(audio.samples.dtype(), torch::kFloat32);
    ASSERT_EQ(audio.samples.dim(), 2);
    ASSERT_EQ(audio.samples.size(0), facts.channels);
    const int64_t frames = static_cast<int64_t>(facts.samples.size()) / facts.channels;
    ASSERT_EQ(audio.samples.size(1), frames);
    // Every value is exactly the file's int16 / 32768, as torchaudio reads it.
    const auto samples = audio.samples.accessor<float, 2>();
    for (int64_t t = 0; t < frames; ++t) {
      for (int c = 0; c < facts.channels; ++c) {
        ASSERT_EQ(samples[c][t], facts.samples[t * facts.channels + c] / 32768.0f)
            << "c=" << c << " t=" << t;
      }
    }
  }
  // The README's stated facts.
  EXPECT_EQ(read_audio(golden_path("inputs/speech_24k.wav")).samples.sizes(),
            torch::IntArrayRef({1, 60000}));
  const Audio music = read_audio(golden_path("inputs/music_stereo_48k.wav"));
  EXPECT_EQ(music.samples.size(0), 2);
  EXPECT_EQ(music.sample_rate_hz, 48000);
}

TEST(WriteWav, SineRoundTripsWithin16BitRounding) {
  const std::string dir = make_temp_dir("WriteWav_SineRoundTrip");
  const std::string path = dir + "/sine.wav";
  const torch::Tensor samples =
      torch::stack({sine(440, 24000, 2400, 0.5), sine(1000, 24000, 2400, 0.8, 1.0)});
  write_wav_atomic(path, samples, 24000);

  const WavFacts facts = parse_wav(path);
  EXPECT_EQ(facts.format_tag, 1);  // plain PCM
  EXPECT_EQ(facts.channels, 2);
  EXPECT_EQ(facts.sample_rate, 24000);
  EXPECT_EQ(facts.bits, 16);
  ASSERT_EQ(facts.samples.size(), 2u * 2400);
  const auto values = samples.accessor<float, 2>();
  for (int64_t t = 0; t < 2400; ++t) {
    for (int c = 0; c < 2; ++c) {
      // torchaudio/sox: nearest integer to x * 32768.
      const auto expected = static_cast<int16_t>(std::floor(values[c][t] * 32768.0 + 0.5));
      ASSERT_EQ(facts.samples[t * 2 + c], expected) << "c=" << c << " t=" << t;
    }
  }

  const Audio audio = read_audio(path);
  EXPECT_EQ(audio.sample_rate_hz, 24000);
  ASSERT_EQ(audio.samples.sizes(), samples.sizes());
  EXPECT_LE((audio.samples - samples).abs().max().item<float>(), 0.5 / 32768 + 1e-9);
  EXPECT_EQ(testing::files_in(dir), std::vector<std::string>{"sine.wav"});
}

TEST(WriteWav, ClampsToPlusMinus099) {
  const std::string dir = make_temp_dir("WriteWav_Clamps");
  const std::string path = dir + "/clamped.wav";
  const torch::Tensor samples = torch::tensor({{1.5f, -1.5f, 0.99f, 0.5f, -0.25f, 2.0f, -0.995f}});
  write_wav_atomic(path, samples, 16000);
  const int16_t limit = static_cast<int16_t>(std::lround(0.99 * 32768));  // 32440
  EXPECT_EQ(parse_wav(path).samples,
            (std::vector<int16_t>{limit, static_cast<int16_t>(-limit), limit, 16384, -8192, limit,
                                  static_cast<int16_t>(-limit)}));
}

TEST(WriteWav, RescalesThePeakTo099AndNeverAmplifies) {
  const std::string dir = make_temp_dir("WriteWav_Rescales");
  const std::vector<double> loud = {2.0, -1.0, 0.5, 0.3, -2.0};
  torch::Tensor samples = torch::tensor(loud).to(torch::kFloat32).unsqueeze(0);
  write_wav_atomic(dir + "/loud.wav", samples, 24000, WavWriteOptions{/*rescale=*/true});
  std::vector<int16_t> expected;
  for (const double x : loud) {
    expected.push_back(static_cast<int16_t>(std::lround(x * (0.99 / 2.0) * 32768)));
  }
  EXPECT_EQ(parse_wav(dir + "/loud.wav").samples, expected);  // 32440, -16220, 8110, ...

  // A quiet signal is written as is, not scaled up to 0.99.
  const torch::Tensor quiet = torch::tensor({{0.5f, -0.25f, 0.125f}});
  write_wav_atomic(dir + "/quiet.wav", quiet, 24000, WavWriteOptions{/*rescale=*/true});
  EXPECT_EQ(parse_wav(dir + "/quiet.wav").samples, (std::vector<int16_t>{16384, -8192, 4096}));

  // Silence stays silence (no division by a zero peak).
  write_wav_atomic(dir + "/silent.wav", torch::zeros({1, 4}), 24000, WavWriteOptions{true});
  EXPECT_EQ(parse_wav(dir + "/silent.wav").samples, std::vector<int16_t>(4, 0));
}

TEST(WriteWav, FailuresThrowNamingThePathAndLeaveNothingBehind) {
  const std::string dir = make_temp_dir("WriteWav_Failures");
  const torch::Tensor samples = torch::zeros({1, 10});

  const std::string missing_dir_path = dir + "/no/such/dir/out.wav";
  EXPECT_NE(audio_error_of([&] { write_wav_atomic(missing_dir_path, samples, 24000); })
                .find(missing_dir_path),
            std::string::npos);

  // The destination is a directory: the rename fails after the data was written.
  fs::create_directory(dir + "/taken.wav");
  EXPECT_NE(audio_error_of([&] { write_wav_atomic(dir + "/taken.wav", samples, 24000); })
                .find(dir + "/taken.wav"),
            std::string::npos);
  // More channels than WAV/libsndfile allow: sf_open fails on the temporary file.
  EXPECT_NE(audio_error_of([&] { write_wav_atomic(dir + "/wide.wav", torch::zeros({2000, 1}),
                                                  24000); })
                .find(dir + "/wide.wav"),
            std::string::npos);
  EXPECT_FALSE(audio_error_of([&] { write_wav_atomic(dir + "/x.wav", torch::zeros({10}), 24000); })
                   .empty());
  EXPECT_EQ(testing::files_in(dir), std::vector<std::string>{"taken.wav"});
}

TEST(WriteFileAtomic, WritesReplacesAndFailsCleanly) {
  const std::string dir = make_temp_dir("WriteFileAtomic");
  const std::string path = dir + "/data.bin";
  const std::string first("ECDC\0\x01\x02 first", 13);
  write_file_atomic(path, first);
  EXPECT_EQ(read_file_bytes(path), first);
  write_file_atomic(path, "second, shorter");
  EXPECT_EQ(read_file_bytes(path), "second, shorter");
  write_file_atomic(path, "");
  EXPECT_EQ(read_file_bytes(path), "");

  // Created with the permissions an ordinary open() would give, not mkstemp's 0600.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat status {};
  ASSERT_EQ(::stat(path.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0666 & ~mask);

  fs::create_directory(dir + "/sub");
  EXPECT_NE(audio_error_of([&] { write_file_atomic(dir + "/sub", "x"); }).find(dir + "/sub"),
            std::string::npos);
  EXPECT_NE(audio_error_of([&] { write_file_atomic(dir + "/none/a.bin", "x"); })
                .find(dir + "/none/a.bin"),
            std::string::npos);
  EXPECT_EQ(testing::files_in(dir), (std::vector<std::string>{"data.bin", "sub"}));
}

TEST(ReadAudio, ErrorsNameTheFileAndTheReason) {
  const std::string dir = make_temp_dir("ReadAudio_Errors");
  const std::string missing = dir + "/missing.wav";
  const std::string missing_error = audio_error_of([&] { read_audio(missing); });
  EXPECT_NE(missing_error.find(missing), std::string::npos) << missing_error;
  EXPECT_NE(missing_error.find("No such file"), std::string::npos) << missing_error;

  const std::string text = dir + "/x.wav";
  std::ofstream(text) << "this is not audio, just some text pretending to be a wav file\n";
  const std::string text_error = audio_error_of([&] { read_audio(text); });
  EXPECT_NE(text_error.find(text), std::string::npos) << text_error;
  EXPECT_GT(text_error.size(), text.size() + 30) << "no reason given: " << text_error;
}

TEST(ResampledLength, MatchesCeilOfTheExactRatio) {
  const int rate_pairs[][2] = {{44100, 24000}, {22050, 24000}, {8000, 24000},
                               {48000, 24000}, {24000, 48000}, {44100, 48000}};
  for (const auto& rates : rate_pairs) {
    for (const int64_t length : {0, 1, 2, 3, 99, 100, 44099, 44100, 44101, 1234567}) {
      const long double exact = static_cast<long double>(length) * rates[1] / rates[0];
      EXPECT_EQ(resampled_length(length, rates[0], rates[1]),
                static_cast<int64_t>(std::ceil(exact)))
          << rates[0] << " -> " << rates[1] << ", length " << length;
    }
  }
  EXPECT_EQ(resampled_length(44100, 44100, 24000), 24000);
  EXPECT_EQ(resampled_length(100, 44100, 24000), 55);  // 54.42 -> 55
  EXPECT_EQ(resampled_length(777, 24000, 24000), 777);
  EXPECT_THROW(resampled_length(10, 0, 24000), AudioError);
  EXPECT_THROW(resampled_length(10, 24000, -1), AudioError);
}

TEST(ConvertAudio, ResamplesA1kHzSineFrom44100To24000) {
  const torch::Tensor input = sine(1000, 44100, 88200, 0.5).unsqueeze(0);
  const torch::Tensor output = convert_audio(input, 44100, 24000, 1);
  ASSERT_EQ(output.sizes(), torch::IntArrayRef({1, resampled_length(88200, 44100, 24000)}));
  const torch::Tensor expected = sine(1000, 24000, 48000, 0.5);
  const double snr = snr_db(output[0].slice(0, 1000, 47000), expected.slice(0, 1000, 47000));
  EXPECT_GT(snr, 40.0);
  std::cout << "44100 -> 24000 sine SNR " << snr << " dB\n";
}

TEST(ConvertAudio, ResamplesStereoUpAndDownKeepingChannelsApart) {
  for (const auto& [from, to] : {std::pair{22050, 24000}, std::pair{48000, 24000},
                                 std::pair{8000, 24000}}) {
    SCOPED_TRACE(std::to_string(from) + " -> " + std::to_string(to));
    const int64_t frames = from * 3 / 2 + 7;  // not a whole number of output samples
    const torch::Tensor input =
        torch::stack({sine(1000, from, frames, 0.5), sine(330, from, frames, 0.25, 0.5)});
    const torch::Tensor output = convert_audio(input, from, to, 2);
    const int64_t length = resampled_length(frames, from, to);
    ASSERT_EQ(output.sizes(), torch::IntArrayRef({2, length}));
    const int64_t margin = to / 20;  // away from the filter's edge effects
    const torch::Tensor left = sine(1000, to, length, 0.5);
    const torch::Tensor right = sine(330, to, length, 0.25, 0.5);
    EXPECT_GT(snr_db(output[0].slice(0, margin, length - margin),
                     left.slice(0, margin, length - margin)),
              40.0);
    EXPECT_GT(snr_db(output[1].slice(0, margin, length - margin),
                     right.slice(0, margin, length - margin)),
              40.0);
  }
}

TEST(ConvertAudio, ConvertsChannelsLikeTheReference) {
  const torch::Tensor mono = torch::tensor({{0.1f, -0.2f, 0.3f}});
  const torch::Tensor stereo = torch::tensor({{0.1f, -0.2f, 0.3f}, {0.5f, 0.4f, -0.3f}});

  // Same rate: no resampling, values untouched.
  EXPECT_TRUE(torch::equal(convert_audio(mono, 24000, 24000, 1), mono));
  EXPECT_TRUE(torch::equal(convert_audio(stereo, 48000, 48000, 2), stereo));
  EXPECT_TRUE(torch::equal(convert_audio(mono, 48000, 48000, 2), torch::cat({mono, mono})));
  const torch::Tensor mean = torch::tensor({{(0.1f + 0.5f) / 2, (-0.2f + 0.4f) / 2, 0.0f}});
  EXPECT_TRUE(torch::allclose(convert_audio(stereo, 24000, 24000, 1), mean, 0, 1e-7));

  const torch::Tensor three = torch::ones({3, 5});
  const std::string error = audio_error_of([&] { convert_audio(three, 24000, 24000, 2); });
  EXPECT_NE(error.find("from 3 to 2 channels"), std::string::npos) << error;
  EXPECT_TRUE(torch::equal(convert_audio(three, 24000, 24000, 1), torch::ones({1, 5})));
  EXPECT_FALSE(audio_error_of([&] { convert_audio(mono, 24000, 24000, 3); }).empty());
  EXPECT_FALSE(audio_error_of([&] { convert_audio(torch::ones({4}), 24000, 24000, 1); }).empty());
}

}  // namespace
}  // namespace encodec

namespace encodec {
namespace {

// Writes interleaved float samples in a libsndfile format (FLAC, Ogg/Vorbis...).
void write_with_libsndfile(const std::string& path, int format, const torch::Tensor& samples,
                           int sample_rate_hz) {
  SF_INFO info{};
  info.samplerate = sample_rate_hz;
  info.channels = static_cast<int>(samples.size(0));
  info.format = format;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr) << sf_strerror(nullptr);
  if ((format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16) {
    // Integers, so that libsndfile's float scaling (32767) cannot round them.
    const torch::Tensor interleaved = (samples.t() * 32768).round().to(torch::kInt16).contiguous();
    sf_writef_short(file, interleaved.data_ptr<int16_t>(), samples.size(1));
  } else {
    const torch::Tensor interleaved = samples.t().contiguous();
    sf_writef_float(file, interleaved.data_ptr<float>(), samples.size(1));
  }
  sf_close(file);
}

// Compressed formats come in through the same reader: FLAC losslessly, Vorbis
// within its coding noise.
TEST(ReadAudio, ReadsFlacAndOggVorbis) {
  const std::string dir = make_temp_dir("ReadAudio_Formats");
  const torch::Tensor samples =
      torch::stack({sine(440, 44100, 44100, 0.5), sine(1000, 44100, 44100, 0.3)});
  const torch::Tensor pcm16 = torch::round(samples * 32768) / 32768;  // FLAC stores 16 bits

  write_with_libsndfile(dir + "/a.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, pcm16, 44100);
  const Audio flac = read_audio(dir + "/a.flac");
  EXPECT_EQ(flac.sample_rate_hz, 44100);
  ASSERT_EQ(flac.samples.sizes(), pcm16.sizes());
  EXPECT_EQ((flac.samples - pcm16).abs().max().item<float>(), 0.0f);

  write_with_libsndfile(dir + "/a.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, samples, 44100);
  const Audio vorbis = read_audio(dir + "/a.ogg");
  EXPECT_EQ(vorbis.sample_rate_hz, 44100);
  ASSERT_EQ(vorbis.samples.size(0), 2);
  ASSERT_EQ(vorbis.samples.size(1), samples.size(1));
  // Away from the edges, where the codec's windowing starts and ends.
  const torch::Tensor reference = samples.narrow(1, 4410, 44100 - 2 * 4410);
  const torch::Tensor decoded = vorbis.samples.narrow(1, 4410, 44100 - 2 * 4410);
  const double signal = reference.pow(2).sum().item<double>();
  const double noise = (decoded - reference).pow(2).sum().item<double>();
  EXPECT_GT(10 * std::log10(signal / noise), 20.0);
}

}  // namespace
}  // namespace encodec
