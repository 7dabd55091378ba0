// The `encodec` command, driven in-process through run_encodec_cli with the
// golden checkpoints: outputs against the reference files and audio, output-file
// safety (-f, atomic writes, nothing left behind on failure) and the errors a
// user can run into.
#include "encodec/cli.h"

#include <sndfile.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "encodec/audio_io.h"
#include "encodec/compress.h"
#include "encodec/ecdc.h"
#include "encodec/lm.h"
#include "fast/cpu_tier.h"
#include "golden_cases.h"
#include "cli_run.h"
#include "lm_test_util.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_cli;


std::string checkpoint_24khz() { return testing::golden_path("encodec_24khz-random.th"); }
std::string checkpoint_48khz() { return testing::golden_path("encodec_48khz-random.th"); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

struct Pcm16 {
  std::vector<int16_t> interleaved;
  int channels = 0;
  int sample_rate_hz = 0;
  int64_t frames = 0;
  int format = 0;
};

Pcm16 read_pcm16(const std::string& path) {
  SF_INFO info{};
  SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
  if (!file) throw std::runtime_error("cannot open " + path + ": " + sf_strerror(nullptr));
  Pcm16 pcm;
  pcm.channels = info.channels;
  pcm.sample_rate_hz = info.samplerate;
  pcm.frames = info.frames;
  pcm.format = info.format;
  pcm.interleaved.resize(static_cast<size_t>(info.frames * info.channels));
  const sf_count_t got = sf_readf_short(file, pcm.interleaved.data(), info.frames);
  sf_close(file);
  if (got != info.frames) throw std::runtime_error("short read from " + path);
  return pcm;
}

// A test signal: sum of sines (Hz, amplitude), [channels, frames].
torch::Tensor sines(int64_t frames, int sample_rate_hz,
                    const std::vector<std::vector<std::pair<double, double>>>& channels) {
  torch::Tensor out = torch::zeros({static_cast<int64_t>(channels.size()), frames});
  const torch::Tensor time = torch::arange(frames, torch::kFloat64) / sample_rate_hz;
  for (size_t c = 0; c < channels.size(); ++c) {
    for (const auto& [hz, amplitude] : channels[c]) {
      out[static_cast<int64_t>(c)] += (amplitude * torch::sin(2 * M_PI * hz * time)).to(torch::kFloat32);
    }
  }
  return out;
}

// The int16 torchaudio's sox backend writes for a float sample that is already
// limited to [-1, 1]: x * 32768 rounded half up, clipped to 32767. Computed here
// independently of audio_io.cpp.
int expected_pcm16(float x) {
  const double scaled = std::floor(static_cast<double>(x) * 32768.0 + 0.5);
  return static_cast<int>(std::clamp(scaled, -32768.0, 32767.0));
}

// Checks a written WAV against float audio [channels, frames] already limited
// as the reference's save_audio does, within `tolerance` LSB.
void expect_wav_equals(const std::string& path, const torch::Tensor& expected, int sample_rate_hz,
                       int tolerance = 1) {
  const Pcm16 pcm = read_pcm16(path);
  EXPECT_EQ(pcm.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  EXPECT_EQ(pcm.sample_rate_hz, sample_rate_hz);
  ASSERT_EQ(pcm.channels, expected.size(0));
  ASSERT_EQ(pcm.frames, expected.size(1));
  const torch::Tensor frames_first = expected.to(torch::kFloat32).t().contiguous();
  const float* want = frames_first.data_ptr<float>();
  int max_difference = 0;
  int64_t differing = 0;
  for (size_t i = 0; i < pcm.interleaved.size(); ++i) {
    const int difference = std::abs(pcm.interleaved[i] - expected_pcm16(want[i]));
    max_difference = std::max(max_difference, difference);
    differing += difference != 0;
  }
  EXPECT_LE(max_difference, tolerance)
      << path << ": " << differing << " of " << pcm.interleaved.size() << " samples differ";
}

// Reference decoded audio of a golden file, trimmed to its length.
torch::Tensor reference_audio(const std::string& case_stem) {
  for (const testing::GoldenCase& golden : testing::golden_cases()) {
    if (golden.ecdc == "cases/" + case_stem + ".ecdc") {
      return testing::load_npy(testing::golden_path(golden.decoded))
          .narrow(1, 0, golden.num_samples);
    }
  }
  throw std::runtime_error("no golden case " + case_stem);
}

torch::Tensor clamped(const torch::Tensor& audio) { return audio.clamp(-0.99f, 0.99f); }

std::string reference_ecdc(const std::string& case_stem) {
  return testing::read_file_bytes(testing::golden_path("cases/" + case_stem + ".ecdc"));
}

EcdcHeader header_of(const std::string& path) {
  std::istringstream in(testing::read_file_bytes(path));
  return read_ecdc_header(in);
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << text << "' lacks '" << part << "'";
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    dir_ = testing::make_temp_dir(
        std::string("cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  // Copies a golden file into the test folder under `name`.
  std::string copy_golden(const std::string& relative, const std::string& name) const {
    fs::copy_file(testing::golden_path(relative), path(name));
    return path(name);
  }

  std::string dir_;
};

TEST_F(CliTest, CompressWritesExactlyTheReferenceFile) {
  const CliRun run = run_cli({"--reference", "-f", "-b", "6", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == reference_ecdc("speech_24k_6kbps"));
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"out.ecdc"}) << "temporary files left behind";
}

// The default: the fast kernels. Their codes equal the reference's but for
// near-ties, so the file is the golden one but for a few bytes, and a valid
// .ecdc that the Python package reads.
TEST_F(CliTest, DefaultFastKernelsWriteAValidFileWhoseCodesMatchTheReference) {
  const CliRun run = run_cli({"-f", "-b", "6", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/long_24k.wav"), path("fast.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  // Same header and size; codes equal but for near-ties (none at 6 kbps on this input).
  const std::string fast = testing::read_file_bytes(path("fast.ecdc"));
  const std::string reference = reference_ecdc("long_24k_6kbps");
  ASSERT_EQ(fast.size(), reference.size());
  size_t differing = 0;
  for (size_t i = 0; i < fast.size(); ++i) differing += fast[i] != reference[i];
  EXPECT_LE(differing, fast.size() / 100) << differing << " of " << fast.size() << " bytes differ";
}

TEST_F(CliTest, DefaultOutputIsTheInputWithEcdcAndDefaultBandwidthIs6Kbps) {
  const std::string input = copy_golden("inputs/chirp_odd_24k.wav", "chirp.wav");
  const CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), input});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(testing::files_in(dir_), (std::vector<std::string>{"chirp.ecdc", "chirp.wav"}));
  EXPECT_TRUE(testing::read_file_bytes(path("chirp.ecdc")) == reference_ecdc("chirp_odd_24k_6kbps"));
}

TEST_F(CliTest, ShortQIsQuietNotHq) {
  // Python's -q is --hq; here it is --quiet, so 1.5 kbps (24 kHz only) works.
  const CliRun run = run_cli({"--reference", "-q", "--threads", "1", "-b", "1.5", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == reference_ecdc("speech_24k_1.5kbps"));
}

TEST_F(CliTest, ExistingOutputIsUntouchedWithoutForce) {
  const std::string output = path("out.ecdc");
  write_bytes(output, "precious");
  const auto old_time = fs::file_time_type::clock::now() - std::chrono::hours(24);
  fs::last_write_time(output, old_time);

  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), output});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, output);
  expect_contains(run.err, "-f / --force");
  EXPECT_EQ(testing::read_file_bytes(output), "precious");
  EXPECT_EQ(fs::last_write_time(output), old_time);
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"out.ecdc"});
}

