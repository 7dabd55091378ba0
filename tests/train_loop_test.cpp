// The training loop: a tiny model's reconstruction losses fall over a few
// seeded steps, a full step with the discriminator updates every part, the
// data folder yields segments of its files at the model's rate, and the JSON
// configuration is read and checked.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "dataset.h"
#include "encodec/audio_io.h"
#include "encodec/checkpoint.h"
#include "encodec/checkpoint_writer.h"
#include "golden.h"
#include "trainer_impl.h"
#include "train_test_util.h"

namespace encodec::train {
namespace {

// Time and mel losses only (the discriminator's losses are not expected to
// fall in a few steps), one fixed batch: the mel loss of the last steps is
// well under that of the first.
TEST(Trainer, ReconstructionLossFallsOnATinyModel) {
  TrainConfig config = tiny_config();
  config.weights.adversarial = config.weights.feature = 0;
  config.model.target_bandwidths = {1.2};
  Trainer trainer(config);
  EXPECT_FALSE(trainer.impl().discriminator);
  const torch::Tensor batch = test_batch(config, 2);
  std::vector<double> mel, l1;
  for (int i = 0; i < 40; ++i) {
    const StepStats stats = trainer.step(batch);
    ASSERT_TRUE(std::isfinite(stats.mel) && std::isfinite(stats.time_l1)) << "step " << i;
    EXPECT_EQ(stats.n_q, 4);
    mel.push_back(stats.mel);
    l1.push_back(stats.time_l1);
  }
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += v[i];
    return sum / static_cast<double>(to - from);
  };
  const double first = mean(mel, 0, 3), last = mean(mel, 37, 40);
  std::cout << "[ losses   ] mel " << first << " -> " << last << ", l1 " << mean(l1, 0, 3) << " -> " << mean(l1, 37, 40) << "\n";
  EXPECT_LT(last, 0.7 * first);
  EXPECT_LT(mean(l1, 37, 40), mean(l1, 0, 3));
  EXPECT_EQ(trainer.step_count(), 40);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// One full step: every loss computed and finite, every generator parameter
// moved, every discriminator kernel moved. Exceptions with an exactly zero
// gradient: a weight-normed row of one element (its direction v / |v| cannot
// change, the 1x1 conv after a 1-channel bottleneck here), and discriminator
// biases, whose hinge gradients on real and fake cancel while every logit is
// inside the margin (d/db of mean(relu(1 - D(x))) + mean(relu(1 + D(y))) = -1 + 1).
TEST(Trainer, FullStepUpdatesGeneratorAndDiscriminator) {
  TrainConfig config = tiny_config();
  config.discriminator_update_probability = 1.0;
  Trainer trainer(config);
  Trainer::Impl& impl = trainer.impl();
  ASSERT_TRUE(impl.discriminator);
  std::vector<torch::Tensor> generator_before, discriminator_before;
  for (const auto& p : impl.model->parameters()) generator_before.push_back(p.detach().clone());
  for (const auto& p : impl.discriminator->parameters()) discriminator_before.push_back(p.detach().clone());

  const StepStats stats = trainer.step(test_batch(config, 2));
  for (double value : {stats.time_l1, stats.mel, stats.adversarial, stats.feature, stats.commitment, stats.discriminator}) {
    EXPECT_TRUE(std::isfinite(value));
  }
  EXPECT_GT(stats.commitment, 0.0);
  const auto generator_after = impl.model->named_parameters();
  int moved = 0;
  for (size_t i = 0; i < generator_before.size(); ++i) {
    const torch::Tensor& after = generator_after[i].value();
    const bool fixed_direction = ends_with(generator_after[i].key(), "weight_v") && after[0].numel() == 1;
    if (fixed_direction) continue;
    EXPECT_FALSE(torch::equal(generator_before[i], after)) << generator_after[i].key() << " did not move";
    ++moved;
  }
  EXPECT_GT(moved, 100);
  const auto discriminator_after = impl.discriminator->named_parameters();
  for (size_t i = 0; i < discriminator_before.size(); ++i) {
    if (ends_with(discriminator_after[i].key(), "bias")) continue;
    EXPECT_FALSE(torch::equal(discriminator_before[i], discriminator_after[i].value()))
        << discriminator_after[i].key() << " did not move";
  }
}

// Files at 16 and 24 kHz and a text file: the audio comes out at 24 kHz, each
// batch item is a stretch of one file (or a short file zero-padded), and a
// seed gives the same batch.
TEST(AudioFolder, SegmentsOfTheFilesAtTheModelRate) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_audio_folder");
  const torch::Tensor t16 = torch::arange(16000, torch::kFloat32) / 16000;
  ::encodec::testing::write_pcm16(dir + "/a.wav", (0.5 * torch::sin(2 * M_PI * 200 * t16)).unsqueeze(0), 16000);
  const torch::Tensor ramp = (torch::arange(2400, torch::kFloat32) / 2400 * 0.5).unsqueeze(0);
  std::filesystem::create_directories(dir + "/sub");
  ::encodec::testing::write_pcm16(dir + "/sub/b.wav", ramp, 24000);
  std::ofstream(dir + "/notes.txt") << "not audio\n";

