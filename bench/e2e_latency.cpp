// Mouth-to-ear latency through client -> encodecd -> client on 127.0.0.1, in one
// run: an in-process encodec::server::Server, a sender client (Mode::kSend, real
// time) whose input is a click train (one click every 0.5 s), a
// UdpImpairmentRelay between the sender and the server (seeded loss, a little
// delay jitter), and a listener client (Mode::kListen, real time) whose output
// is captured. Both clients get their audio ends through
// ClientOptions::capture_factory / playback_factory:
//  - the click source notes the steady_clock time of every read() and, for each
//    click onset in the block read, its offset in the block;
//  - the sink runs a ClickDetector on every block written and notes the write
//    time and the onset's offset in the block.
// A block read at t_r is taken to start at t_r (a sample at offset o is "spoken"
// at t_r + o / rate) and a block written at t_w to start playing at t_w (offset
// o is heard at t_w + o / rate), so
//   mouth-to-ear = (t_w + o_w / rate) - (t_r + o_r / rate), one steady clock.
// A real microphone would add its capture block (the client reads 320-sample
// blocks: 13.3 ms) and a real speaker its device buffer; neither is counted.
//
// Configurations (each at every loss rate): EnCodec raw codes at 6 kbps,
// EnCodec LM-coded at 6 kbps, and libopus at 6 kbps with 20 ms and 10 ms frames
// (the sender sends raw codes; the server decodes them and encodes Opus for the
// listener, which asked for Opus). The model is the official size with random
// weights unless --checkpoint (speed does not depend on the values; the clicks
// are found again in whatever the model makes of them: a preflight runs the
// click train through the codec locally and sets the detector's threshold).
//
//   build/bench/e2e_latency [--seconds 12] [--losses 0,5,15]
//                           [--configs raw,lm,opus20,opus10] [--threads 1]
//                           [--checkpoint FILE] [--lm-checkpoint FILE] [--seed 1]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>

#include "bench_common.h"
#include "encodec/client.h"
#include "encodec/client_audio.h"
#include "encodec/live_model.h"
#include "encodec/lm.h"
#include "encodec/net/impairment.h"
#include "encodec/net/opus_codec.h"
#include "encodec/server.h"
#include "encodec/streaming.h"

namespace {

using namespace encodec::bench;
using encodec::client::CaptureSource;
using encodec::client::PlaybackSink;

constexpr int kRateHz = 24000;
constexpr int kHop = 320;
constexpr double kClickIntervalS = 0.5;
constexpr int kClickSamples = 24;
constexpr double kBandwidthKbps = 6.0;
constexpr int kOpusBitrateBps = 6000;

// The targets.
constexpr double kTargetRawP50Ms = 25.0;  // EnCodec raw codes, 0% loss
constexpr double kTargetLmOverRawMs = 5.0;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// --- the timestamping audio ends ---------------------------------------------

struct SentClick {
  int64_t index = 0;
  int64_t sample = 0;   // in the sender's stream
  int64_t read_ns = 0;  // when the block holding it was read
  int64_t offset = 0;   // its position in that block
  double spoken_s() const { return read_ns * 1e-9 + static_cast<double>(offset) / kRateHz; }
};

struct HeardOnset {
  int64_t sample = 0;    // in the listener's output
  int64_t write_ns = 0;  // when the block holding it was written
  int64_t offset = 0;
  double heard_s() const { return write_ns * 1e-9 + static_cast<double>(offset) / kRateHz; }
};

// The click train of encodec-client's "clicks" input, ending after a number of
// samples, noting when each click was read.
class TimedClickSource final : public CaptureSource {
 public:
  TimedClickSource(int64_t total_samples, std::vector<SentClick>* log)
      : clicks_(encodec::client::open_click_source(kRateHz, kClickIntervalS, 0, kClickSamples)),
        total_samples_(total_samples),
        log_(log) {}
  int sample_rate_hz() const override { return kRateHz; }
  bool is_device() const override { return false; }
  std::string describe() const override { return "timed " + clicks_->describe(); }
  int64_t read(float* out, int64_t count) override {
    const int64_t read_ns = now_ns();
    count = std::min(count, total_samples_ - position_);
    if (count <= 0) return 0;
    clicks_->read(out, count);
    for (;;) {
      const int64_t at = encodec::client::click_position(next_click_, kRateHz, kClickIntervalS);
      if (at >= position_ + count) break;
      log_->push_back({next_click_, at, read_ns, at - position_});
      ++next_click_;
    }
    position_ += count;
    return count;
  }