TEST_F(CliTest, ForceOverwritesAnExistingOutput) {
  const std::string output = path("out.ecdc");
  write_bytes(output, "old contents");
  const CliRun run = run_cli({"--reference", "-f", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), output});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(output) == reference_ecdc("speech_24k_6kbps"));
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"out.ecdc"});
}

TEST_F(CliTest, DecompressWritesTheReferenceAudioAsWav) {
  const CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("cases/speech_24k_6kbps.ecdc"),
                              path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  expect_wav_equals(path("out.wav"), clamped(reference_audio("speech_24k_6kbps")), 24000);
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"out.wav"});
}

TEST_F(CliTest, DecompressOf48kHzFileWritesStereoAt48kHz) {
  const CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_48khz(),
                              testing::golden_path("cases/music_stereo_48k_12kbps.ecdc"),
                              path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("out.wav"), clamped(reference_audio("music_stereo_48k_12kbps")), 48000);
}

TEST_F(CliTest, DefaultDecompressOutputIsTheInputWithWavAndTheSuffix) {
  const std::string input = copy_golden("cases/tiny_24k_6kbps.ecdc", "tiny.ecdc");
  CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), input});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), "-s", "_dec", input});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  // Python's spelling of the long option works too.
  run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), "--decompress_suffix", "_py", input});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(testing::files_in(dir_), (std::vector<std::string>{"tiny.ecdc", "tiny.wav", "tiny_dec.wav",
                                                      "tiny_py.wav"}));
  expect_wav_equals(path("tiny_dec.wav"), clamped(reference_audio("tiny_24k_6kbps")), 24000);
  EXPECT_EQ(testing::read_file_bytes(path("tiny.wav")),
            testing::read_file_bytes(path("tiny_dec.wav")));
}

// A copy of a golden 48 kHz file with every chunk's scale multiplied by 4: the
// decoder's output is multiplied by the scale, so the audio is exactly 4x the
// reference decode (a power of two, so the float products are exact), which
// peaks well above the 0.99 limit.
std::string loud_48khz_file(const std::string& case_stem) {
  const std::string bytes = reference_ecdc(case_stem);
  std::istringstream in(bytes);
  const EcdcHeader header = read_ecdc_header(in);
  const EncodecConfig& config = testing::golden_model("encodec_48khz").config();
  std::vector<EncodedFrame> frames = read_ecdc_frames(in, header, config);
  for (EncodedFrame& frame : frames) frame.scale = *frame.scale * 4;
  std::ostringstream out;
  write_ecdc(out, header, frames, config.bits_per_codebook());
  return out.str();
}