  AudioFolder folder(dir, 24000, 1);
  EXPECT_EQ(folder.num_files(), 2u);
  EXPECT_EQ(folder.num_skipped(), 1u);
  EXPECT_NEAR(folder.total_seconds(), 1.1, 1e-9);

  const torch::Tensor a = convert_audio(read_audio(dir + "/a.wav").samples, 16000, 24000, 1);
  const torch::Tensor b = read_audio(dir + "/sub/b.wav").samples;
  std::mt19937_64 random(7), again(7);
  const torch::Tensor batch = folder.sample_batch(16, 4800, random);
  EXPECT_TRUE(torch::equal(batch, folder.sample_batch(16, 4800, again)));
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{16, 1, 4800}));
  int from_a = 0, from_b = 0;
  for (int64_t i = 0; i < 16; ++i) {
    const torch::Tensor item = batch[i][0];
    if (torch::equal(item.narrow(0, 0, 2400), b[0]) && item.narrow(0, 2400, 2400).abs().max().item<float>() == 0) {
      ++from_b;
      continue;
    }
    // A stretch of a: try the offsets where a holds the item's first sample.
    bool found = false;
    const torch::Tensor candidates = torch::nonzero(a[0].eq(item[0])).view(-1);
    for (int64_t c = 0; c < candidates.size(0) && !found; ++c) {
      const int64_t offset = candidates[c].item<int64_t>();
      found = offset + 4800 <= a.size(1) && torch::equal(item, a[0].narrow(0, offset, 4800));
    }
    EXPECT_TRUE(found) << "batch item " << i << " is no stretch of either file";
    from_a += found;
  }
  EXPECT_EQ(from_a + from_b, 16);
  EXPECT_GT(from_a, from_b);  // picked in proportion to length: 24000 against 2400 samples
}

// Items land at an RMS inside the range, unless the gain cap (a quiet item)
// or the peak (a spiky one) stops them; silence stays silence.
TEST(AudioFolder, LoudnessAugmentationScalesEachItemIntoTheRange) {
  const int64_t n = 4800;
  const torch::Tensor t = torch::arange(n, torch::kFloat64) / 24000;
  const torch::Tensor sine = torch::sin(2 * M_PI * 440 * t).to(torch::kFloat32);  // RMS -3 dB
  torch::Tensor batch = torch::zeros({5, 1, n});
  batch[0][0] = 0.5 * sine;   // loud
  batch[1][0] = 0.02 * sine;  // quiet: RMS -37 dB
  batch[2][0] = 1e-4 * sine;  // near silence: -83 dB, held back by the 20 dB cap
  batch[3][0][100] = 0.5;     // one spike: the peak limits the gain
  const torch::Tensor original = batch.clone();
  auto rms_db = [](const torch::Tensor& x) { return 20 * std::log10(x.to(torch::kFloat64).pow(2).mean().sqrt().item<double>()); };
  for (uint64_t seed = 0; seed < 20; ++seed) {
    torch::Tensor scaled = original.clone();
    std::mt19937_64 random(seed);
    scale_to_random_loudness(scaled, -26, -14, 20, random);
    for (int64_t i : {0, 1}) {
      EXPECT_GE(rms_db(scaled[i]), -26 - 1e-6) << "seed " << seed << " item " << i;
      EXPECT_LE(rms_db(scaled[i]), -14 + 1e-6) << "seed " << seed << " item " << i;
      // A gain, not another signal: proportional to the original.
      const double gain = (scaled[i].abs().max() / original[i].abs().max()).item<double>();
      EXPECT_TRUE(torch::allclose(scaled[i], original[i] * gain, 1e-5, 1e-7));
    }
    EXPECT_NEAR(rms_db(scaled[2]) - rms_db(original[2]), 20, 1e-4) << "seed " << seed;
    EXPECT_NEAR(scaled[3].abs().max().item<double>(), 0.99, 1e-6) << "seed " << seed;
    EXPECT_EQ(scaled[4].abs().max().item<float>(), 0.0f);
  }
}

