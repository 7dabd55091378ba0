// bf16 against fp32 (both on the fast kernels) with official-size models
// (random weights: speed does not depend on the values) at 6 kbps, in one run:
//  1. offline encode and decode real-time factors on 1 thread, and their ratio;
//  2. quality: SNR of the bf16 decode against the fp32 decode of the same
//     codes, and the share of identical codes per codebook level;
//  3. where the time goes: every SEANet layer (and the quantizer) timed in both
//     precisions, and alternative plans (which layer kinds run in bf16) with
//     their speed and quality, the measurements behind LayerPrecisions::for_precision;
//  4. the streaming engine (24 kHz): per-frame encode+decode p50 / p99 on one
//     thread and StreamBatcher capacity (real-time duplex streams) on 2 threads.
//
//   build/bench/precision [--seconds 10] [--repeats 3] [--models 24khz,48khz]
//                         [--frames 1000] [--ticks 200] [--max-streams 128] [--no-streaming]
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "encodec/encodec.h"
#include "fast/fast_quantizer.h"
#include "fast/fast_seanet.h"
#include "model_weights.h"
#include "streaming_measure.h"

namespace {

using namespace encodec::bench;
using encodec::Precision;
using encodec::fast::LayerPrecisions;

constexpr double kBandwidthKbps = 6.0;

double snr_db(const torch::Tensor& reference, const torch::Tensor& other) {
  const double signal = reference.pow(2).sum().item<double>();
  const double noise = (reference - other).pow(2).sum().item<double>();
  return noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
}

encodec::EncodecModel in_precision(encodec::EncodecModel model, Precision precision) {
  model.set_kernels(encodec::Kernels::kFast);
  model.set_precision(precision);
  return model;
}

// Codes of all chunks, [K, T].
torch::Tensor all_codes(const std::vector<encodec::EncodedFrame>& frames) {
  std::vector<torch::Tensor> chunks;
  for (const encodec::EncodedFrame& frame : frames) chunks.push_back(frame.codes[0]);
  return torch::cat(chunks, 1);
}

std::string percent_per_level(const torch::Tensor& a, const torch::Tensor& b) {
  std::string text;
  for (int64_t level = 0; level < a.size(0); ++level) {
    char cell[16];
    std::snprintf(cell, sizeof(cell), "%s%.1f", level ? " " : "",
                  100 * a[level].eq(b[level]).to(torch::kFloat64).mean().item<double>());
    text += cell;
  }
  return text;
}

// 1 and 2.
void offline_and_quality(const encodec::EncodecModel& model, const torch::Tensor& wav,
                         double seconds, int repeats) {
  const encodec::EncodecModel fp32 = in_precision(model, Precision::kFp32);
  const encodec::EncodecModel bf16 = in_precision(model, Precision::kBf16);
  double encode_rtf[2], decode_rtf[2];
  const encodec::EncodecModel* models[2] = {&fp32, &bf16};
  for (int i = 0; i < 2; ++i) {
    std::vector<encodec::EncodedFrame> frames = models[i]->encode(wav);  // warm-up
    models[i]->decode(frames);
    encode_rtf[i] = seconds / best_time(repeats, [&] { frames = models[i]->encode(wav); });
    decode_rtf[i] = seconds / best_time(repeats, [&] { models[i]->decode(frames); });
  }
  std::printf("  offline, 1 thread:  encode fp32 %.1fx  bf16 %.1fx  (bf16/fp32 %.2f)\n",
              encode_rtf[0], encode_rtf[1], encode_rtf[1] / encode_rtf[0]);
  std::printf("                      decode fp32 %.1fx  bf16 %.1fx  (bf16/fp32 %.2f)\n",
              decode_rtf[0], decode_rtf[1], decode_rtf[1] / decode_rtf[0]);
  const std::vector<encodec::EncodedFrame> frames = fp32.encode(wav);
  std::printf("  quality: decode of the same codes, bf16 vs fp32: SNR %.1f dB\n",
              snr_db(fp32.decode(frames), bf16.decode(frames)));
  std::printf("  identical codes bf16 vs fp32, %% per level: %s\n",
              percent_per_level(all_codes(frames), all_codes(bf16.encode(wav))).c_str());
}

std::string describe(const encodec::fast::Layer& layer) {
  char text[64] = "";
  std::visit(
      [&text](const auto& module) {
        using Module = std::decay_t<decltype(module)>;
        if constexpr (std::is_same_v<Module, encodec::fast::Conv1d>) {
          const torch::Tensor& w = module.reference().weight();
          std::snprintf(text, sizeof(text), "conv %lld->%lld k%lld s%lld", (long long)w.size(1),
                        (long long)w.size(0), (long long)w.size(2),
                        (long long)module.reference().stride());
        } else if constexpr (std::is_same_v<Module, encodec::fast::ConvTranspose1d>) {
          const torch::Tensor& w = module.reference().weight();
          std::snprintf(text, sizeof(text), "transposed %lld->%lld k%lld s%lld", (long long)w.size(0),
                        (long long)w.size(1), (long long)w.size(2),
                        (long long)module.reference().stride());
        } else if constexpr (std::is_same_v<Module, encodec::fast::Lstm>) {
          std::snprintf(text, sizeof(text), "lstm %lld x%lld", (long long)module.dimension(),
                        (long long)module.num_layers());
        } else if constexpr (std::is_same_v<Module, encodec::fast::ResnetBlock>) {
          const torch::Tensor& w = module.block().front().reference().weight();
          std::snprintf(text, sizeof(text), "resblock %lld (k%lld, k1)", (long long)w.size(1),
                        (long long)w.size(2));
        } else {
          std::snprintf(text, sizeof(text), "elu");
        }
      },
      layer);
  return text;
}

// Best-of-`repeats` time of every layer of `network` on `x`, in ms.
std::vector<double> layer_times(const encodec::fast::SEANet& network, const torch::Tensor& x,
                                int repeats) {
  std::vector<double> best(network.layers().size(), INFINITY);
  for (int run = 0; run <= repeats; ++run) {  // run 0: warm-up
    auto last = Clock::now();
    network.forward(x, [&](size_t index) {
      const auto now = Clock::now();
      if (run > 0) best[index] = std::min(best[index], ms_between(last, now));
      last = now;
    });
  }
  return best;
}

// 3: the per-layer profile, encoder then decoder, and the quantizer.
void layer_profile(const encodec::EncodecModel& model, const torch::Tensor& wav, int repeats) {
  const encodec::FastLayers fp32 = encodec::fast_layers(in_precision(model, Precision::kFp32));
  const encodec::FastLayers bf16 = encodec::fast_layers(in_precision(model, Precision::kBf16));
  const double seconds = static_cast<double>(wav.size(2)) / model.sample_rate_hz();
  const torch::Tensor embeddings = fp32.encoder.forward(wav);
  std::printf("  per-layer time, ms per s of audio, 1 thread (%.0f s input):\n", seconds);
  std::printf("    %-10s %-3s %-30s %9s %9s %7s\n", "network", "#", "layer", "fp32", "bf16", "ratio");
  double totals[2] = {0, 0};
  const char* names[2] = {"encoder", "decoder"};
  const encodec::fast::SEANet* networks[2][2] = {{&fp32.encoder, &bf16.encoder},
                                                 {&fp32.decoder, &bf16.decoder}};
  const torch::Tensor inputs[2] = {wav, embeddings};
  for (int n = 0; n < 2; ++n) {
    const std::vector<double> slow = layer_times(*networks[n][0], inputs[n], repeats);
    const std::vector<double> fast = layer_times(*networks[n][1], inputs[n], repeats);
    for (size_t i = 0; i < slow.size(); ++i) {
      if (std::holds_alternative<encodec::fast::Elu>(networks[n][0]->layers()[i]) && slow[i] < 0.5) {
        continue;  // fused into the layer before
      }
      std::printf("    %-10s %-3zu %-30s %9.2f %9.2f %7.2f\n", names[n], i,
                  describe(networks[n][0]->layers()[i]).c_str(), slow[i] / seconds,
                  fast[i] / seconds, slow[i] / fast[i]);
      totals[0] += slow[i] / seconds;
      totals[1] += fast[i] / seconds;
    }
  }
  const int codebooks = model.config().num_codebooks(kBandwidthKbps);
  const double quantize_ms[2] = {
      best_time(repeats, [&] { fp32.quantizer.encode(embeddings, codebooks); }) * 1000,
      best_time(repeats, [&] { bf16.quantizer.encode(embeddings, codebooks); }) * 1000};
  std::printf("    %-10s %-3s %-30s %9.2f %9.2f %7.2f\n", "quantizer", "", "search, 6 kbps",
              quantize_ms[0] / seconds, quantize_ms[1] / seconds, quantize_ms[0] / quantize_ms[1]);
  std::printf("    %-10s %-3s %-30s %9.2f %9.2f %7.2f\n", "total", "", "", totals[0], totals[1],
              totals[0] / totals[1]);
}

// 3: alternative plans on the encoder, quantizer and decoder of `model`.
void plan_alternatives(const encodec::EncodecModel& model, const torch::Tensor& wav, int repeats) {
  const encodec::EncodecModel::Weights& weights = model.weights();
  const LayerPrecisions chosen = LayerPrecisions::for_precision(Precision::kBf16);
  LayerPrecisions lstm_fp32 = chosen, ends_fp32 = chosen, search_fp32 = chosen;
  lstm_fp32.lstm = Precision::kFp32;
  ends_fp32.last_conv = Precision::kFp32;
  search_fp32.quantizer = Precision::kFp32;
  const std::pair<const char*, LayerPrecisions> plans[] = {
      {"all fp32", LayerPrecisions::all(Precision::kFp32)},
      {"chosen (for_precision(kBf16))", chosen},
      {"all bf16", LayerPrecisions::all(Precision::kBf16)},
      {"chosen, search fp32", search_fp32},
      {"chosen, LSTMs fp32", lstm_fp32},
      {"chosen, last convs fp32", ends_fp32}};
  const int codebooks = model.config().num_codebooks(kBandwidthKbps);
  const encodec::fast::SEANet reference_encoder(weights.encoder.layers());
  const encodec::fast::SEANet reference_decoder(weights.decoder.layers());
  const encodec::fast::Quantizer reference_quantizer(weights.quantizer);
  const torch::Tensor reference_embeddings = reference_encoder.forward(wav);
  const torch::Tensor reference_codes = reference_quantizer.encode(reference_embeddings, codebooks);
  const torch::Tensor quantized = weights.quantizer.decode(reference_codes);
  const torch::Tensor reference_audio = reference_decoder.forward(quantized);
  const double seconds = static_cast<double>(wav.size(2)) / model.sample_rate_hz();
  std::printf("  plans (which layer kinds run in bf16), 1 thread:\n");
  std::printf("    %-32s %9s %9s %14s %16s\n", "plan", "enc RTF", "dec RTF", "dec SNR dB",
              "level-0 codes %");
  for (const auto& [name, plan] : plans) {
    const encodec::fast::SEANet encoder(weights.encoder.layers(), plan);
    const encodec::fast::SEANet decoder(weights.decoder.layers(), plan);
    const encodec::fast::Quantizer quantizer(weights.quantizer, plan.quantizer);
    torch::Tensor embeddings, codes, audio;
    const double encode_s = best_time(repeats, [&] {
      embeddings = encoder.forward(wav);
      codes = quantizer.encode(embeddings, codebooks);
    });
    const double decode_s = best_time(repeats, [&] { audio = decoder.forward(quantized); });
    std::printf("    %-32s %8.1fx %8.1fx %14.1f %16.1f\n", name, seconds / encode_s,
                seconds / decode_s, snr_db(reference_audio, audio),
                100 * codes[0].eq(reference_codes[0]).to(torch::kFloat64).mean().item<double>());
  }
}

// 4.
void streaming(const encodec::EncodecModel& model, int64_t frames, int64_t ticks,
               int64_t max_streams) {
  const int64_t hop = model.config().hop_length();
  const double frame_ms = 1000.0 * hop / model.sample_rate_hz();
  const FrameSource source(test_signal(1, model.sample_rate_hz(), 3000 * hop), hop);
  for (const Precision precision : {Precision::kFp32, Precision::kBf16}) {
    const encodec::EncodecModel streamed = in_precision(model, precision);
    torch::set_num_threads(1);
    const FrameTimes times = measure_streaming(streamed, source, frames);
    std::printf("  streaming %s, 1 thread, %lld frames: encode+decode p50 %.3f ms, p99 %.3f ms\n",
                encodec::precision_name(precision), static_cast<long long>(frames),
                percentile(times.both_ms, 0.5), percentile(times.both_ms, 0.99));
    std::printf("  batcher %s, 2 threads (duplex tick, %lld ticks):\n",
                encodec::precision_name(precision), static_cast<long long>(ticks));
    torch::set_num_threads(2);
    print_batcher_header();
    const int64_t capacity = real_time_capacity({streamed, source, 2, ticks, frame_ms}, max_streams);
    std::printf("  => %s: %s%lld real-time duplex streams on 2 threads\n",
                encodec::precision_name(precision), capacity >= max_streams ? ">= " : "",
                static_cast<long long>(capacity));
    std::fflush(stdout);
  }
  torch::set_num_threads(1);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  int repeats = 3;
  int64_t frames = 1000, ticks = 200, max_streams = 128;
  bool no_streaming = false;
  std::vector<std::string> model_names = {"24khz", "48khz"};
  CLI::App app{"bf16 against fp32: speed, quality, per-layer profile, streaming"};
  app.add_option("--seconds", seconds, "Audio length per offline run")->capture_default_str();
  app.add_option("--repeats", repeats, "Runs per measurement (best is reported)")->capture_default_str();
  app.add_option("--models", model_names, "Models: 24khz, 48khz")
      ->delimiter(',')
      ->check(CLI::IsMember({"24khz", "48khz"}));
  app.add_option("--frames", frames, "Measured frames of the single stream")->capture_default_str();
  app.add_option("--ticks", ticks, "Measured ticks per batch size")->capture_default_str();
  app.add_option("--max-streams", max_streams, "Largest batch tried")->capture_default_str();
  app.add_flag("--no-streaming", no_streaming, "Skip the streaming measurements");
  CLI11_PARSE(app, argc, argv);
  const std::string unavailable = encodec::bf16_unavailable_reason();
  if (!unavailable.empty()) {
    std::fprintf(stderr, "precision: %s\n", unavailable.c_str());
    return 1;
  }

  torch::NoGradGuard no_grad;
  torch::set_num_threads(1);
  std::printf("machine: %s, %u hardware threads; load average %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("%.0f s of audio, best of %d, %.1f kbps, official sizes, random weights\n", seconds,
              repeats, kBandwidthKbps);
  for (const std::string& model_name : model_names) {
    const encodec::EncodecConfig config = model_name == "24khz"
                                              ? encodec::EncodecConfig::official_24khz()
                                              : encodec::EncodecConfig::official_48khz();
    encodec::EncodecModel model = encodec::EncodecModel::with_random_weights(config);
    model.set_target_bandwidth(kBandwidthKbps);
    const torch::Tensor wav = test_signal(config.channels, config.sample_rate_hz,
                                          static_cast<int64_t>(seconds * config.sample_rate_hz));
    std::printf("\n%s\n", config.name.c_str());
    offline_and_quality(model, wav, seconds, repeats);
    // The 48 kHz model runs 1 s chunks: profile one, as the offline path runs it.
    const torch::Tensor chunk = wav.narrow(2, 0, config.segment_length().value_or(wav.size(2)));
    layer_profile(model, chunk, repeats);
    plan_alternatives(model, chunk, repeats);
    if (config.causal && !no_streaming) streaming(model, frames, ticks, max_streams);
    std::fflush(stdout);
  }
  return 0;
}
