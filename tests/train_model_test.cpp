// The trainable model against the inference model and the official layout:
// the same state_dict names and shapes as the official checkpoints, the same
// codes and audio as the core's reference kernels with the golden weights, and
// checkpoints written by the trainer that the core's loader reads back
// unchanged (tensors, codes), and that resume training exactly.
#include <zip.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "encodec/audio_io.h"
#include "encodec/checkpoint_writer.h"
#include "encodec/encodec.h"
#include "golden.h"
#include "trainable_encodec.h"
#include "trainer_impl.h"
#include "train_test_util.h"

namespace encodec::train {
namespace {

using ::encodec::testing::golden_path;

// name -> shape of a model's state_dict.
std::map<std::string, std::vector<int64_t>> shapes_of(const StateDict& state) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : state) shapes[name] = tensor.sizes().vec();
  return shapes;
}

void expect_official_layout(const std::string& model_name, const EncodecConfig& config) {
  std::ifstream in(golden_path("official_shapes.json"));
  const nlohmann::json shapes = nlohmann::json::parse(in).at(model_name);
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& item : shapes.items()) expected[item.key()] = item.value().get<std::vector<int64_t>>();
  TrainableEncodec model(config, CodebookOptions{});
  const auto actual = shapes_of(model->state_dict());
  EXPECT_EQ(actual.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    auto found = actual.find(name);
    if (found == actual.end()) {
      ADD_FAILURE() << model_name << ": missing " << name;
    } else {
      EXPECT_EQ(found->second, shape) << model_name << ": " << name;
    }
  }
  for (const auto& [name, shape] : actual) EXPECT_TRUE(expected.count(name)) << model_name << ": extra " << name;
}

TEST(TrainableModel, StateDictIsTheOfficialLayout24kHz) {
  ENCODEC_REQUIRE_GOLDEN();
  expect_official_layout("encodec_24khz", EncodecConfig::official_24khz());
}

TEST(TrainableModel, StateDictIsTheOfficialLayout48kHz) {
  ENCODEC_REQUIRE_GOLDEN();
  expect_official_layout("encodec_48khz", EncodecConfig::official_48khz());
}

// The golden checkpoint in the trainable model (eval mode) and in the core's
// inference model (reference kernels) on the golden speech: same codes at
// every bandwidth, and the same audio bit for bit (the same LibTorch operations
// in the same order: weight norm folded by _weight_norm, reflect padding, conv1d,
// lstm).
TEST(TrainableModel, MatchesTheInferenceModelOnTheGoldenCheckpoint) {
  ENCODEC_REQUIRE_GOLDEN();
  torch::NoGradGuard no_grad;
  const std::string checkpoint = golden_path("encodec_24khz-random.th");
  const StateDict state = load_checkpoint(checkpoint);
  const EncodecConfig config = EncodecConfig::infer_from_state_dict("encodec_24khz", state);
  TrainableEncodec trainable(config, CodebookOptions{});
  trainable->load_state_dict(state, checkpoint);
  trainable->eval();
  EncodecModel inference = EncodecModel::from_checkpoint(checkpoint, "encodec_24khz", KernelSet::kReferenceOnly);

  const torch::Tensor wav = read_audio(golden_path("inputs/speech_24k.wav")).samples.unsqueeze(0);
  for (double bandwidth : {1.5, 6.0, 24.0}) {
    inference.set_target_bandwidth(bandwidth);
    const EncodedFrame frame = inference.encode(wav).at(0);
    const torch::Tensor decoded = inference.decode({frame});
    TrainableEncodecImpl::Output out = trainable->forward(wav, config.num_codebooks(bandwidth));
    ASSERT_EQ(out.codes.transpose(0, 1).sizes(), frame.codes.sizes()) << bandwidth << " kbps";
    EXPECT_TRUE(torch::equal(out.codes.transpose(0, 1), frame.codes)) << bandwidth << " kbps";
    // The forward trims to the input length; the inference decode does not.
    const torch::Tensor expected = decoded.narrow(-1, 0, wav.size(-1));
    const double max_error = (out.audio - expected).abs().max().item<double>();
    const double peak = expected.abs().max().item<double>();
    EXPECT_EQ(max_error, 0.0) << bandwidth << " kbps, peak " << peak;
    std::cout << "[ decoded  ] " << bandwidth << " kbps: max |trainable - inference| = " << max_error << ", peak "
              << peak << "\n";
  }
  // The reference's own decode of its codes too (manifest: speech_24k at 6 kbps).
  const torch::Tensor golden_codes = ::encodec::testing::load_npy(golden_path("cases/speech_24k_6kbps.codes.npy")).to(torch::kInt64);
  const torch::Tensor codes = trainable->forward(wav, config.num_codebooks(6.0)).codes.squeeze(1);
  const double equal = codes.eq(golden_codes).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(equal, 0.999);
}