TEST(AudioFolder, AFolderWithoutAudioSaysSo) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_audio_folder_empty");
  std::ofstream(dir + "/notes.txt") << "not audio\n";
  try {
    AudioFolder folder(dir, 24000, 1);
    FAIL() << "no error";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("holds no audio"), std::string::npos) << error.what();
  }
}

TEST(TrainConfig, ReadsJsonAndRefusesUnknownKeys) {
  const TrainConfig config = parse_train_config(R"({
    "model": {"n_filters": 16, "dimension": 32, "n_q": 4, "bins": 256, "target_bandwidths": [1.2, 2.4]},
    "codebooks": {"decay": 0.9}, "weights": {"adversarial": 0},
    "batch_size": 4, "segment_s": 0.5, "steps": 10, "device": "cpu", "normalize_segments": true,
    "segment_rms_db_min": -30})");
  EXPECT_EQ(config.model.n_filters, 16);
  EXPECT_EQ(config.model.bins, 256);
  EXPECT_EQ(config.model.target_bandwidths, (std::vector<double>{1.2, 2.4}));
  EXPECT_EQ(config.codebooks.decay, 0.9);
  EXPECT_EQ(config.weights.adversarial, 0.0);
  EXPECT_EQ(config.weights.feature, 3.0);  // untouched default
  EXPECT_EQ(config.batch_size, 4);
  EXPECT_TRUE(config.normalize_segments);
  EXPECT_EQ(config.segment_rms_db_min, -30.0);
  EXPECT_EQ(config.segment_rms_db_max, -14.0);  // untouched default
  validate(config);

  try {
    parse_train_config(R"({"model": {"n_filter": 16}})", "my.json");
    FAIL() << "no error";
  } catch (const std::invalid_argument& error) {
    EXPECT_STREQ(error.what(), "my.json.model: unknown key 'n_filter'");
  }
  EXPECT_THROW(parse_train_config(R"({"steps": "many"})"), std::invalid_argument);
  EXPECT_THROW(parse_train_config("{"), std::invalid_argument);
}

TEST(TrainConfig, ValidationNamesTheField) {
  auto message = [](const TrainConfig& config) {
    try {
      validate(config);
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  TrainConfig config = tiny_config();
  EXPECT_EQ(message(config), "");
  config.model.target_bandwidths = {6.0};  // 20 codebooks of 16 entries
  EXPECT_NE(message(config).find("6 kbps needs 20 codebooks, model.n_q is 4"), std::string::npos) << message(config);
  config = tiny_config();
  config.model.norm = "time_group_norm";
  EXPECT_NE(message(config).find("causal"), std::string::npos);
  config = tiny_config();
  config.model.name = "encodec_48khz";
  EXPECT_NE(message(config).find("model.name must be encodec_24khz"), std::string::npos);
  config = tiny_config();
  config.segment_s = 0.004;
  EXPECT_NE(message(config).find("segment_s"), std::string::npos);
  config = tiny_config();
  config.segment_rms_db_min = -10;
  config.segment_rms_db_max = -20;
  EXPECT_NE(message(config).find("segment_rms_db_min"), std::string::npos);
}

}  // namespace
}  // namespace encodec::train

