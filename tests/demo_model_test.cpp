// The shipped demo model (models/encodec_demo_24khz.th) and the fallback to it:
// found in the source tree, loaded as the causal 24 kHz layout the `encodec`
// command's bandwidths need, used by the command and by encodecd's model
// loading when no official checkpoint is cached, and said to be the demo model.
#include "encodec/demo_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "encodec/audio_io.h"
#include "encodec/cli.h"
#include "encodec/compress.h"
#include "encodec/ecdc.h"
#include "encodec/live_model.h"
#include "encodec/model_store.h"
#include "golden.h"
#include "cli_run.h"
#include "scoped_env.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_cli;
using testing::ScopedEnv;

const std::string kShippedDemo = std::string(ENCODEC_SOURCE_DIR) + "/models/" + kDemoCheckpoint24kHz;

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}


// A second of two partials, amplitude 0.3.
torch::Tensor test_audio() {
  const torch::Tensor t = torch::arange(24000, torch::kFloat64) / 24000.0;
  return (0.2 * torch::sin(2 * M_PI * 220.0 * t) + 0.1 * torch::sin(2 * M_PI * 1330.0 * t))
      .to(torch::kFloat32)
      .unsqueeze(0);
}

// Every test runs with an empty hub cache and no model folder from the
// environment, as on a fresh machine.
class DemoModelTest : public ::testing::Test {
 protected:
  void SetUp() override { fs::create_directories(dir_ + "/torch/hub/checkpoints"); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_ = testing::make_temp_dir("demo_model");
  ScopedEnv torch_home_{"TORCH_HOME", dir_ + "/torch"};
  ScopedEnv no_model_dir_{"ENCODEC_MODEL_DIR", std::nullopt};
  ScopedEnv no_demo_override_{"ENCODEC_DEMO_MODEL", std::nullopt};
};

TEST_F(DemoModelTest, TheShippedFileIsFoundAndIsTheCausal24kHzLayout) {
  ASSERT_TRUE(fs::is_regular_file(kShippedDemo)) << kShippedDemo << " is not in the source tree";
  const std::optional<std::string> found = find_demo_checkpoint();
  ASSERT_TRUE(found);
  // The installed copy, if this machine has one, must be the same file.
  EXPECT_EQ(file_bytes(*found), file_bytes(kShippedDemo)) << *found;
  EXPECT_LT(fs::file_size(kShippedDemo), 5u << 20) << "the demo model should stay a few MB";

  const EncodecModel model = EncodecModel::from_checkpoint(kShippedDemo, "encodec_24khz");
  const EncodecConfig& config = model.config();
  EXPECT_TRUE(config.causal);
  EXPECT_EQ(config.ratios, (std::vector<int>{8, 5, 4, 2}));
  EXPECT_EQ(config.bins, 1024);
  EXPECT_GE(config.n_q, 8);  // 6 kbps at 75 frames/s of 10 bits
  // Its codes decode, and the decoded audio encodes to codes again (not a
  // constant: a collapsed model gives one code per codebook everywhere).
  const std::vector<EncodedFrame> frames = model.encode(test_audio().unsqueeze(0));
  ASSERT_FALSE(frames.empty());
  const torch::Tensor codes = frames[0].codes;
  const torch::Tensor decoded = model.decode(frames);
  EXPECT_EQ(decoded.size(-1), 24000);
  EXPECT_TRUE(torch::isfinite(decoded).all().item<bool>());
  EXPECT_GT(std::get<0>(at::_unique(codes[0][0])).numel(), 1) << "one code for the whole second";
}

TEST_F(DemoModelTest, EnvironmentVariableChoosesTheFile) {
  ScopedEnv chosen("ENCODEC_DEMO_MODEL", path("elsewhere.th"));
  try {
    find_demo_checkpoint();
    ADD_FAILURE() << "a missing chosen file is neither an error nor replaced by another";
  } catch (const DemoModelError& error) {
    EXPECT_NE(std::string(error.what()).find("ENCODEC_DEMO_MODEL"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(path("elsewhere.th")), std::string::npos) << error.what();
  }
  fs::copy_file(kShippedDemo, path("elsewhere.th"));
  EXPECT_EQ(find_demo_checkpoint(), path("elsewhere.th"));
}

// With no official model cached, `encodec` compresses with the demo model and
// says so; the file decompresses with it, and the codes are those the demo
// model gives in-process.
TEST_F(DemoModelTest, CliFallsBackToTheDemoModel) {
  ASSERT_FALSE(official_checkpoint_in_hub_cache(kCheckpoint24kHz));
  const torch::Tensor audio = test_audio();
  testing::write_pcm16(path("in.wav"), audio, 24000);
  CliRun run = run_cli({"-b", "3", path("in.wav"), path("out.ecdc")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("demo model"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find(kShippedDemo), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--download fetches the official model"), std::string::npos) << run.err;

  const EncodecModel model = EncodecModel::from_checkpoint(kShippedDemo, kModelNameDemo24kHz);
  const std::string bytes = file_bytes(path("out.ecdc"));
  std::istringstream in(bytes);
  const EcdcHeader header = read_ecdc_header(in);
  // Its own name: neither the official model nor the Python package takes
  // the file for one of theirs.
  EXPECT_EQ(header.model_name, kModelNameDemo24kHz);
  const std::vector<EncodedFrame> frames = read_ecdc_frames(in, header, model.config());
  ASSERT_EQ(frames.size(), 1u);
  EncodecModel at_3kbps = EncodecModel::from_checkpoint(kShippedDemo, kModelNameDemo24kHz);
  at_3kbps.set_target_bandwidth(3.0);
  const torch::Tensor wav = read_audio(path("in.wav")).samples;
  const std::vector<EncodedFrame> expected = at_3kbps.encode(wav.unsqueeze(0));
  ASSERT_EQ(frames[0].codes.sizes(), expected[0].codes.sizes());
  // The command streams with the fast kernels: codes equal up to a rare near-tie.
  const double agreement = frames[0].codes.eq(expected[0].codes).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(agreement, 0.99);

  run = run_cli({path("out.ecdc"), path("out.wav")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("demo model"), std::string::npos) << run.err;
  // The file names the demo model: the official one would not decode it.
  EXPECT_EQ(run.err.find("--download"), std::string::npos) << run.err;
  EXPECT_EQ(read_audio(path("out.wav")).samples.size(-1), 24000);
}

// The demo model never decodes a file of the official model (it would give
// noise), and a demo file needs the demo model.
TEST_F(DemoModelTest, FilesDecodeOnlyWithTheModelTheyName) {
  // An official-named file: made by a model loaded under the official name.
  const EncodecModel as_official = EncodecModel::from_checkpoint(kShippedDemo, kModelName24kHz);
  std::ofstream(path("official.ecdc"), std::ios::binary) << compress(as_official, test_audio());
  CliRun run = run_cli({path("official.ecdc"), path("official.wav")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("official encodec_24khz"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--download"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(path("official.wav"))) << "nothing half-written is left";

  testing::write_pcm16(path("in.wav"), test_audio(), 24000);
  ASSERT_EQ(run_cli({"-q", path("in.wav"), path("demo.ecdc")}).exit_code, 0);
  {
    ScopedEnv missing("ENCODEC_DEMO_MODEL", path("gone.th"));
    run = run_cli({path("demo.ecdc"), path("demo.wav")});
    EXPECT_EQ(run.exit_code, 1);
    EXPECT_NE(run.err.find("$ENCODEC_DEMO_MODEL names " + path("gone.th")), std::string::npos) << run.err;
    EXPECT_FALSE(fs::exists(path("demo.wav")));
  }
  // --checkpoint gives the demo model explicitly: the file names it, so it decodes.
  run = run_cli({"--checkpoint", kShippedDemo, path("demo.ecdc"), path("demo.wav")});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  // The demo model has no LM.
  run = run_cli({"--lm", path("in.wav"), path("lm.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("demo model has no LM"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(path("lm.ecdc")));
}

TEST_F(DemoModelTest, CliSaysSoInItsHelpAndKeepsAnExplicitModelFolder) {
  ::testing::internal::CaptureStdout();
  const char* argv[] = {"encodec", "--help"};
  EXPECT_EQ(run_encodec_cli(2, argv), 0);
  const std::string help = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(help.find("demo model"), std::string::npos) << help;
  EXPECT_NE(help.find("--download"), std::string::npos) << help;

  // A model folder names the official file: its absence stays an error.
  testing::write_pcm16(path("in.wav"), test_audio(), 24000);
  fs::create_directories(path("models"));
  const CliRun run = run_cli({"--model-dir", path("models"), path("in.wav"), path("out.ecdc")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.err.find("demo model"), std::string::npos) << run.err;
}

TEST_F(DemoModelTest, LiveModelFallsBackToTheDemoModel) {
  const LiveModel live = load_live_model({});
  EXPECT_TRUE(live.demo);
  EXPECT_EQ(live.model.name(), kModelNameDemo24kHz);
  EXPECT_NE(live.source.find("demo model"), std::string::npos) << live.source;
  EXPECT_EQ(live.checksum, sha256_file(kShippedDemo));
  EXPECT_EQ(live.model.config().bins, 1024);

  LiveModelOptions with_folder;
  with_folder.model_dir = dir_;
  EXPECT_THROW(load_live_model(with_folder), LiveModelError);
}

}  // namespace
}  // namespace encodec
