// codec_quality: SI-SNR and multi-resolution mel distance of an EnCodec
// checkpoint (default: the shipped demo model) against libopus, on folders of
// audio (e.g. held-out speech and music). Prints one row per folder, codec and
// bitrate: the means over the files.
//
//   build/bench/codec_quality --set speech=/tmp/demo_data/heldout/speech \
//       --set music=/tmp/demo_data/heldout/music [--checkpoint FILE] [--opus-kbps 6,12]
//
// Everything runs at 24 kHz mono (files are converted as for the codec).
// EnCodec: the whole file through the model at each --bandwidths (offline,
// the reference kernels, as `encodec-train --evaluate`). Opus: libopus at
// 24 kHz, 20 ms frames, OPUS_APPLICATION_AUDIO, complexity 10, VBR at the
// target bitrate (the achieved bitrate is printed), its look-ahead removed so
// that output and input line up. Mel distance: the trainer's mel loss (L1 + L2
// of 64-band mel spectra over windows of 2^5..2^11 samples), the quantity
// `encodec-train --evaluate` reports.
#include <opus.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "encodec/audio_io.h"
#include "encodec/demo_model.h"
#include "encodec/encodec.h"
#include "encodec/train.h"
#include "losses.h"  // train/src: MultiScaleMelLoss