namespace encodec::train {
namespace {

int run_main(std::vector<std::string> args, std::string* errors) {
  args.insert(args.begin(), "encodec-train");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  const int status = train_main(static_cast<int>(argv.size()), argv.data());
  ::testing::internal::GetCapturedStdout();
  *errors = ::testing::internal::GetCapturedStderr();
  return status;
}

// The command end to end: a JSON config, a data folder, a checkpoint the core
// loads, then --resume continuing from the saved step.
TEST(TrainMain, TrainsSavesAndResumes) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_main");
  std::filesystem::create_directories(dir + "/data");
  const TrainConfig tiny = tiny_config();
  ::encodec::testing::write_pcm16(dir + "/data/a.wav", test_batch(tiny, 2).reshape({1, -1}), 24000);
  std::ofstream(dir + "/tiny.json") << R"({"model": {"n_filters": 2, "dimension": 8, "lstm_layers": 1, "n_q": 4,
    "bins": 16, "target_bandwidths": [0.6, 1.2]}, "discriminator": {"filters": 4, "n_ffts": [256, 128],
    "win_lengths": [256, 128], "hop_lengths": [64, 32]}, "batch_size": 2, "segment_s": 0.2, "device": "cpu"})";
  const std::string checkpoint = dir + "/out/tiny.th";
  std::string errors;
  ASSERT_EQ(run_main({"-c", dir + "/tiny.json", "-d", dir + "/data", "-o", checkpoint, "--steps", "3", "--threads",
                      "1", "-q"}, &errors), 0) << errors;
  EXPECT_NE(errors.find("wrote " + checkpoint + " at step 3"), std::string::npos) << errors;
  EXPECT_TRUE(std::filesystem::exists(checkpoint + ".trainer"));
  EXPECT_EQ(EncodecModel::from_checkpoint(checkpoint, "encodec_24khz").config().n_q, 4);

  ASSERT_EQ(run_main({"-c", dir + "/tiny.json", "-d", dir + "/data", "-o", checkpoint, "--steps", "5", "--resume",
                      "--threads", "1", "-q"}, &errors), 0) << errors;
  EXPECT_NE(errors.find("from step 3"), std::string::npos) << errors;
  EXPECT_NE(errors.find("at step 5"), std::string::npos) << errors;

  // --evaluate: the widths from the checkpoint, one line per bandwidth that fits.
  ::testing::internal::CaptureStdout();
  std::vector<std::string> args = {"encodec-train", "-o", checkpoint, "--evaluate", dir + "/data", "--bandwidths",
                                   "0.6,1.2,6", "--threads", "1"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(train_main(static_cast<int>(argv.size()), argv.data()), 0);
  ::testing::internal::GetCapturedStderr();
  const std::string table = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(table.find("0.6 kbps  files 1"), std::string::npos) << table;
  EXPECT_NE(table.find("1.2 kbps  files 1"), std::string::npos) << table;
  EXPECT_EQ(table.find("6.0 kbps"), std::string::npos) << table;

  // --export-half: the same tensors rounded to float16, loadable as before, and smaller.
  const std::string half = dir + "/out/tiny_half.th";
  ASSERT_EQ(run_main({"-o", checkpoint, "--export-half", half}, &errors), 0) << errors;
  const StateDict full_state = load_checkpoint(checkpoint), half_state = load_checkpoint(half);
  ASSERT_EQ(half_state.size(), full_state.size());
  for (const auto& [name, tensor] : full_state) {
    ASSERT_TRUE(half_state.count(name)) << name;
    EXPECT_EQ(half_state.at(name).scalar_type(), torch::kFloat16) << name;
    EXPECT_TRUE(half_state.at(name).to(torch::kFloat32).equal(tensor.to(torch::kFloat16).to(torch::kFloat32))) << name;
  }
  EXPECT_LT(std::filesystem::file_size(half), std::filesystem::file_size(checkpoint));
  EXPECT_EQ(EncodecModel::from_checkpoint(half, "encodec_24khz").config().n_q, 4);
  StateDict too_large = full_state;
  too_large.begin()->second = too_large.begin()->second * 0 + 1e6;
  save_checkpoint(dir + "/large.th", too_large);
  EXPECT_EQ(run_main({"-o", dir + "/large.th", "--export-half", dir + "/large_half.th"}, &errors), 1);
  EXPECT_NE(errors.find("'" + too_large.begin()->first + "'"), std::string::npos) << errors;
  EXPECT_FALSE(std::filesystem::exists(dir + "/large_half.th"));
}

// Bad arguments: exit 2 for flags CLI11 refuses, 1 with the reason for the rest.
TEST(TrainMain, BadArgumentsSayWhy) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_main_bad");
  std::string errors;
  EXPECT_EQ(run_main({"--steps", "many"}, &errors), 2);
  EXPECT_EQ(run_main({"-c", dir + "/missing.json"}, &errors), 2);
  EXPECT_EQ(run_main({"-d", dir}, &errors), 1);
  EXPECT_NE(errors.find("give --checkpoint FILE"), std::string::npos) << errors;
  EXPECT_EQ(run_main({"-d", dir, "-o", dir + "/m.th", "--resume"}, &errors), 1);
  EXPECT_NE(errors.find("--resume: " + dir + "/m.th does not exist"), std::string::npos) << errors;
  EXPECT_EQ(run_main({"-d", dir, "-o", dir + "/m.th", "--n-q", "2", "--threads", "1"}, &errors), 1);
  EXPECT_NE(errors.find("3 kbps needs 4 codebooks, model.n_q is 2"), std::string::npos) << errors;
  EXPECT_EQ(run_main({"-d", dir, "-o", dir + "/m.th", "--threads", "1", "--no-adversarial", "--steps", "1"}, &errors), 1);
  EXPECT_NE(errors.find("holds no audio"), std::string::npos) << errors;
  EXPECT_EQ(run_main({"-d", dir, "-o", dir + "/m.th", "--device", "tpu"}, &errors), 1);
  EXPECT_NE(errors.find("device 'tpu'"), std::string::npos) << errors;
}

}  // namespace
}  // namespace encodec::train