// Every tensor the trainer writes comes back bit for bit through the core's
// reader, the archive has torch.save's entries, and the core's model built
// from the file encodes as the trainable model does.
TEST(TrainerCheckpoint, RoundTripsThroughTheCoreLoader) {
  TrainConfig config = tiny_config();
  Trainer trainer(config);
  trainer.step(test_batch(config, 2));  // k-means and one EMA update: buffers are not trivial
  const std::string dir = ::encodec::testing::make_temp_dir("train_checkpoint");
  const std::string path = dir + "/tiny_model.th";
  trainer.save(path);

  const StateDict written = trainer.state_dict();
  const StateDict read = load_checkpoint(path);
  ASSERT_EQ(shapes_of(read), shapes_of(written));
  for (const auto& [name, tensor] : written) {
    EXPECT_TRUE(torch::equal(read.at(name), tensor)) << name;
    EXPECT_EQ(read.at(name).scalar_type(), tensor.scalar_type()) << name;
  }
  // torch.save's archive: <stem>/data.pkl, <stem>/version "3\n", stored storages.
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &code);
  ASSERT_NE(archive, nullptr);
  const int64_t entries = zip_get_num_entries(archive, 0);
  EXPECT_EQ(entries, static_cast<int64_t>(written.size()) + 3);
  for (int64_t i = 0; i < entries; ++i) {
    zip_stat_t stat;
    ASSERT_EQ(zip_stat_index(archive, i, 0, &stat), 0);
    EXPECT_EQ(std::string(stat.name).rfind("tiny_model/", 0), 0u) << stat.name;
    EXPECT_EQ(stat.comp_method, ZIP_CM_STORE) << stat.name;
  }
  zip_file_t* version = zip_fopen(archive, "tiny_model/version", 0);
  ASSERT_NE(version, nullptr);
  char text[8] = {};
  EXPECT_EQ(zip_fread(version, text, sizeof text), 2);
  EXPECT_STREQ(text, "3\n");
  zip_fclose(version);
  zip_discard(archive);

  // The core's loader (what `encodec --checkpoint` runs) infers the widths and encodes alike.
  EncodecModel inference = EncodecModel::from_checkpoint(path, "encodec_24khz", KernelSet::kReferenceOnly);
  EXPECT_EQ(inference.config().n_filters, config.model.n_filters);
  EXPECT_EQ(inference.config().n_q, config.model.n_q);
  EXPECT_EQ(inference.config().bins, config.model.bins);
  Trainer::Impl& impl = trainer.impl();
  impl.model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor wav = test_batch(config, 1);
  // A bandwidth needing more codebooks than the file holds is refused, saying so.
  try {
    inference.set_target_bandwidth(1.5);
    ADD_FAILURE() << "1.5 kbps accepted with 4 codebooks of 16 entries";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("has 4 codebooks of 16 entries; 1.5 kbps needs 5"), std::string::npos)
        << error.what();
  }
  // No bandwidth set: every codebook (the tiny model's 16-entry codebooks fit
  // none of the official bandwidths, which assume 1024 entries).
  const int n_q = config.model.n_q;
  ASSERT_EQ(inference.num_codebooks(), n_q);
  EXPECT_TRUE(torch::equal(inference.encode(wav).at(0).codes, impl.model->forward(wav, n_q).codes.transpose(0, 1)));
}

// A trainer resumed from a checkpoint continues exactly as the original: the
// same weights, codebooks and optimizer moments after a further step.
TEST(TrainerCheckpoint, ResumeContinuesExactly) {
  TrainConfig config = tiny_config();
  config.model.target_bandwidths = {config.model.target_bandwidths.back()};  // no random choice
  config.codebooks.threshold_ema_dead_code = 0;  // no random replacement
  config.discriminator_update_probability = 1.0;
  const torch::Tensor batch = test_batch(config, 2);
  Trainer original(config);
  original.step(batch);
  original.step(batch);
  const std::string path = ::encodec::testing::make_temp_dir("train_resume") + "/resume.th";
  original.save(path);

  Trainer resumed(config);
  resumed.resume(path);
  EXPECT_EQ(resumed.step_count(), 2);
  original.step(batch);
  resumed.step(batch);
  const StateDict a = original.state_dict(), b = resumed.state_dict();
  for (const auto& [name, tensor] : a) EXPECT_TRUE(torch::equal(tensor, b.at(name))) << name;
}

// The config's learning rate applies after a resume (not the saved Adam
// state's): at a rate of 1e-30 a further step leaves every trained parameter
// as saved to float precision (only the codebooks' EMA buffers move), at the
// original rate it does not.
TEST(TrainerCheckpoint, ResumeTakesTheConfigsLearningRate) {
  TrainConfig config = tiny_config();
  config.model.target_bandwidths = {config.model.target_bandwidths.back()};
  config.codebooks.threshold_ema_dead_code = 0;
  const torch::Tensor batch = test_batch(config, 2);
  Trainer original(config);
  original.step(batch);
  const std::string path = ::encodec::testing::make_temp_dir("train_resume_lr") + "/resume.th";
  original.save(path);
  const StateDict saved = original.state_dict();

  TrainConfig stopped = config;
  stopped.learning_rate = 1e-30;
  Trainer resumed(stopped);
  resumed.resume(path);
  resumed.step(batch);
  original.step(batch);
  int64_t parameters = 0;
  for (const auto& [name, tensor] : resumed.state_dict()) {
    if (name.find("._codebook.") != std::string::npos) continue;  // buffers, not trained by Adam
    ++parameters;
    EXPECT_TRUE(torch::allclose(tensor, saved.at(name), 1e-6, 1e-12)) << name << " moved at learning rate 1e-30";
  }
  EXPECT_GT(parameters, 10);
  int64_t moved = 0;
  for (const auto& [name, tensor] : original.state_dict()) moved += !torch::allclose(tensor, saved.at(name), 1e-6, 1e-12);
  EXPECT_GT(moved, 10) << "the original rate moves the parameters";
}

TEST(TrainerCheckpoint, ResumeWithoutTheSideFileSaysWhy) {
  TrainConfig config = tiny_config();
  Trainer trainer(config);
  const std::string path = ::encodec::testing::make_temp_dir("train_resume_missing") + "/model.th";
  save_checkpoint(path, trainer.state_dict());
  try {
    Trainer(config).resume(path);
    FAIL() << "resumed without model.th.trainer";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("model.th.trainer"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace encodec::train