TEST_F(CliTest, LoudDecodeIsClampedTo099WithAWarning) {
  write_bytes(path("loud.ecdc"), loud_48khz_file("music_stereo_48k_6kbps"));
  const torch::Tensor expected = reference_audio("music_stereo_48k_6kbps") * 4;
  ASSERT_GT(expected.abs().max().item<float>(), 2.0f);

  const CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_48khz(), path("loud.ecdc"), path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_contains(run.err, "clipping");
  expect_contains(run.err, "-r / --rescale");
  expect_wav_equals(path("out.wav"), clamped(expected), 48000);
  const Pcm16 pcm = read_pcm16(path("out.wav"));
  const auto [low, high] = std::minmax_element(pcm.interleaved.begin(), pcm.interleaved.end());
  EXPECT_EQ(*high, expected_pcm16(0.99f));
  EXPECT_EQ(*low, expected_pcm16(-0.99f));
}

TEST_F(CliTest, RescaleBringsThePeakTo099) {
  write_bytes(path("loud.ecdc"), loud_48khz_file("music_stereo_48k_6kbps"));
  const torch::Tensor expected = reference_audio("music_stereo_48k_6kbps") * 4;
  const float peak = expected.abs().max().item<float>();

  const CliRun run =
      run_cli({"--reference", "-r", "--checkpoint", checkpoint_48khz(), path("loud.ecdc"), path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err.find("clipping"), std::string::npos) << run.err;
  expect_wav_equals(path("out.wav"), expected * (0.99f / peak), 48000);
  const Pcm16 pcm = read_pcm16(path("out.wav"));
  int output_peak = 0;
  for (const int16_t sample : pcm.interleaved) output_peak = std::max(output_peak, std::abs(sample));
  EXPECT_NEAR(output_peak, 0.99 * 32768, 1.0);
}

TEST_F(CliTest, RescaleNeverAmplifiesQuietAudio) {
  const CliRun run = run_cli({"--reference", "-r", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("cases/speech_24k_3kbps.ecdc"),
                              path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("out.wav"), reference_audio("speech_24k_3kbps"), 24000);
}

TEST_F(CliTest, WavOutputCompressesAndDecompressesInOneGo) {
  const CliRun run = run_cli({"--reference", "-b", "12", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), path("round.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("round.wav"), clamped(reference_audio("speech_24k_12kbps")), 24000);
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"round.wav"});
}

TEST_F(CliTest, HqCompressesWithThe48kHzModel) {
  CliRun run = run_cli({"--reference", "--hq", "-b", "6", "--checkpoint", checkpoint_48khz(),
                        testing::golden_path("inputs/music_stereo_48k.wav"), path("music.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("music.ecdc")) ==
              reference_ecdc("music_stereo_48k_6kbps"));

  run = run_cli({"--reference", "--hq", "-b", "24", "--checkpoint", checkpoint_48khz(),
                 testing::golden_path("inputs/short_48k.wav"), path("short.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("short.wav"), clamped(reference_audio("short_48k_24kbps")), 48000);
}

TEST_F(CliTest, BandwidthTheModelLacksIsRefusedNamingTheChoices) {
  CliRun run = run_cli({"--hq", "-b", "1.5", "--checkpoint", checkpoint_48khz(),
                        testing::golden_path("inputs/music_stereo_48k.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "bandwidth 1.5 kbps");
  expect_contains(run.err, "encodec_48khz");
  expect_contains(run.err, "3, 6, 12, 24");

  run = run_cli({"-b", "5", "--checkpoint", checkpoint_24khz(),
                 testing::golden_path("inputs/speech_24k.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "bandwidth 5 kbps");
  expect_contains(run.err, "1.5, 3, 6, 12, 24");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, WrongOutputExtensionIsRefused) {
  CliRun run = run_cli({"--checkpoint", checkpoint_24khz(),
                        testing::golden_path("inputs/speech_24k.wav"), path("out.mp3")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "out.mp3");
  expect_contains(run.err, ".ecdc");

  run = run_cli({"--checkpoint", checkpoint_24khz(),
                 testing::golden_path("cases/speech_24k_6kbps.ecdc"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "out.ecdc");
  expect_contains(run.err, "must be a .wav file");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, MissingInputIsNamed) {
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(), path("nothing.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, path("nothing.wav") + " does not exist");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, MissingOutputFolderIsNamed) {
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"),
                              path("missing/out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "output folder " + path("missing") + " ");
  expect_contains(run.err, "does not exist");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, UnreadableInputIsNamed) {
  write_bytes(path("text.wav"), "this is not audio, only text with a .wav name\n");
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(), path("text.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "cannot read audio file '" + path("text.wav") + "'");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"text.wav"});
}

TEST_F(CliTest, EmptyInputIsRefused) {
  testing::write_pcm16(path("empty.wav"), torch::zeros({1, 0}), 24000);
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(), path("empty.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, path("empty.wav") + " has no samples");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"empty.wav"});
}

TEST_F(CliTest, OutputThatIsTheInputIsRefused) {
  const std::string input = copy_golden("inputs/tiny_24k.wav", "tiny.wav");
  const std::string before = testing::read_file_bytes(input);
  const CliRun run = run_cli({"-f", "--checkpoint", checkpoint_24khz(), input, input});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "is the input file");
  EXPECT_EQ(testing::read_file_bytes(input), before);
}

TEST_F(CliTest, TruncatedEcdcFailsAndLeavesNoFileBehind) {
  const std::string bytes = reference_ecdc("speech_24k_6kbps");
  // Cut inside the header, inside the codes, and one byte short.
  for (const size_t length : {size_t{7}, bytes.size() / 2, bytes.size() - 1}) {
    write_bytes(path("cut.ecdc"), bytes.substr(0, length));
    const CliRun run = run_cli({"-f", "--checkpoint", checkpoint_24khz(), path("cut.ecdc")});
    EXPECT_EQ(run.exit_code, 1) << "cut to " << length;
    expect_contains(run.err, "cannot decompress " + path("cut.ecdc"));
    expect_contains(run.err, "truncated .ecdc");
    EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"cut.ecdc"}) << "cut to " << length;
  }
}

// A 48 kHz file cut in its last chunk fails after earlier chunks were already
// decoded and written (the WAV, and with -r the float scratch file): none of it stays.
TEST_F(CliTest, FileTruncatedAfterItsFirstChunksLeavesNoFileBehind) {
  const std::string bytes = reference_ecdc("music_stereo_48k_6kbps");
  write_bytes(path("cut.ecdc"), bytes.substr(0, bytes.size() - 3));
  for (const bool rescale : {false, true}) {
    std::vector<std::string> args = {"--checkpoint", checkpoint_48khz(), path("cut.ecdc"),
                                     path("out.wav")};
    if (rescale) args.insert(args.begin(), "-r");
    const CliRun run = run_cli(args);
    EXPECT_EQ(run.exit_code, 1) << run.err;
    expect_contains(run.err, "chunk 3 of 3");
    EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"cut.ecdc"});
  }
}

std::string lm_checkpoint_24khz() { return testing::golden_path("encodec_lm_24khz-random.th"); }
std::string lm_checkpoint_48khz() { return testing::golden_path("encodec_lm_48khz-random.th"); }

TEST_F(CliTest, LmCompressWritesExactlyTheReferenceFile) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();
  // The example of the golden README: --lm with both checkpoints.
  const CliRun run = run_cli({"--reference", "-f", "-b", "6", "--lm", "--checkpoint", checkpoint_24khz(),
                              "--lm-checkpoint", lm_checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == reference_ecdc("speech_24k_6kbps_lm"));
  EXPECT_TRUE(header_of(path("out.ecdc")).use_lm);
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"out.ecdc"}) << "temporary files left behind";
}

TEST_F(CliTest, ShortLmFlagWithHqWritesTheReference48kHzFile) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();
  const CliRun run = run_cli({"--reference", "-l", "--hq", "-b", "6", "--checkpoint", checkpoint_48khz(),
                              "--lm-checkpoint", lm_checkpoint_48khz(),
                              testing::golden_path("inputs/music_stereo_48k.wav"), path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) ==
              reference_ecdc("music_stereo_48k_6kbps_lm"));
}

TEST_F(CliTest, LmCodedReferenceFilesDecompressToTheReferenceAudio) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();
  CliRun run = run_cli({"--reference", "-f", "--checkpoint", checkpoint_48khz(), "--lm-checkpoint",
                        lm_checkpoint_48khz(),
                        testing::golden_path("cases/music_stereo_48k_6kbps_lm.ecdc"),
                        path("music.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("music.wav"), clamped(reference_audio("music_stereo_48k_6kbps")), 48000);
  run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), "--lm-checkpoint", lm_checkpoint_24khz(),
                 testing::golden_path("cases/speech_24k_24kbps_lm.ecdc"), path("speech.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("speech.wav"), clamped(reference_audio("speech_24k_24kbps")), 24000);
}

TEST_F(CliTest, LmWavOutputRoundTripsThroughTheLmCodedBytes) {
  // Compress with --lm then decompress in one go: the audio of the raw file.
  const CliRun run = run_cli({"--reference", "-b", "1.5", "--lm", "--checkpoint", checkpoint_24khz(),
                              "--lm-checkpoint", lm_checkpoint_24khz(),
                              testing::golden_path("inputs/speech_24k.wav"), path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_wav_equals(path("out.wav"), clamped(reference_audio("speech_24k_1.5kbps")), 24000);
}

TEST_F(CliTest, TruncatedLmCodedFileFailsNamingTheTruncation) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();
  const std::string bytes = reference_ecdc("speech_24k_6kbps_lm");
  for (const size_t cut : {size_t{1}, bytes.size() / 2}) {
    write_bytes(path("cut.ecdc"), bytes.substr(0, bytes.size() - cut));
    const CliRun run = run_cli({"-f", "--checkpoint", checkpoint_24khz(), "--lm-checkpoint",
                                lm_checkpoint_24khz(), path("cut.ecdc")});
    EXPECT_EQ(run.exit_code, 1) << "cut " << cut;
    expect_contains(run.err, "cannot decompress " + path("cut.ecdc"));
    expect_contains(run.err, "truncated LM-coded data");
    EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"cut.ecdc"}) << "cut " << cut;
  }
}

TEST_F(CliTest, LmCheckpointOfTheWrongModelIsNamed) {
  // The 48 kHz LM predicts 16 codebooks; the 24 kHz codec has 32: refused at
  // load, naming the file.
  const CliRun run = run_cli({"-f", "--lm", "--checkpoint", checkpoint_24khz(), "--lm-checkpoint",
                              lm_checkpoint_48khz(), testing::golden_path("inputs/tiny_24k.wav"),
                              path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "--lm-checkpoint " + lm_checkpoint_48khz());
  expect_contains(run.err, "16 codebooks");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, OfficialLmIsLookedUpInTheModelDir) {
  fs::create_directory(path("models"));
  const CliRun run = run_cli({"--model-dir", path("models"), "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("cases/speech_24k_6kbps_lm.ecdc"),
                              path("out.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, (fs::path(path("models")) / kLmCheckpoint24kHz).string());
  expect_contains(run.err, "not found");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"models"});
}

TEST_F(CliTest, CheckpointOfTheWrongModelIsNamed) {
  // The header names encodec_48khz; a 24 kHz checkpoint lacks its tensors.
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(),
                              testing::golden_path("cases/short_48k_6kbps.ecdc"), path("out.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "cannot load encodec_48khz from --checkpoint " + checkpoint_24khz());
  expect_contains(run.err, "encodec_48khz");

  // Compressing: the model follows --hq, and the error says so.
  const CliRun compress_run = run_cli({"--checkpoint", checkpoint_48khz(),
                                       testing::golden_path("inputs/tiny_24k.wav"),
                                       path("out.ecdc")});
  EXPECT_EQ(compress_run.exit_code, 1);
  expect_contains(compress_run.err, "cannot load encodec_24khz from --checkpoint " +
                                        checkpoint_48khz());
  expect_contains(compress_run.err, "needs --hq");
  EXPECT_TRUE(testing::files_in(dir_).empty());
}

TEST_F(CliTest, ModelDirIsWhereOfficialCheckpointsAreLookedUp) {
  fs::create_directory(path("models"));
  CliRun run = run_cli({"--model-dir", path("models"),
                        testing::golden_path("inputs/tiny_24k.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, (fs::path(path("models")) / kCheckpoint24kHz).string());
  expect_contains(run.err, "not found");

  // The environment variable does the same (the 48 kHz name, via the header).
  ASSERT_EQ(::setenv("ENCODEC_MODEL_DIR", path("models").c_str(), 1), 0);
  run = run_cli({testing::golden_path("cases/short_48k_6kbps.ecdc"), path("out.wav")});
  ::unsetenv("ENCODEC_MODEL_DIR");
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, (fs::path(path("models")) / kCheckpoint48kHz).string());
  expect_contains(run.err, "ENCODEC_MODEL_DIR");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"models"});
}

struct ResampleCase {
  int input_rate_hz;
  int input_channels;
  bool hq;
  int64_t input_frames;
};

TEST_F(CliTest, InputsAtOtherRatesAndChannelCountsAreConverted) {
  for (const ResampleCase& test :
       {ResampleCase{16000, 1, false, 5923}, ResampleCase{44100, 2, false, 13231},
        ResampleCase{24000, 1, true, 2411}}) {
    SCOPED_TRACE(std::to_string(test.input_rate_hz) + " Hz, " +
                 std::to_string(test.input_channels) + " channels" + (test.hq ? ", --hq" : ""));
    std::vector<std::vector<std::pair<double, double>>> tones = {{{440, 0.4}, {1234, 0.1}}};
    if (test.input_channels == 2) tones.push_back({{330, 0.3}});
    testing::write_pcm16(path("in.wav"), sines(test.input_frames, test.input_rate_hz, tones),
                test.input_rate_hz);
    const int model_rate_hz = test.hq ? 48000 : 24000;
    const int model_channels = test.hq ? 2 : 1;
    const std::string checkpoint = test.hq ? checkpoint_48khz() : checkpoint_24khz();
    std::vector<std::string> args = {"-f", "--checkpoint", checkpoint, path("in.wav"),
                                     path("out.ecdc")};
    if (test.hq) args.insert(args.begin(), "--hq");

    CliRun run = run_cli(args);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const EcdcHeader header = header_of(path("out.ecdc"));
    const int64_t expected_length =
        resampled_length(test.input_frames, test.input_rate_hz, model_rate_hz);
    EXPECT_EQ(header.audio_length, expected_length);
    EXPECT_EQ(header.model_name, test.hq ? "encodec_48khz" : "encodec_24khz");
    EXPECT_EQ(header.num_codebooks, test.hq ? 4 : 8);  // 6 kbps

    run = run_cli({"-f", "--checkpoint", checkpoint, path("out.ecdc"), path("out.wav")});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const Pcm16 pcm = read_pcm16(path("out.wav"));
    EXPECT_EQ(pcm.sample_rate_hz, model_rate_hz);
    EXPECT_EQ(pcm.channels, model_channels);
    EXPECT_EQ(pcm.frames, expected_length);
  }
}

TEST_F(CliTest, StereoInputToThe24kHzModelIsDownmixedToTheMean) {
  testing::write_pcm16(path("stereo.wav"), sines(7000, 24000, {{{300, 0.5}}, {{1000, 0.3}, {50, 0.2}}}),
              24000);
  const CliRun run = run_cli({"--reference", "--checkpoint", checkpoint_24khz(), path("stereo.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_target_bandwidth(6.0);
  const torch::Tensor stereo = read_audio(path("stereo.wav")).samples;
  const std::string expected = compress(model, stereo.mean(0, /*keepdim=*/true));
  EXPECT_TRUE(testing::read_file_bytes(path("stereo.ecdc")) == expected);
  // The comparison can tell channels apart: the left channel alone compresses differently.
  EXPECT_NE(compress(model, stereo.narrow(0, 0, 1)), expected);
}

TEST_F(CliTest, HelpExplainsEveryFlag) {
  const CliRun run = run_cli({"--help"});
  EXPECT_EQ(run.exit_code, 0);
  for (const char* flag :
       {"-b", "--bandwidth", "-f", "--force", "--hq", "-l", "--lm", "-r", "--rescale", "-s",
        "--decompress-suffix", "-q", "--quiet", "--checkpoint", "--lm-checkpoint", "--model-dir",
        "--threads", "--fast", "--reference", "--portable-lm", "det1", "--stream-block", "--precision", "bf16", "AVX512-BF16", "Usage: encodec [OPTIONS] INPUT [OUTPUT]", "ENCODEC_MODEL_DIR", ".ecdc",
        ".wav"}) {
    expect_contains(run.out, flag);
  }
  EXPECT_EQ(run.err, "");
}

TEST_F(CliTest, UnknownOptionAndMissingInputAreUsageErrors) {
  CliRun run = run_cli({"--frobnicate", testing::golden_path("inputs/tiny_24k.wav")});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "--frobnicate");
  run = run_cli({});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "INPUT is required");
  run = run_cli({"-b", "six", testing::golden_path("inputs/tiny_24k.wav")});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "six");
}

// --stream-block: the 24 kHz model through the streaming engine. Its .ecdc is
// the offline fast path's byte for byte (compress() with Kernels::kFast, in
// process), whatever the block size, and so is its decoded audio.
TEST_F(CliTest, StreamBlockWritesTheOfflineFastBytesForAnyBlockSize) {
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_kernels(Kernels::kFast);
  for (const char* input : {"inputs/speech_24k.wav", "inputs/chirp_odd_24k.wav", "inputs/tiny_24k.wav"}) {
    const Audio audio = read_audio(testing::golden_path(input));
    for (const double bandwidth : {1.5, 6.0, 24.0}) {
      model.set_target_bandwidth(bandwidth);
      const std::string offline = compress(model, audio.samples);
      for (const char* block : {"1", "441", "4096"}) {
        if (std::string(block) == "1" && audio.samples.size(1) > 30000) continue;
        std::ostringstream bandwidth_text;
        bandwidth_text << bandwidth;
        const CliRun run = run_cli({"-f", "-q", "--stream-block", block, "-b", bandwidth_text.str(),
                                    "--checkpoint", checkpoint_24khz(), testing::golden_path(input),
                                    path("out.ecdc")});
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == offline)
            << input << " at " << bandwidth << " kbps, blocks of " << block;
      }
    }
  }
  // Up to 12 kbps the fast path equals the reference on this model: the golden file.
  const CliRun run = run_cli({"-f", "--stream-block", "320", "-b", "6", "--checkpoint",
                              checkpoint_24khz(), testing::golden_path("inputs/speech_24k.wav"),
                              path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == reference_ecdc("speech_24k_6kbps"));
}

TEST_F(CliTest, StreamBlockDecompressionWritesTheOfflineFastDecode) {
  const std::string input = testing::golden_path("cases/long_24k_6kbps.ecdc");
  ASSERT_EQ(run_cli({"-f", "--fast", "--checkpoint", checkpoint_24khz(), input, path("fast.wav")})
                .exit_code, 0);
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_kernels(Kernels::kFast);
  const DecompressedAudio offline = decompress(
      testing::read_file_bytes(input), [&](const std::string&) { return model; });
  expect_wav_equals(path("fast.wav"), clamped(offline.samples), 24000);
  for (const char* block : {"100", "4096"}) {
    const CliRun run = run_cli({"-f", "--stream-block", block, "--checkpoint", checkpoint_24khz(),
                                input, path("streamed.wav")});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_TRUE(testing::read_file_bytes(path("streamed.wav")) ==
                testing::read_file_bytes(path("fast.wav")))
        << "blocks of " << block;
  }
}

TEST_F(CliTest, StreamBlockNeedsThe24kHzModelAndAPositiveSize) {
  CliRun run = run_cli({"--stream-block", "320", "--hq", "--checkpoint", checkpoint_48khz(),
                        testing::golden_path("inputs/short_48k.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "--stream-block");
  run = run_cli({"--stream-block", "320", "--checkpoint", checkpoint_48khz(),
                 testing::golden_path("cases/short_48k_6kbps.ecdc"), path("out.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "encodec_48khz");
  run = run_cli({"--stream-block", "0", testing::golden_path("inputs/tiny_24k.wav")});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "--stream-block");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{});
}

// With --reference, past 5 min 24 kHz audio streams with the fast kernels
// (bounded memory) unless --whole-file; 24 kbps, where this model's fast codes
// differ from the reference's on near-ties, shows which path ran.
TEST_F(CliTest, LongInputsStreamUnlessWholeFile) {
  const torch::Tensor audio = sines(24000 * 301, 24000, {{{220.0, 0.3}, {3150.0, 0.1}}});
  testing::write_pcm16(path("long.wav"), audio, 24000);
  const std::vector<std::string> common = {"-f", "-b", "24", "--checkpoint", checkpoint_24khz(),
                                           path("long.wav")};
  auto with = [&common](std::vector<std::string> args, const std::string& output) {
    args.insert(args.end(), common.begin(), common.end());
    args.push_back(output);
    return args;
  };
  CliRun run = run_cli(with({"--reference"}, path("auto.ecdc")));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_contains(run.err, "5.0 min of audio");
  expect_contains(run.err, "--whole-file");
  run = run_cli(with({"-q"}, path("fast.ecdc")));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  EXPECT_TRUE(testing::read_file_bytes(path("auto.ecdc")) == testing::read_file_bytes(path("fast.ecdc")));

  run = run_cli(with({"-q", "--reference", "--whole-file"}, path("whole.ecdc")));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EncodecModel reference = testing::golden_model("encodec_24khz");
  reference.set_target_bandwidth(24);
  const Audio input = read_audio(path("long.wav"));
  const std::string expected = compress(reference, input.samples);
  EXPECT_TRUE(testing::read_file_bytes(path("whole.ecdc")) == expected);
  EXPECT_FALSE(expected == testing::read_file_bytes(path("auto.ecdc")));

  // Decompression of a long file streams likewise: the default (fast) decode.
  run = run_cli({"-f", "--reference", "--checkpoint", checkpoint_24khz(), path("auto.ecdc"), path("auto.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  expect_contains(run.err, "min of audio");
  run = run_cli({"-f", "-q", "--checkpoint", checkpoint_24khz(), path("auto.ecdc"), path("fast.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("auto.wav")) == testing::read_file_bytes(path("fast.wav")));
}

// The default is the offline fast path's bytes (compress() with Kernels::kFast
// in process), the same on 1 and 2 threads and with the old --fast flag; at
// 24 kbps this model's fast codes differ from the reference's (near-ties), so
// --reference is seen to run something else: the reference's bytes.
TEST_F(CliTest, DefaultIsTheFastKernelsOnAnyThreadCountAndReferenceIsNot) {
  const std::string input = testing::golden_path("inputs/speech_24k.wav");
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_target_bandwidth(24);
  const Audio audio = read_audio(input);
  model.set_kernels(Kernels::kFast);
  const std::string fast = compress(model, audio.samples);
  model.set_kernels(Kernels::kReference);
  const std::string reference = compress(model, audio.samples);
  ASSERT_FALSE(fast == reference) << "no near-tie at 24 kbps: the test cannot tell the kernels apart";
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--threads", "1"}, {"--threads", "2"}, {"--fast", "--threads", "2"}}) {
    std::vector<std::string> args = {"-f", "-q", "-b", "24", "--checkpoint", checkpoint_24khz(), input,
                                     path("out.ecdc")};
    args.insert(args.begin(), flags.begin(), flags.end());
    const CliRun run = run_cli(args);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == fast) << flags[0] << " " << flags[1];
  }
  const CliRun run = run_cli({"-f", "-q", "--reference", "--threads", "1", "-b", "24", "--checkpoint",
                              checkpoint_24khz(), input, path("ref.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("ref.ecdc")) == reference);
}

TEST_F(CliTest, ReferenceExcludesTheFastKernelsOptions) {
  const std::string input = testing::golden_path("inputs/tiny_24k.wav");
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--fast"}, {"--stream-block", "320"}, {"--precision", "bf16"}}) {
    std::vector<std::string> args = {"--reference", "--checkpoint", checkpoint_24khz(), input, path("out.ecdc")};
    args.insert(args.begin(), flags.begin(), flags.end());
    const CliRun run = run_cli(args);
    EXPECT_EQ(run.exit_code, 2) << flags[0];
    expect_contains(run.err, "--reference");
    expect_contains(run.err, flags[0]);
  }
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{});
}

// --portable-lm: the deterministic LM coder. The file is the default raw
// file's header with "lmk": "det1" and its codes LM-coded on the deterministic
// kernels (lm_encode_chunk, in process); it decodes (no flag: the header names
// the coder) to the raw file's audio; and the bytes and the audio are the same
// with the kernels forced to the portable tier (another CPU).
TEST_F(CliTest, PortableLmFilesAreMarkedAndDecodeAlikeOnEveryTier) {
  const std::string input = testing::golden_path("inputs/speech_24k.wav");
  const std::vector<std::string> common = {"-f", "-q", "--checkpoint", checkpoint_24khz(), "--lm-checkpoint",
                                           lm_checkpoint_24khz()};
  auto with = [&common](std::vector<std::string> args) {
    args.insert(args.begin(), common.begin(), common.end());
    return args;
  };
  ASSERT_EQ(run_cli(with({input, path("raw.ecdc")})).exit_code, 0);
  CliRun run = run_cli(with({"--portable-lm", input, path("det.ecdc")}));
  ASSERT_EQ(run.exit_code, 0) << run.err;

  std::istringstream raw(testing::read_file_bytes(path("raw.ecdc")));
  EcdcHeader header = read_ecdc_header(raw);
  const EncodecConfig& config = testing::golden_model("encodec_24khz").config();
  const std::vector<EncodedFrame> frames = read_ecdc_frames(raw, header, config);
  ASSERT_EQ(frames.size(), 1u);
  header.use_lm = true;
  header.lm_coder = kLmCoderDeterministic;
  std::ostringstream expected;
  write_ecdc_header(expected, header);
  expected << lm_encode_chunk(testing::golden_lm("encodec_24khz", LmKernels::kDeterministic), frames[0].codes[0]);
  const std::string det = testing::read_file_bytes(path("det.ecdc"));
  EXPECT_TRUE(det == expected.str());
  EXPECT_EQ(header_of(path("det.ecdc")).lm_coder, "det1");

  ASSERT_EQ(run_cli(with({path("raw.ecdc"), path("raw.wav")})).exit_code, 0);
  run = run_cli(with({path("det.ecdc"), path("det.wav")}));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(testing::read_file_bytes(path("det.wav")) == testing::read_file_bytes(path("raw.wav")));

  const fast::VectorIsa best = fast::cpu_tier();
  fast::set_cpu_tier(fast::VectorIsa::kPortable);
  const CliRun portable_compress = run_cli(with({"--portable-lm", input, path("det_portable.ecdc")}));
  const CliRun portable_decompress = run_cli(with({path("det.ecdc"), path("det_portable.wav")}));
  fast::set_cpu_tier(best);
  ASSERT_EQ(portable_compress.exit_code, 0) << portable_compress.err;
  ASSERT_EQ(portable_decompress.exit_code, 0) << portable_decompress.err;
  EXPECT_TRUE(testing::read_file_bytes(path("det_portable.ecdc")) == det);
  EXPECT_TRUE(testing::read_file_bytes(path("det_portable.wav")) == testing::read_file_bytes(path("raw.wav")));
}

TEST_F(CliTest, UnknownLmCoderIsRefusedNamingIt) {
  std::string bytes = reference_ecdc("speech_24k_6kbps_lm");
  std::istringstream in(bytes);
  read_ecdc_header(in);
  const std::string body = bytes.substr(static_cast<size_t>(in.tellg()));
  std::ostringstream file;
  const std::string metadata = R"({"m": "encodec_24khz", "al": 1, "nc": 8, "lm": true, "lmk": "det7"})";
  file << "ECDC" << '\0' << '\0' << '\0' << '\0' << static_cast<char>(metadata.size()) << metadata << body;
  write_bytes(path("future.ecdc"), file.str());
  const CliRun run = run_cli({"--checkpoint", checkpoint_24khz(), "--lm-checkpoint", lm_checkpoint_24khz(),
                              path("future.ecdc"), path("out.wav")});
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "cannot decompress " + path("future.ecdc"));
  expect_contains(run.err, R"(unknown LM coder "lmk": "det7")");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{"future.ecdc"});
}

TEST_F(CliTest, WholeFileAndStreamBlockExcludeEachOther) {
  const CliRun run = run_cli({"--whole-file", "--stream-block", "320",
                              testing::golden_path("inputs/tiny_24k.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 2);
  expect_contains(run.err, "--whole-file");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{});
}

}  // namespace
}  // namespace encodec

namespace encodec {
namespace {

// --precision bf16 where bf16 is unavailable (forced through
// ENCODEC_DISABLE_BF16 so that this runs on any CPU): refused before any work,
// naming the missing feature.
TEST_F(CliTest, PrecisionBf16IsRefusedWhereUnavailable) {
  ::setenv("ENCODEC_DISABLE_BF16", "1", 1);
  const CliRun run = run_cli({"-f", "--precision", "bf16", "--checkpoint", checkpoint_24khz(),
                              testing::golden_path("inputs/tiny_24k.wav"), path("out.ecdc")});
  ::unsetenv("ENCODEC_DISABLE_BF16");
  EXPECT_EQ(run.exit_code, 1);
  expect_contains(run.err, "--precision bf16");
  expect_contains(run.err, "AVX512-BF16");
  EXPECT_EQ(testing::files_in(dir_), std::vector<std::string>{});
}

// --precision bf16 writes the offline bf16 path's bytes (the 24 kHz model
// streams, with any block size; the 48 kHz model runs its chunks), and the
// default (fp32, fast kernels) decompression reads them.
TEST_F(CliTest, PrecisionBf16WritesTheOfflineBf16BytesThatFp32Decompresses) {
  if (!bf16_unavailable_reason().empty()) GTEST_SKIP() << bf16_unavailable_reason();
  struct Case {
    std::string model, input, checkpoint;
    std::vector<std::vector<std::string>> modes;  // extra flags, one run each
  };
  const Case cases[] = {
      {"encodec_24khz", "inputs/speech_24k.wav", checkpoint_24khz(), {{}, {"--stream-block", "441"}}},
      {"encodec_48khz", "inputs/music_stereo_48k.wav", checkpoint_48khz(), {{"--hq"}}}};
  for (const Case& c : cases) {
    EncodecModel model = testing::golden_model(c.model);
    model.set_target_bandwidth(6.0);
    model.set_precision(Precision::kBf16);
    const Audio audio = read_audio(testing::golden_path(c.input));
    const std::string offline = compress(model, audio.samples);
    for (const std::vector<std::string>& mode : c.modes) {
      std::vector<std::string> args = {"-f", "-q", "--precision", "bf16", "-b", "6",
                                       "--checkpoint", c.checkpoint};
      args.insert(args.end(), mode.begin(), mode.end());
      args.push_back(testing::golden_path(c.input));
      args.push_back(path("out.ecdc"));
      const CliRun run = run_cli(args);
      ASSERT_EQ(run.exit_code, 0) << run.err;
      EXPECT_TRUE(testing::read_file_bytes(path("out.ecdc")) == offline) << c.input;
    }
    const CliRun run = run_cli({"-f", "-q", "--checkpoint", c.checkpoint, path("out.ecdc"),
                                path("out.wav")});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const Pcm16 decoded = read_pcm16(path("out.wav"));
    EXPECT_EQ(decoded.frames, audio.samples.size(1));
    EXPECT_EQ(decoded.channels, audio.samples.size(0));
  }
}

}  // namespace
}  // namespace encodec
