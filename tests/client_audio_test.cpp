// The client's audio ends against values computed here: file sources against
// the int16 samples of WAVs written with libsndfile, tones against sin and their
// zero crossings, the click train against click positions and find_clicks,
// find_clicks against pulses placed in noise, the WAV sink against what
// libsndfile reads back (and nothing on disk before finish()), the sample ring's
// drop-oldest contract with two threads, and the device factories on machines
// without audio devices.
#include "encodec/client_audio.h"

#include <gtest/gtest.h>
#include <sndfile.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "encodec/audio_io.h"

namespace encodec::client {
namespace {
namespace fs = std::filesystem;

constexpr int kRateHz = 24000;

class ClientAudioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "client_audio_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Deterministic int16 samples spanning the whole range (both extremes included).
std::vector<int16_t> random_pcm(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> sample(-32768, 32767);
  std::vector<int16_t> pcm(static_cast<size_t>(count));
  for (auto& value : pcm) value = static_cast<int16_t>(sample(generator));
  if (count >= 2) {
    pcm[0] = -32768;
    pcm[1] = 32767;
  }
  return pcm;
}

// Interleaved int16 frames as a 16-bit WAV, through libsndfile.
void write_pcm_wav(const std::string& file, const std::vector<int16_t>& interleaved, int channels,
                   int sample_rate_hz) {
  SF_INFO info{};
  info.samplerate = sample_rate_hz;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* wav = sf_open(file.c_str(), SFM_WRITE, &info);
  ASSERT_NE(wav, nullptr) << sf_strerror(nullptr);
  const auto frames = static_cast<sf_count_t>(interleaved.size() / channels);
  ASSERT_EQ(sf_writef_short(wav, interleaved.data(), frames), frames);
  ASSERT_EQ(sf_close(wav), 0);
}

struct WavContents {
  SF_INFO info{};
  std::vector<int16_t> pcm;
};

WavContents read_pcm_wav(const std::string& file) {
  WavContents contents;
  SNDFILE* wav = sf_open(file.c_str(), SFM_READ, &contents.info);
  EXPECT_NE(wav, nullptr) << sf_strerror(nullptr);
  if (wav == nullptr) return contents;
  contents.pcm.resize(static_cast<size_t>(contents.info.frames * contents.info.channels));
  EXPECT_EQ(sf_readf_short(wav, contents.pcm.data(), contents.info.frames), contents.info.frames);
  sf_close(wav);
  return contents;
}

// Everything a (finite) source yields, read in blocks cycling through
// `block_sizes`; checks that every read but the last is full and that the end
// stays the end.
std::vector<float> read_all(CaptureSource& source, const std::vector<int64_t>& block_sizes) {
  std::vector<float> all;
  for (size_t i = 0;; ++i) {
    const int64_t wanted = block_sizes[i % block_sizes.size()];
    std::vector<float> block(static_cast<size_t>(wanted));
    const int64_t got = source.read(block.data(), wanted);
    EXPECT_GE(got, 0);
    EXPECT_LE(got, wanted);
    all.insert(all.end(), block.begin(), block.begin() + got);
    if (got < wanted) break;
  }
  float spare[16];
  EXPECT_EQ(source.read(spare, 16), 0) << "the end must stay the end";
  EXPECT_EQ(source.read(spare, 16), 0);
  return all;
}

const std::vector<int64_t> kOddBlocks = {1, 7, 333, 4097, 2};

TEST_F(ClientAudioTest, FileSourceReturnsTheFileSamplesInOddBlocks) {
  const std::vector<int16_t> pcm = random_pcm(10007, 1);
  write_pcm_wav(path("in.wav"), pcm, 1, kRateHz);

  const auto source = open_file_source(path("in.wav"), kRateHz);
  EXPECT_FALSE(source->is_device());
  EXPECT_EQ(source->sample_rate_hz(), kRateHz);
  EXPECT_NE(source->describe().find("in.wav"), std::string::npos);

  const std::vector<float> samples = read_all(*source, kOddBlocks);
  ASSERT_EQ(samples.size(), pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i) {
    ASSERT_EQ(samples[i], pcm[i] / 32768.0f) << "sample " << i;
  }
}

TEST_F(ClientAudioTest, FileSourceMixesStereoToMono) {
  const std::vector<int16_t> interleaved = random_pcm(2 * 3001, 2);
  write_pcm_wav(path("stereo.wav"), interleaved, 2, kRateHz);

  const auto source = open_file_source(path("stereo.wav"), kRateHz);
  const std::vector<float> samples = read_all(*source, {500, 999});
  ASSERT_EQ(samples.size(), interleaved.size() / 2);
  for (size_t i = 0; i < samples.size(); ++i) {
    // Both k/32768, so their sum and its half are exact in float.
    const float left = interleaved[2 * i] / 32768.0f;
    const float right = interleaved[2 * i + 1] / 32768.0f;
    ASSERT_EQ(samples[i], (left + right) / 2) << "frame " << i;
  }
}

TEST_F(ClientAudioTest, FileSourceOfAMissingFileNamesIt) {
  try {
    open_file_source(path("absent.wav"), kRateHz);
    FAIL() << "opened a file that does not exist";
  } catch (const AudioError& error) {
    EXPECT_NE(std::string(error.what()).find("absent.wav"), std::string::npos) << error.what();
  }
}

TEST_F(ClientAudioTest, DurationLimitsEverySource) {
  write_pcm_wav(path("in.wav"), random_pcm(kRateHz, 3), 1, kRateHz);  // 1 s

  // 0.25 s at 24 kHz is 6000 samples, whatever the block sizes.
  EXPECT_EQ(read_all(*open_capture(path("in.wav"), kRateHz, 0.25), kOddBlocks).size(), 6000u);
  EXPECT_EQ(read_all(*open_capture("tone", kRateHz, 0.25), kOddBlocks).size(), 6000u);
  EXPECT_EQ(read_all(*open_capture("clicks", kRateHz, 0.25), kOddBlocks).size(), 6000u);
  EXPECT_EQ(read_all(*open_tone_source(kRateHz, 100, 0.5, 0.1), {1000}).size(), 2400u);
  EXPECT_EQ(read_all(*open_click_source(8000, 0.5, 1.5, 10), {777}).size(), 12000u);
  // A limit beyond the file's end leaves the file's length.
  EXPECT_EQ(read_all(*open_capture(path("in.wav"), kRateHz, 5.0), kOddBlocks).size(),
            static_cast<size_t>(kRateHz));
  // Without a limit tone and clicks do not end.
  for (const char* endless : {"tone", "clicks"}) {
    const auto source = open_capture(endless, kRateHz, 0);
    std::vector<float> block(kRateHz);
    for (int second = 0; second < 20; ++second) {
      ASSERT_EQ(source->read(block.data(), kRateHz), kRateHz) << endless << " at " << second;
    }
  }
  EXPECT_THROW(open_capture("tone", kRateHz, -1), std::invalid_argument);
}

TEST_F(ClientAudioTest, ToneFollowsTheSineAndCrossesZeroTwicePerCycle) {
  constexpr double kFrequencyHz = 441;  // not a divisor of the rate: phases vary
  constexpr double kAmplitude = 0.5;
  const auto source = open_tone_source(kRateHz, kFrequencyHz, kAmplitude, 2.0);
  EXPECT_FALSE(source->is_device());
  const std::vector<float> samples = read_all(*source, {37, 100, 1});
  ASSERT_EQ(samples.size(), 2u * kRateHz);

  float peak = 0;
  for (size_t n = 0; n < samples.size(); ++n) {
    const double expected = kAmplitude * std::sin(2 * M_PI * kFrequencyHz * n / kRateHz);
    ASSERT_NEAR(samples[n], expected, 1e-6) << "sample " << n;
    peak = std::max(peak, std::abs(samples[n]));
  }
  EXPECT_NEAR(peak, kAmplitude, 1e-3);
  int sign_changes = 0;
  for (size_t n = 1; n < samples.size(); ++n) {
    if ((samples[n - 1] < 0) != (samples[n] < 0)) ++sign_changes;
  }
  // 441 cycles per second for 2 s, two crossings each (±1 at the ends).
  EXPECT_NEAR(sign_changes, 2 * 2 * kFrequencyHz, 1);
}

TEST_F(ClientAudioTest, ClickSourcePositionsAreWhatFindClicksFinds) {
  constexpr double kIntervalS = 0.3337;  // a fractional number of samples: 8008.8
  constexpr int kClickSamples = 24;
  const auto source = open_click_source(kRateHz, kIntervalS, 3.0, kClickSamples);
  const std::vector<float> samples = read_all(*source, kOddBlocks);
  ASSERT_EQ(samples.size(), 3u * kRateHz);

  std::vector<int64_t> expected;
  for (int64_t k = 0; std::llround(k * kIntervalS * kRateHz) < 3 * kRateHz; ++k) {
    expected.push_back(std::llround(k * kIntervalS * kRateHz));
  }
  ASSERT_EQ(expected.size(), 9u);  // 0, 8009, 16018, ... (0.3337 s * 8 < 3 s)
  EXPECT_EQ(find_clicks(samples.data(), static_cast<int64_t>(samples.size()), 0.4f), expected);
  for (size_t k = 0; k < expected.size(); ++k) {
    EXPECT_EQ(click_position(static_cast<int64_t>(k), kRateHz, kIntervalS), expected[k]);
  }
  // Each click is kClickSamples at the click amplitude, and everything else silence.
  for (size_t n = 0; n < samples.size(); ++n) {
    const bool in_click = std::any_of(expected.begin(), expected.end(), [&](int64_t start) {
      return static_cast<int64_t>(n) >= start && static_cast<int64_t>(n) < start + kClickSamples;
    });
    ASSERT_EQ(samples[n], in_click ? kClickAmplitude : 0.0f) << "sample " << n;
  }
  // Clicks too close to tell apart are refused.
  EXPECT_THROW(open_click_source(kRateHz, 0.05), std::invalid_argument);
}

// Noise plus ringing bursts (which dip below the threshold at every zero
// crossing of their ringing); the expected onsets are found by scanning each
// burst for its first loud sample here.
TEST_F(ClientAudioTest, FindClicksFindsBurstOnsetsInNoise) {
  constexpr int64_t kLength = 4 * kRateHz;
  constexpr float kThreshold = 0.3f;
  std::mt19937 generator(5);
  std::uniform_real_distribution<float> noise(-0.1f, 0.1f);
  std::vector<float> audio(kLength);
  for (auto& sample : audio) sample = noise(generator);

  // Burst starts; the one 0.05 s after another is part of it (within the quiet time).
  const std::vector<int64_t> starts = {0, 5000, 6200, 30000, 60000, 95000};
  const std::vector<bool> separate = {true, true, false, true, true, true};
  std::vector<int64_t> expected;
  for (size_t b = 0; b < starts.size(); ++b) {
    // Rises over a few samples, rings at 2 kHz and decays over ~5 ms.
    for (int64_t t = 0; t < 600 && starts[b] + t < kLength; ++t) {
      const double envelope = std::min(1.0, (t + 1) / 4.0) * std::exp(-t / 120.0);
      audio[starts[b] + t] +=
          static_cast<float>(0.9 * envelope * std::sin(2 * M_PI * 2000.0 * (t + 0.5) / kRateHz));
    }
    if (!separate[b]) continue;
    int64_t onset = starts[b];
    while (!(std::abs(audio[onset]) > kThreshold)) ++onset;
    expected.push_back(onset);
  }
  EXPECT_EQ(find_clicks(audio.data(), kLength, kThreshold), expected);

  // Fed block by block, the detector keeps absolute positions across blocks.
  ClickDetector detector(kThreshold, kRateHz);
  std::vector<int64_t> streamed;
  for (int64_t offset = 0, i = 0; offset < kLength; ++i) {
    const int64_t block = std::min<int64_t>(kOddBlocks[i % kOddBlocks.size()], kLength - offset);
    for (int64_t onset : detector.feed(audio.data() + offset, block)) streamed.push_back(onset);
    offset += block;
  }
  EXPECT_EQ(streamed, expected);

  // At another rate the quiet time is 0.1 s of that rate: 2000 samples at 20 kHz.
  std::vector<float> pulses(10000, 0.0f);
  pulses[100] = pulses[2000] = pulses[4101] = 1.0f;  // 1899 quiet samples, then 2100
  EXPECT_EQ(find_clicks(pulses.data(), 10000, 0.5f, 20000), (std::vector<int64_t>{100, 4101}));
}

TEST_F(ClientAudioTest, FileSinkWritesTheWavOnlyAtFinish) {
  std::vector<float> signal(7001);
  for (size_t n = 0; n < signal.size(); ++n) {
    signal[n] = static_cast<float>(0.9 * std::sin(n * 0.01) * std::cos(n * 0.0007));
  }
  signal[5] = 0.5f + 0.5f / 32768;  // a half-way sample

  const std::string file = path("out.wav");
  auto sink = open_playback(file, kRateHz);
  EXPECT_FALSE(sink->is_device());
  for (size_t offset = 0, i = 0; offset < signal.size(); ++i) {
    const auto block = std::min<size_t>(static_cast<size_t>(kOddBlocks[i % kOddBlocks.size()]),
                                        signal.size() - offset);
    sink->write(signal.data() + offset, static_cast<int64_t>(block));
    offset += block;
  }
  EXPECT_FALSE(fs::exists(file)) << "the WAV must not appear before finish()";
  sink->finish();
  sink->finish();  // idempotent
  EXPECT_THROW(sink->write(signal.data(), 1), std::logic_error);
  sink.reset();

  const WavContents wav = read_pcm_wav(file);
  EXPECT_EQ(wav.info.samplerate, kRateHz);
  EXPECT_EQ(wav.info.channels, 1);
  EXPECT_EQ(wav.info.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  ASSERT_EQ(wav.pcm.size(), signal.size());
  for (size_t n = 0; n < signal.size(); ++n) {
    // int16 rounding: within half a step (plus float noise) of the sample.
    ASSERT_NEAR(wav.pcm[n], signal[n] * 32768.0, 0.5 + 1e-3) << "sample " << n;
  }
}

TEST_F(ClientAudioTest, FileSinkDestroyedWithoutFinishLeavesNothing) {
  {
    auto sink = open_file_sink(path("out.wav"), kRateHz);
    const std::vector<float> samples(5000, 0.25f);
    sink->write(samples.data(), static_cast<int64_t>(samples.size()));
  }
  EXPECT_TRUE(fs::is_empty(dir_)) << "no WAV and no temporary file may be left";
}

TEST_F(ClientAudioTest, NullSinkDiscards) {
  for (const char* spec : {"null", "-"}) {
    auto sink = open_playback(spec, kRateHz);
    EXPECT_FALSE(sink->is_device());
    const std::vector<float> samples(1000, 0.5f);
    sink->write(samples.data(), 1000);
    sink->finish();
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(SampleRingTest, OverflowDropsTheOldestAndCounts) {
  detail::SampleRing ring(6);  // rounded up to 8
  ASSERT_EQ(ring.capacity(), 8u);
  std::vector<float> values(20);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);

  ring.push(values.data(), 5);      // 0..4
  ring.push(values.data() + 5, 5);  // 5..9: 0 and 1 are dropped
  EXPECT_EQ(ring.size(), 8u);
  EXPECT_EQ(ring.dropped(), 2u);
  float out[20];
  ASSERT_EQ(ring.pop(out, 3), 3u);
  EXPECT_EQ(std::vector<float>(out, out + 3), (std::vector<float>{2, 3, 4}));
  ring.push(values.data() + 10, 10);  // more than fits: 12..19 remain
  EXPECT_EQ(ring.dropped(), 2u + 5u + 2u);
  ASSERT_EQ(ring.pop(out, 20), 8u);
  EXPECT_EQ(std::vector<float>(out, out + 8),
            std::vector<float>(values.begin() + 12, values.end()));
  EXPECT_EQ(ring.pop(out, 20), 0u);
  EXPECT_EQ(ring.size(), 0u);
}

// A producer pushing consecutive numbers as fast as it can against a slower
// consumer: every pop must be a run of consecutive numbers (nothing torn by an
// overwrite), runs must only go forward, and what was read plus what was
// dropped must be everything.
TEST(SampleRingTest, ConcurrentOverflowNeverTearsASample) {
  detail::SampleRing ring(1024);
  constexpr int64_t kTotal = 1 << 23;  // floats count exactly up to 2^24
  std::atomic<bool> done{false};
  std::thread producer([&] {
    std::vector<float> block(64);
    for (int64_t next = 0; next < kTotal; next += 64) {
      for (int64_t i = 0; i < 64; ++i) block[i] = static_cast<float>(next + i);
      ring.push(block.data(), 64);
    }
    done.store(true);
  });
  int64_t received = 0;
  float last = -1;
  bool ordered = true;
  std::vector<float> out(100);
  for (int round = 0;; ++round) {
    const bool finished = done.load();
    const size_t got = ring.pop(out.data(), out.size());
    if (got > 0) {
      ordered = ordered && out[0] > last;
      for (size_t i = 1; i < got; ++i) ordered = ordered && out[i] == out[i - 1] + 1;
      last = out[got - 1];
      received += static_cast<int64_t>(got);
    } else if (finished) {
      break;
    }
    // Now and then let the producer overrun us, racing its drops with our copies.
    if (round % 256 == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  producer.join();
  EXPECT_TRUE(ordered);
  EXPECT_EQ(last, static_cast<float>(kTotal - 1));
  EXPECT_EQ(received + static_cast<int64_t>(ring.dropped()), kTotal);
  EXPECT_GT(ring.dropped(), 0u) << "the test did not overflow the ring";
}

// These machines have no audio device; where one exists the open succeeds and
// the test has nothing to check.
TEST(AudioDeviceTest, MicrophoneWithoutDeviceSuggestsFiles) {
  for (int attempt = 0; attempt < 2; ++attempt) {  // PortAudio initializes again cleanly
    try {
      const auto source = open_capture("mic", kRateHz, 0);
      GTEST_SKIP() << "an audio input device exists: " << source->describe();
    } catch (const AudioDeviceError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("--input FILE"), std::string::npos) << message;
      EXPECT_NE(message.find("input"), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
    }
  }
}

TEST(AudioDeviceTest, SpeakerWithoutDeviceSuggestsFiles) {
  try {
    const auto sink = open_playback("speaker", kRateHz);
    GTEST_SKIP() << "an audio output device exists: " << sink->describe();
  } catch (const AudioDeviceError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("--input FILE"), std::string::npos) << message;
    EXPECT_NE(message.find("--output FILE"), std::string::npos) << message;
    EXPECT_NE(message.find("output device"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  }
}

}  // namespace
}  // namespace encodec::client