namespace {

constexpr int kRateHz = 24000;

struct Scores {
  double si_snr_db = 0, mel = 0, kbps = 0;
  int files = 0;
  void add(double snr, double mel_distance, double rate_kbps) {
    si_snr_db += snr;
    mel += mel_distance;
    kbps += rate_kbps;
    ++files;
  }
};

// The audio of every file under `dir` (sorted by name), 24 kHz mono [1, T].
std::vector<std::pair<std::string, torch::Tensor>> read_folder(const std::string& dir) {
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::pair<std::string, torch::Tensor>> files;
  for (const std::string& path : paths) {
    try {
      const encodec::Audio audio = encodec::read_audio(path);
      files.emplace_back(path, encodec::convert_audio(audio.samples, audio.sample_rate_hz, kRateHz, 1));
    } catch (const encodec::AudioError&) {
      // not audio: skipped
    }
  }
  if (files.empty()) throw std::runtime_error("no audio file in " + dir);
  return files;
}

// Opus round trip of x [1, T] at `bitrate_bps`: the decoded audio [1, T] and the
// achieved bitrate in kbps.
std::pair<torch::Tensor, double> opus_round_trip(const torch::Tensor& x, int bitrate_bps) {
  constexpr int kFrame = kRateHz / 50;  // 20 ms
  int error = 0;
  OpusEncoder* encoder = opus_encoder_create(kRateHz, 1, OPUS_APPLICATION_AUDIO, &error);
  OpusDecoder* decoder = opus_decoder_create(kRateHz, 1, &error);
  if (encoder == nullptr || decoder == nullptr) throw std::runtime_error("libopus: cannot create a codec");
  opus_encoder_ctl(encoder, OPUS_SET_BITRATE(bitrate_bps));
  opus_encoder_ctl(encoder, OPUS_SET_COMPLEXITY(10));
  opus_int32 lookahead = 0;
  opus_encoder_ctl(encoder, OPUS_GET_LOOKAHEAD(&lookahead));
  const int64_t length = x.size(-1);
  // Zeros after the signal push its end out through the look-ahead.
  const int64_t padded = (length + lookahead + kFrame - 1) / kFrame * kFrame;
  torch::Tensor input = torch::zeros({padded}, torch::kFloat32);
  input.narrow(0, 0, length).copy_(x.reshape({-1}));
  torch::Tensor output = torch::zeros({padded}, torch::kFloat32);
  std::vector<unsigned char> packet(4000);
  int64_t bytes = 0;
  for (int64_t start = 0; start < padded; start += kFrame) {
    const int size = opus_encode_float(encoder, input.data_ptr<float>() + start, kFrame, packet.data(),
                                       static_cast<opus_int32>(packet.size()));
    if (size < 0) throw std::runtime_error(std::string("opus_encode_float: ") + opus_strerror(size));
    bytes += size;
    const int decoded = opus_decode_float(decoder, packet.data(), size, output.data_ptr<float>() + start, kFrame, 0);
    if (decoded != kFrame) throw std::runtime_error("opus_decode_float returned " + std::to_string(decoded));
  }
  opus_encoder_destroy(encoder);
  opus_decoder_destroy(decoder);
  const double kbps = static_cast<double>(bytes) * 8 / (static_cast<double>(padded) / kRateHz) / 1000;
  return {output.narrow(0, lookahead, length).unsqueeze(0), kbps};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SI-SNR and mel distance of an EnCodec checkpoint and of libopus on folders of audio"};
  std::vector<std::string> sets;
  std::string checkpoint;
  std::vector<double> bandwidths;  // default: every official bandwidth the checkpoint has codebooks for
  std::vector<double> opus_kbps = {6.0, 12.0};
  int threads = 1;
  app.add_option("--set", sets, "NAME=DIR: a folder of audio files, reported as NAME (repeatable)")->required();
  app.add_option("--checkpoint", checkpoint, "EnCodec 24 kHz checkpoint (default: the demo model)");
  app.add_option("--bandwidths", bandwidths,
                 "EnCodec bandwidths in kbps (default: each of 1.5, 3, 6, 12, 24 the checkpoint has codebooks for)")
      ->delimiter(',');
  app.add_option("--opus-kbps", opus_kbps, "Opus bitrates in kbps")->delimiter(',');
  app.add_option("--threads", threads, "LibTorch threads");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(threads);
    if (checkpoint.empty()) {
      const std::optional<std::string> demo = encodec::find_demo_checkpoint();
      if (!demo) throw std::runtime_error("no demo model found: give --checkpoint FILE");
      checkpoint = *demo;
    }
    encodec::EncodecModel model = encodec::EncodecModel::from_checkpoint(checkpoint, "encodec_24khz");
    if (bandwidths.empty()) {
      for (double bandwidth : model.config().target_bandwidths) {
        if (model.config().num_codebooks(bandwidth) <= model.config().n_q) bandwidths.push_back(bandwidth);
      }
    }
    encodec::train::MultiScaleMelLoss mel_loss(kRateHz);
    torch::NoGradGuard no_grad;
    std::printf("checkpoint %s, %d thread(s)\n", checkpoint.c_str(), threads);
    std::printf("%-8s %-16s %6s %10s %10s %6s\n", "set", "codec", "kbps", "SI-SNR dB", "mel dist", "files");
    for (const std::string& set : sets) {
      const size_t equals = set.find('=');
      if (equals == std::string::npos) throw std::runtime_error("--set " + set + ": expected NAME=DIR");
      const std::string name = set.substr(0, equals);
      const auto files = read_folder(set.substr(equals + 1));
      std::map<std::string, Scores> rows;
      std::vector<std::string> order;
      auto score = [&](const std::string& codec, const torch::Tensor& x, const torch::Tensor& y, double kbps) {
        if (!rows.count(codec)) order.push_back(codec);
        rows[codec].add(encodec::train::si_snr_db(x.reshape({-1}), y.reshape({-1})),
                        mel_loss(x.unsqueeze(0), y.unsqueeze(0)).item<double>(), kbps);
      };
      for (const auto& [path, x] : files) {
        for (double bandwidth : bandwidths) {
          model.set_target_bandwidth(bandwidth);
          const torch::Tensor y = model.decode(model.encode(x.unsqueeze(0))).squeeze(0).narrow(-1, 0, x.size(-1));
          char label[32];
          std::snprintf(label, sizeof label, "encodec %.1f", bandwidth);
          score(label, x, y, bandwidth);
        }
        for (double kbps : opus_kbps) {
          auto [y, achieved] = opus_round_trip(x, static_cast<int>(std::lround(kbps * 1000)));
          char label[32];
          std::snprintf(label, sizeof label, "opus %.0f", kbps);
          score(label, x, y, achieved);
        }
      }
      for (const std::string& codec : order) {
        const Scores& s = rows[codec];
        std::printf("%-8s %-16s %6.2f %10.2f %10.4f %6d\n", name.c_str(), codec.c_str(), s.kbps / s.files,
                    s.si_snr_db / s.files, s.mel / s.files, s.files);
      }
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "codec_quality: %s\n", error.what());
    return 1;
  }
}