 private:
  std::unique_ptr<CaptureSource> clicks_;
  int64_t total_samples_;
  std::vector<SentClick>* log_;
  int64_t position_ = 0;
  int64_t next_click_ = 0;
};

class TimedClickSink final : public PlaybackSink {
 public:
  TimedClickSink(float threshold, std::vector<HeardOnset>* log) : detector_(threshold, kRateHz), log_(log) {}
  void write(const float* samples, int64_t count) override {
    const int64_t write_ns = now_ns();
    for (const int64_t onset : detector_.feed(samples, count)) {
      log_->push_back({onset, write_ns, onset - position_});
    }
    position_ += count;
  }
  void finish() override {}
  bool is_device() const override { return false; }
  std::string describe() const override { return "click detector"; }

 private:
  encodec::client::ClickDetector detector_;
  std::vector<HeardOnset>* log_;
  int64_t position_ = 0;
};

// --- configurations ---------------------------------------------------------

struct Config {
  std::string name;   // for --configs
  std::string label;  // for the table
  bool lm = false;
  int opus_frame_ms = 0;  // 0: EnCodec codes to the listener
};

const std::vector<Config>& all_configs() {
  static const std::vector<Config> configs = {
      {"raw", "EnCodec raw codes 6 kbps", false, 0},
      {"lm", "EnCodec LM-coded 6 kbps", true, 0},
      {"opus20", "Opus 6 kbps, 20 ms frames", false, 20},
      {"opus10", "Opus 6 kbps, 10 ms frames", false, 10},
  };
  return configs;
}

struct RunResult {
  Config config;
  double loss_percent = 0;
  int64_t clicks_sent = 0;        // after the warm-up
  int64_t clicks_found = 0;
  std::vector<double> latencies_ms;
  std::vector<double> missed_at_s;  // stream time of the clicks not heard
  int64_t extra_onsets = 0;       // onsets matching no click (concealment artifacts, echoes)
  uint64_t relay_dropped = 0, relay_packets = 0;
  encodec::net::JitterBufferStats jitter;
  uint64_t undecodable = 0;
  uint64_t lm_resets = 0;
  double client_latency_p50_ms = NAN;  // the listener's own figure: capture stamp to decode
  double client_latency_p99_ms = NAN;
  uint64_t frames_sent = 0;
  double payload_kbps = 0;
  std::string error;
};

// --- preflight: the codec alone ---------------------------------------------

struct Preflight {
  float threshold = 0.1f;
  int clicks = 0, found = 0;
  double shift_p50_samples = NAN;  // onset out minus onset in
  float click_peak_min = 0, quiet_peak = 0;
};

std::vector<float> click_train(int64_t samples) {
  auto source = encodec::client::open_click_source(kRateHz, kClickIntervalS, 0, kClickSamples);
  std::vector<float> audio(static_cast<size_t>(samples));
  source->read(audio.data(), samples);
  return audio;
}

std::vector<float> encodec_round_trip(const encodec::EncodecModel& model, const std::vector<float>& in) {
  encodec::StreamingEncoder encoder(model);
  encoder.set_bandwidth(kBandwidthKbps);
  encodec::StreamingDecoder decoder(model);
  std::vector<float> out;
  encodec::CodeFrame frame;
  for (size_t at = 0; at + kHop <= in.size(); at += kHop) {
    encoder.push(in.data() + at, kHop);
    while (encoder.pop(&frame)) decoder.push(frame);
    std::vector<float> block(static_cast<size_t>(decoder.samples_ready()));
    decoder.pop(block.data(), static_cast<int64_t>(block.size()));
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

std::vector<float> opus_round_trip(const std::vector<float>& in, int frame_ms) {
  const int frame = kRateHz * frame_ms / 1000;
  std::string error;
  encodec::net::OpusFrameOptions options;
  options.frame_samples = frame;
  options.bitrate_bps = kOpusBitrateBps;
  auto encoder = encodec::net::OpusFrameEncoder::create(options, &error);
  auto decoder = encodec::net::OpusFrameDecoder::create(kRateHz, frame, &error);
  if (!encoder || !decoder) throw std::runtime_error("libopus: " + error);
  std::vector<float> out(in.size(), 0.0f);
  uint8_t packet[1500];
  for (size_t at = 0; at + frame <= in.size(); at += frame) {
    const size_t bytes = encoder->encode(in.data() + at, packet, sizeof packet);
    if (bytes == 0 || !decoder->decode(packet, bytes, out.data() + at)) decoder->conceal(out.data() + at);
  }
  return out;
}

// How far each onset moved (out - in) for the clicks after `skip_s`; kNotFound for a click not found.
constexpr int64_t kNotFound = INT64_MIN;
std::vector<int64_t> onset_shifts(const std::vector<float>& out, float threshold, double skip_s) {
  const std::vector<int64_t> onsets =
      encodec::client::find_clicks(out.data(), static_cast<int64_t>(out.size()), threshold, kRateHz);
  std::vector<int64_t> shifts;
  const int64_t interval = std::llround(kClickIntervalS * kRateHz);
  for (int64_t k = 0;; ++k) {
    const int64_t at = encodec::client::click_position(k, kRateHz, kClickIntervalS);
    if (at + interval > static_cast<int64_t>(out.size())) break;
    if (at < skip_s * kRateHz) continue;
    int64_t shift = kNotFound;
    for (const int64_t onset : onsets) {
      if (onset >= at - kHop && onset < at + interval / 2) {
        shift = onset - at;
        break;
      }
    }
    shifts.push_back(shift);
  }
  return shifts;
}

// The click train through the streaming encoder and decoder locally: the
// detector's threshold (between the loudest "quiet" sample and the quietest
// click's peak, on a log scale) and the codec's own onset shift.
Preflight preflight(const encodec::EncodecModel& model) {
  const std::vector<float> in = click_train(4 * kRateHz);
  const std::vector<float> out = encodec_round_trip(model, in);
  Preflight result;
  const int64_t interval = std::llround(kClickIntervalS * kRateHz);
  const int64_t quiet = std::llround(encodec::client::kClickQuietS * kRateHz);
  float click_peak_min = INFINITY, quiet_peak = 0;
  for (int64_t k = 1;; ++k) {  // click 0 is the stream's start
    const int64_t at = encodec::client::click_position(k, kRateHz, kClickIntervalS);
    if (at + interval > static_cast<int64_t>(out.size())) break;
    float peak = 0;
    for (int64_t i = at; i < at + 2 * kHop; ++i) peak = std::max(peak, std::abs(out[i]));
    click_peak_min = std::min(click_peak_min, peak);
    // The quiet before the click: the detector needs kClickQuietS under the threshold there.
    for (int64_t i = at - quiet - kHop; i < at - kHop; ++i) quiet_peak = std::max(quiet_peak, std::abs(out[i]));
  }
  result.click_peak_min = click_peak_min;
  result.quiet_peak = quiet_peak;
  result.threshold = quiet_peak > 0 ? std::sqrt(quiet_peak * click_peak_min) : 0.5f * click_peak_min;
  const std::vector<int64_t> shifts = onset_shifts(out, result.threshold, 0.25);
  std::vector<double> found;
  for (const int64_t shift : shifts) {
    if (shift != kNotFound) found.push_back(static_cast<double>(shift));
  }
  result.clicks = static_cast<int>(shifts.size());
  result.found = static_cast<int>(found.size());
  result.shift_p50_samples = percentile(found, 0.5);
  return result;
}

// --- one configuration at one loss rate ---------------------------------------

struct Setup {
  const encodec::LiveModel* live = nullptr;
  std::shared_ptr<const encodec::LmModel> lm;
  encodec::server::Server* server = nullptr;
  double seconds = 12;
  double warmup_s = 1.0;
  double jitter_ms = 2.0;
  int threads = 1;
  float threshold = 0.1f;
  uint64_t seed = 1;
};

void wait_until(const std::function<bool()>& ready, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
  while (!ready() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Runs a client on its own thread (with the bench's LibTorch thread count).
class ClientThread {
 public:
  ClientThread(const encodec::LiveModel& live, std::shared_ptr<const encodec::LmModel> lm,
               encodec::client::ClientOptions options, int threads)
      : client_(std::make_unique<encodec::client::Client>(live, std::move(lm), std::move(options))) {
    thread_ = std::thread([this, threads] {
      at::set_num_threads(threads);
      try {
        report_ = client_->run();
      } catch (const std::exception& error) {
        error_ = error.what();
      }
      done_.store(true);
    });
  }
  ~ClientThread() {
    if (thread_.joinable()) {
      client_->stop();
      thread_.join();
    }
  }
  bool done() const { return done_.load(); }
  void stop() { client_->stop(); }
  // Waits for the end; stops the client first if it has not ended within timeout_s.
  encodec::client::ClientReport get(double timeout_s) {
    wait_until([this] { return done(); }, timeout_s);
    if (!done()) client_->stop();
    if (thread_.joinable()) thread_.join();
    if (!error_.empty()) throw std::runtime_error(error_);
    return report_;
  }

 private:
  std::unique_ptr<encodec::client::Client> client_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  encodec::client::ClientReport report_;
  std::string error_;
};

RunResult run_one(const Setup& setup, const Config& config, double loss_percent, int run_index) {
  RunResult result;
  result.config = config;
  result.loss_percent = loss_percent;

  // The previous run's sessions and room are gone first (a listener needs its
  // sender's room to exist, which we tell by the room count).
  wait_until([&] { return setup.server->stats().sessions == 0 && setup.server->stats().rooms == 0; }, 8.0);

  encodec::net::ImpairmentOptions impairment;
  impairment.loss = loss_percent / 100.0;
  impairment.jitter_ms = setup.jitter_ms;
  impairment.seed = setup.seed + 2 * static_cast<uint64_t>(run_index);
  boost::asio::io_context relay_io;
  encodec::net::UdpImpairmentRelay relay(
      relay_io,
      boost::asio::ip::udp::endpoint(boost::asio::ip::make_address("127.0.0.1"), setup.server->udp_port()),
      impairment);
  std::thread relay_thread([&] { relay_io.run(); });
  struct StopRelay {
    encodec::net::UdpImpairmentRelay& relay;
    std::thread& thread;
    ~StopRelay() {
      relay.stop();
      thread.join();
    }
  } stop_relay{relay, relay_thread};

  const std::string room = "e2e-" + config.name + "-" + std::to_string(run_index);
  std::vector<SentClick> sent;
  std::vector<HeardOnset> heard;
  sent.reserve(1024);
  heard.reserve(4096);
  const int64_t total_samples = std::llround(setup.seconds * kRateHz);

  encodec::client::ClientOptions sender;
  sender.server = "127.0.0.1:" + std::to_string(relay.local_endpoint().port());
  sender.mode = encodec::client::Mode::kSend;
  sender.room = room;
  sender.bandwidth_kbps = kBandwidthKbps;
  sender.lm = config.lm;
  sender.wait_for_members = 2;
  sender.wait_for_members_timeout_s = 10;
  sender.connect_timeout_ms = 5000;
  sender.name = "e2e-sender";
  sender.capture_factory = [&sent, total_samples] {
    return std::make_unique<TimedClickSource>(total_samples, &sent);
  };

  encodec::client::ClientOptions listener;
  listener.server = "127.0.0.1:" + std::to_string(setup.server->udp_port());
  listener.mode = encodec::client::Mode::kListen;
  listener.room = room;
  listener.lm = config.lm;
  listener.receive_opus = config.opus_frame_ms > 0;
  listener.opus_frame_ms = config.opus_frame_ms > 0 ? config.opus_frame_ms : 20;
  listener.opus_bitrate_bps = kOpusBitrateBps;
  listener.connect_timeout_ms = 5000;
  listener.name = "e2e-listener";
  const float threshold = setup.threshold;
  listener.playback_factory = [&heard, threshold] { return std::make_unique<TimedClickSink>(threshold, &heard); };

  const auto lm = config.lm ? setup.lm : nullptr;
  encodec::client::ClientReport sent_report, heard_report;
  try {
    ClientThread sender_thread(*setup.live, lm, sender, setup.threads);
    wait_until([&] { return setup.server->stats().rooms >= 1 || sender_thread.done(); }, 8.0);
    ClientThread listener_thread(*setup.live, lm, listener, setup.threads);
    sent_report = sender_thread.get(setup.seconds + 30.0);
    // A raw or LM stream ends with its end mark; an Opus stream once the sender left.
    heard_report = listener_thread.get(4.0);
  } catch (const std::exception& error) {
    result.error = error.what();
    return result;
  }
  result.relay_packets = relay.upstream_stats().packets;
  result.relay_dropped = relay.upstream_stats().dropped;
  result.frames_sent = sent_report.frames_sent;
  result.payload_kbps = sent_report.frames_sent > 0 ? 8.0 * sent_report.payload_bytes_sent /
                                                          (sent_report.frames_sent * kHop / double(kRateHz)) / 1000.0
                                                    : 0.0;
  if (!heard_report.streams.empty()) {
    const encodec::client::StreamReport& stream = heard_report.streams.front();
    result.jitter = stream.jitter;
    result.undecodable = stream.undecodable;
    result.lm_resets = stream.lm_resets_requested;
    result.client_latency_p50_ms = stream.latency_p50_ms;
    result.client_latency_p99_ms = stream.latency_p99_ms;
  }

  // Each onset heard goes to the latest click spoken before it (within one
  // interval); the first onset of a click counts, later ones are extra.
  std::vector<double> latency_of(sent.size(), NAN);
  for (const HeardOnset& onset : heard) {
    const double at = onset.heard_s();
    std::optional<size_t> best;
    for (size_t i = 0; i < sent.size(); ++i) {
      const double spoken = sent[i].spoken_s();
      if (spoken <= at + 1e-4 && at - spoken < kClickIntervalS) best = i;
    }
    if (!best || !std::isnan(latency_of[*best])) {
      ++result.extra_onsets;
      continue;
    }
    latency_of[*best] = 1000.0 * (at - sent[*best].spoken_s());
  }
  const int64_t warmup_samples = std::llround(setup.warmup_s * kRateHz);
  for (size_t i = 0; i < sent.size(); ++i) {
    if (sent[i].sample < warmup_samples) continue;
    ++result.clicks_sent;
    if (std::isnan(latency_of[i])) {
      result.missed_at_s.push_back(static_cast<double>(sent[i].sample) / kRateHz);
    } else {
      ++result.clicks_found;
      result.latencies_ms.push_back(latency_of[i]);
    }
  }
  return result;
}

std::string format_ms(double value) {
  if (std::isnan(value)) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f", value);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 12.0, warmup_s = 1.0, jitter_ms = 2.0;
  std::vector<double> losses = {0, 5, 15};
  std::vector<std::string> config_names = {"raw", "lm", "opus20", "opus10"};
  std::string checkpoint, lm_checkpoint;
  int threads = 1;
  uint64_t seed = 1;
  CLI::App app{
      "Mouth-to-ear latency, client -> encodecd -> client on 127.0.0.1 (in one process), for EnCodec raw "
      "codes, EnCodec LM-coded and Opus at 6 kbps, each at several loss rates on the sender's uplink"};
  app.add_option("--seconds", seconds,
                 "Seconds of clicks (one every 0.5 s) sent per configuration and loss rate, in real time")
      ->capture_default_str()
      ->check(CLI::Range(2.0, 3600.0));
  app.add_option("--losses", losses,
                 "Packet loss rates in percent between the sender and the server (the UdpImpairmentRelay, seeded)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--configs", config_names,
                 "Configurations, in order: raw (EnCodec raw codes), lm (EnCodec LM-coded), opus20 / opus10 "
                 "(the server transcodes to libopus with 20 / 10 ms frames)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"raw", "lm", "opus20", "opus10"}));
  app.add_option("--checkpoint", checkpoint,
                 "EnCodec 24 kHz checkpoint for the server and both clients (default: official size, random "
                 "weights: speed does not depend on the values)")
      ->check(CLI::ExistingFile);
  app.add_option("--lm-checkpoint", lm_checkpoint,
                 "LM checkpoint for the lm configuration (default: official size, random weights)")
      ->check(CLI::ExistingFile);
  app.add_option("--threads", threads,
                 "LibTorch threads of each model user: the server's compute thread and each client")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--seed", seed, "Seed of the impairment relay (each run uses its own seeds from it)")
      ->capture_default_str();
  app.add_option("--jitter-ms", jitter_ms,
                 "Extra one-way delay on the sender's uplink, uniform in [0, this], so the jitter buffer has work")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 500.0));
  app.add_option("--warmup", warmup_s,
                 "Clicks in the first seconds of each run are not counted (the codec's and jitter buffer's start)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  CLI11_PARSE(app, argc, argv);
  if (warmup_s + 1.0 > seconds) {
    std::fprintf(stderr, "--seconds must exceed --warmup by at least 1 s\n");
    return 2;
  }

  torch::NoGradGuard no_grad;
  at::set_num_threads(threads);
  encodec::LiveModelOptions model_options;
  model_options.checkpoint = checkpoint;
  model_options.random_weights = checkpoint.empty();
  const encodec::LiveModel live = encodec::load_live_model(model_options);

  std::vector<Config> configs;
  for (const std::string& name : config_names) {
    for (const Config& config : all_configs()) {
      if (config.name == name) configs.push_back(config);
    }
  }
  std::shared_ptr<const encodec::LmModel> lm;
  std::string lm_source = "-";
  if (std::any_of(configs.begin(), configs.end(), [](const Config& c) { return c.lm; })) {
    if (!lm_checkpoint.empty()) {
      lm = encodec::load_live_lm(lm_checkpoint, "", live.model.config());
      lm_source = lm_checkpoint;
    } else {
      auto random_lm = std::make_shared<encodec::LmModel>(
          encodec::LmModel::with_random_weights(encodec::LmConfig::for_codec(live.model.config())));
      random_lm->set_kernels(encodec::LmKernels::kAuto);
      lm = random_lm;
      lm_source = "official size, random weights";
    }
    lm_source += lm->kernels() == encodec::LmKernels::kFast ? " (exact fast kernels)" : " (reference kernels)";
  }

  std::printf("machine: %s, %u hardware threads; load average %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("model: %s (%s), %.0f kbps; LM: %s\n", live.model.name().c_str(), live.source.c_str(), kBandwidthKbps,
              lm_source.c_str());
  std::printf("threads: %d LibTorch thread(s) per model user (server compute thread, sender, listener), "
              "server 1 I/O thread; all in this process\n",
              threads);
  std::printf("path: sender (real time, 320-sample blocks) -> impairment relay (loss, jitter 0-%.1f ms, seeded) -> "
              "encodecd -> listener (real time, adaptive jitter buffer) on 127.0.0.1, UDP\n",
              jitter_ms);
  std::printf("clicks: %d samples at %.1f every %.1f s, %.0f s per run, the first %.1f s not counted\n",
              kClickSamples, encodec::client::kClickAmplitude, kClickIntervalS, seconds, warmup_s);

  // Preflight: what the codec makes of a click, locally.
  at::set_num_threads(threads);
  const Preflight check = preflight(live.model);
  std::printf("preflight (click train through StreamingEncoder -> StreamingDecoder locally): click peaks >= %.3g, "
              "quiet before clicks <= %.3g -> detector threshold %.3g; found %d of %d clicks, onset shift "
              "p50 %s samples\n",
              check.click_peak_min, check.quiet_peak, check.threshold, check.found, check.clicks,
              format_ms(check.shift_p50_samples).c_str());
  for (const int frame_ms : {20, 10}) {
    const std::vector<float> out = opus_round_trip(encodec_round_trip(live.model, click_train(4 * kRateHz)), frame_ms);
    std::vector<double> found;
    int clicks = 0;
    for (const int64_t shift : onset_shifts(out, check.threshold, 0.25)) {
      ++clicks;
      if (shift != kNotFound) found.push_back(static_cast<double>(shift));
    }
    std::printf("preflight, then libopus %d ms frames at %d bps: found %zu of %d clicks, onset shift p50 %s "
                "samples (%s ms)\n",
                frame_ms, kOpusBitrateBps, found.size(), clicks, format_ms(percentile(found, 0.5)).c_str(),
                format_ms(percentile(found, 0.5) * 1000.0 / kRateHz).c_str());
  }
  if (check.found < check.clicks) {
    std::printf("WARNING: the detector does not find every click through the codec even without a network; "
                "missed clicks below may be the model's, not the network's\n");
  }
  std::fflush(stdout);

  encodec::server::ServerOptions server_options;
  server_options.udp_listen = "127.0.0.1:0";
  server_options.tcp_listen = "";
  server_options.io_threads = 1;
  server_options.compute_threads = threads;
  server_options.keep_alive_interval_ms = 500;
  server_options.session_timeout_ms = 3000;
  encodec::server::Server server(live.model, live.checksum, server_options);
  server.start();

  Setup setup;
  setup.live = &live;
  setup.lm = lm;
  setup.server = &server;
  setup.seconds = seconds;
  setup.warmup_s = warmup_s;
  setup.jitter_ms = jitter_ms;
  setup.threads = threads;
  setup.threshold = check.threshold;
  setup.seed = seed;

  std::vector<RunResult> results;
  int run_index = 0;
  for (const Config& config : configs) {
    for (const double loss : losses) {
      std::printf("running %s, %.0f%% loss ...\n", config.label.c_str(), loss);
      std::fflush(stdout);
      results.push_back(run_one(setup, config, loss, run_index++));
      if (!results.back().error.empty()) std::printf("  failed: %s\n", results.back().error.c_str());
    }
  }
  server.stop("bench done");

  std::printf("\nmachine: %s, %u hardware threads, %d LibTorch thread(s) per model user; load average %s\n",
              cpu_model().c_str(), std::thread::hardware_concurrency(), threads, load_average().c_str());
  std::printf("mouth-to-ear = listener block write time + onset offset / rate - (sender block read time + onset "
              "offset / rate)\n");
  std::printf("%-27s %5s %8s %7s %7s %7s %7s %9s %7s %7s\n", "config", "loss", "clicks", "p50", "p99", "max",
              "concld", "jb target", "client", "kbps");
  std::printf("%-27s %5s %8s %7s %7s %7s %7s %9s %7s %7s\n", "", "%", "found", "ms", "ms", "ms", "frames",
              "frames", "p50 ms", "sent");
  for (const RunResult& r : results) {
    if (!r.error.empty()) {
      std::printf("%-27s %5.0f  failed: %s\n", r.config.label.c_str(), r.loss_percent, r.error.c_str());
      continue;
    }
    char clicks[32];
    std::snprintf(clicks, sizeof clicks, "%lld/%lld", static_cast<long long>(r.clicks_found),
                  static_cast<long long>(r.clicks_sent));
    const double max_ms =
        r.latencies_ms.empty() ? NAN : *std::max_element(r.latencies_ms.begin(), r.latencies_ms.end());
    std::printf("%-27s %5.0f %8s %7s %7s %7s %7llu %9d %7s %7.2f\n", r.config.label.c_str(), r.loss_percent, clicks,
                format_ms(percentile(r.latencies_ms, 0.5)).c_str(), format_ms(percentile(r.latencies_ms, 0.99)).c_str(),
                format_ms(max_ms).c_str(), static_cast<unsigned long long>(r.jitter.concealed + r.undecodable),
                r.jitter.target_delay_frames, format_ms(r.client_latency_p50_ms).c_str(), r.payload_kbps);
  }
  std::printf("\n(concld: jitter-buffer slots concealed + packets that could not be decoded (LM out of context); "
              "jb target: the listener's jitter-buffer target at the end; client p50: the listener's own "
              "figure, the sender's capture stamp (after encoding) to the frame's decode, which leaves out the "
              "listener's playout queue; kbps: the sender's payload bitrate)\n");

  std::printf("\nper run: uplink packets dropped by the relay, jitter buffer, clicks not heard\n");
  for (const RunResult& r : results) {
    if (!r.error.empty()) continue;
    std::printf("  %s, %.0f%%: relay dropped %llu of %llu; played %llu, concealed %llu, late %llu, discarded %llu, "
                "stretched %llu, skipped %llu; undecodable %llu, LM resets asked %llu; extra onsets %lld",
                r.config.label.c_str(), r.loss_percent, static_cast<unsigned long long>(r.relay_dropped),
                static_cast<unsigned long long>(r.relay_packets), static_cast<unsigned long long>(r.jitter.played),
                static_cast<unsigned long long>(r.jitter.concealed), static_cast<unsigned long long>(r.jitter.late),
                static_cast<unsigned long long>(r.jitter.discarded),
                static_cast<unsigned long long>(r.jitter.stretched),
                static_cast<unsigned long long>(r.jitter.skipped_concealments),
                static_cast<unsigned long long>(r.undecodable), static_cast<unsigned long long>(r.lm_resets),
                static_cast<long long>(r.extra_onsets));
    if (!r.missed_at_s.empty()) {
      std::printf("; not heard (lost in concealment):");
      for (const double at : r.missed_at_s) std::printf(" %.1f s", at);
    }
    std::printf("\n");
  }

  // The targets.
  auto find = [&](const std::string& name, double loss) -> const RunResult* {
    for (const RunResult& r : results) {
      if (r.config.name == name && r.loss_percent == loss && r.error.empty() && !r.latencies_ms.empty()) return &r;
    }
    return nullptr;
  };
  std::printf("\ntargets (issue):\n");
  const RunResult* raw0 = find("raw", 0);
  if (raw0) {
    const double p50 = percentile(raw0->latencies_ms, 0.5);
    std::printf("  EnCodec raw codes, 0%% loss, mouth-to-ear p50 < %.0f ms: %.1f ms  %s\n", kTargetRawP50Ms, p50,
                p50 < kTargetRawP50Ms ? "met" : "MISSED");
  } else {
    std::printf("  EnCodec raw codes, 0%% loss, p50 < %.0f ms: not measured (needs --configs raw --losses 0)\n",
                kTargetRawP50Ms);
  }
  for (const double loss : losses) {
    const RunResult* raw = find("raw", loss);
    const RunResult* lm_run = find("lm", loss);
    if (!raw || !lm_run) continue;
    const double difference = percentile(lm_run->latencies_ms, 0.5) - percentile(raw->latencies_ms, 0.5);
    std::printf("  LM-coded within %.0f ms of raw (p50), %.0f%% loss: %+.1f ms  %s\n", kTargetLmOverRawMs, loss,
                difference, std::abs(difference) <= kTargetLmOverRawMs ? "met" : "MISSED");
  }
  return 0;
}