namespace encodec::train {
namespace {

// x = (1, -1, 1, -1), estimate x + y with y = 0.5 (1, 1, -1, -1) orthogonal to
// x and of zero mean: target x, noise y, 10 log10(4 / 1) dB. Scale and offset
// do not count; an orthogonal estimate is capped below.
TEST(SiSnr, WorkedByHand) {
  const torch::Tensor x = torch::tensor({1.0, -1.0, 1.0, -1.0});
  const torch::Tensor y = torch::tensor({0.5, 0.5, -0.5, -0.5});
  EXPECT_NEAR(si_snr_db(x, x + y), 10 * std::log10(4.0), 1e-9);
  EXPECT_NEAR(si_snr_db(x, 3 * (x + y) + 7), 10 * std::log10(4.0), 1e-9);
  EXPECT_EQ(si_snr_db(x, x), 100.0);
  EXPECT_LT(si_snr_db(x, y), -100.0);
}

// The warm-up: its steps leave the quantizer out (no codebook initialized, no
// codebook used, the evaluation runs the autoencoder alone); run() then fits
// every codebook, also those no step has used yet, on the encoder's latents
// before the first quantized step; and codebooks fitted on the latents give
// distinct audio distinct codes (a collapsed quantizer gives one code).
TEST(Trainer, WarmUpBypassesTheQuantizerThenInitializesEveryCodebook) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_warmup");
  TrainConfig config = tiny_config();
  config.weights.adversarial = config.weights.feature = 0;
  config.model.target_bandwidths = {0.6, 1.2};  // 2 or 4 of the 4 codebooks per step
  const torch::Tensor audio = test_batch(config, 4);
  for (int i = 0; i < 4; ++i) {
    ::encodec::testing::write_pcm16(dir + "/" + std::to_string(i) + ".wav", audio[i], 24000);
  }
  config.warmup_steps = 3;
  config.kmeans_segments = 4;
  config.data_dir = dir;
  {
    Trainer trainer(config);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(trainer.step(audio.narrow(0, 0, 2)).n_q, 0) << i;
    EXPECT_FALSE(trainer.codebooks_initialized());
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(trainer.impl().model->quantizer()->layer(i)->codebook()->inited.item<float>(), 0.0f) << i;
    }
    const std::vector<Trainer::Evaluation> unquantized = trainer.evaluate(dir);
    ASSERT_EQ(unquantized.size(), 1u);
    EXPECT_TRUE(unquantized[0].distinct_codes.empty());
    EXPECT_EQ(unquantized[0].files, 4);

    trainer.init_codebooks(audio);
    const std::vector<Trainer::Evaluation> rows = trainer.evaluate(dir);
    ASSERT_EQ(rows.size(), 2u);
    ASSERT_EQ(rows[1].distinct_codes.size(), 4u);
    for (int q = 0; q < 4; ++q) {
      EXPECT_GT(rows[1].distinct_codes[q], 4) << q;
      EXPECT_GT(rows[1].perplexity[q], 3.0) << q;
    }
  }
  config.steps = 4;
  Trainer trainer(config);
  std::vector<int64_t> n_q;
  trainer.run([&](const StepStats& stats) { n_q.push_back(stats.n_q); });
  ASSERT_EQ(n_q.size(), 4u);
  EXPECT_EQ(n_q[2], 0);
  EXPECT_GT(n_q[3], 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(trainer.impl().model->quantizer()->layer(i)->codebook()->inited.item<float>(), 1.0f) << i;
  }
}

// The latent penalty pulls the encoder's output toward 0: the same step from
// the same state, with and without it, leaves a smaller mean square latent with it.
TEST(Trainer, LatentPenaltyShrinksTheLatent) {
  TrainConfig config = tiny_config();
  config.weights.adversarial = config.weights.feature = 0;
  config.warmup_steps = 10;
  const torch::Tensor audio = test_batch(config, 2);
  auto latent_after_steps = [&](double penalty) {
    TrainConfig c = config;
    c.latent_penalty = penalty;
    Trainer trainer(c);
    for (int i = 0; i < 5; ++i) trainer.step(audio);
    torch::NoGradGuard no_grad;
    return trainer.impl().model->encoder()->forward(audio).pow(2).mean().item<double>();
  };
  const double without = latent_after_steps(0), with = latent_after_steps(100);
  EXPECT_LT(with, 0.5 * without) << with << " vs " << without;
}

// zero_conv_biases: every convolution's bias starts at 0, the LSTMs' gate
// biases keep their random init; without the option the conv biases are random.
TEST(Trainer, ZeroConvBiasesLeavesTheLstmAlone) {
  TrainConfig config = tiny_config();
  config.weights.adversarial = config.weights.feature = 0;
  for (bool zero : {false, true}) {
    config.zero_conv_biases = zero;
    Trainer trainer(config);
    int conv_biases = 0, lstm_biases = 0;
    for (const auto& item : trainer.impl().model->named_parameters()) {
      const std::string& name = item.key();
      const bool all_zero = item.value().eq(0).all().item<bool>();
      if (ends_with(name, ".bias")) {
        ++conv_biases;
        EXPECT_EQ(all_zero, zero) << name;
      } else if (name.find(".bias_") != std::string::npos) {
        ++lstm_biases;
        EXPECT_FALSE(all_zero) << name;
      }
    }
    EXPECT_GT(conv_biases, 10);
    EXPECT_GT(lstm_biases, 0);
  }
}

// Evaluation of a model on a folder: one row per bandwidth with the mean of
// the per-file metrics, computed here from the model's own forward pass.
TEST(Trainer, EvaluateAveragesOverTheFiles) {
  const std::string dir = ::encodec::testing::make_temp_dir("train_evaluate");
  TrainConfig config = tiny_config();
  const torch::Tensor audio = test_batch(config, 2);
  ::encodec::testing::write_pcm16(dir + "/a.wav", audio[0], 24000);
  ::encodec::testing::write_pcm16(dir + "/b.wav", audio[1].narrow(1, 0, 3000), 24000);
  Trainer trainer(config);
  trainer.step(audio);  // k-means: codebooks in place
  const std::vector<Trainer::Evaluation> rows = trainer.evaluate(dir);
  ASSERT_EQ(rows.size(), 2u);
  Trainer::Impl& impl = trainer.impl();
  impl.model->eval();
  torch::NoGradGuard no_grad;
  for (const Trainer::Evaluation& row : rows) {
    EXPECT_EQ(row.files, 2);
    const int64_t n_q = config.model.num_codebooks(row.bandwidth_kbps);
    double l1 = 0, snr = 0;
    for (const std::string& name : {"a.wav", "b.wav"}) {
      const torch::Tensor x = read_audio(dir + "/" + name).samples.unsqueeze(0);
      const torch::Tensor y = impl.model->forward(x, n_q).audio;
      l1 += (x - y).abs().mean().item<double>() / 2;
      snr += si_snr_db(x, y) / 2;
    }
    EXPECT_NEAR(row.time_l1, l1, 1e-6) << row.bandwidth_kbps;
    EXPECT_NEAR(row.si_snr_db, snr, 1e-6) << row.bandwidth_kbps;
    EXPECT_GT(row.mel, 0.0);
  }
}

}  // namespace
}  // namespace encodec::train

namespace encodec::train {
namespace {

// Without the commitment loss the encoder learns only through the
// straight-through estimator: its parameters must still move.
TEST(Trainer, EncoderLearnsThroughTheQuantizerAlone) {
  TrainConfig config = tiny_config();
  config.weights.commitment = 0;
  config.weights.adversarial = config.weights.feature = 0;
  Trainer trainer(config);
  Trainer::Impl& impl = trainer.impl();
  std::vector<std::pair<std::string, torch::Tensor>> before;
  for (const auto& item : impl.model->encoder()->named_parameters()) {
    before.emplace_back(item.key(), item.value().detach().clone());
  }
  trainer.step(test_batch(config, 2));
  const auto after = impl.model->encoder()->named_parameters();
  int moved = 0;
  for (size_t i = 0; i < before.size(); ++i) moved += !torch::equal(before[i].second, after[i].value());
  // All but the weight-normed rows of one element (see FullStepUpdatesGeneratorAndDiscriminator).
  EXPECT_GE(moved, static_cast<int>(before.size()) - 4) << moved << " of " << before.size();
}

}  // namespace
}  // namespace encodec::train
