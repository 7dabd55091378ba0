// Mouth-to-ear latency through client -> encodecd -> client on 127.0.0.1, in one
// run: an in-process encodec::server::Server, a sender client (Mode::kSend, real
// time) whose input is a click train (one click every 0.5 s), a
// UdpImpairmentRelay between the sender and the server (seeded loss and a
// little delay jitter), and a listener client (Mode::kListen, real time) whose
// output is captured. Both clients get their audio ends through
// ClientOptions::capture_factory / playback_factory:
//  - the click source notes the steady_clock time of every read() and, for each
//    click in the block read, its offset in the block;
//  - the sink keeps every block written with its write time (and runs a
//    ClickDetector on it as it comes).
// A block read at t_r is taken to start at t_r (a sample at offset o is "spoken"
// at t_r + o / rate) and a block written at t_w to start playing at t_w (offset
// o is heard at t_w + o / rate), so for each click
//   mouth-to-ear = (t_w + o_w / rate) - (t_r + o_r / rate), one steady clock.
// A real microphone would add its capture block (the client reads 320-sample
// blocks: 13.3 ms) and a real speaker its device buffer; neither is counted.
//
// Where the click is in the output. A trained model gives the click back as a
// click, and the ClickDetector finds its onset. The official-size model with
// random weights (the default: speed does not depend on the values) does not:
// its output for silence is a full-scale buzz of period 320 samples, and a
// click bends the buzz for a few frames. So the click is found by alignment:
// the bench decodes the same click train locally (StreamingEncoder ->
// StreamingDecoder), takes the frame-periodic part out of both signals
// (x[n] - x[n - 320]), and finds each click's 4 frames of the local decode in the
// listener's output by normalized cross-correlation within 0.45 s after the
// click was spoken. The output sample aligned with the click's sample gives o_w.
// This is the delay from sample n of the input to sample n of the output, which
// for a trained EnCodec model (time-aligned) is mouth-to-ear. A click counts as
// heard when the correlation is at least kMinCorrelation: near a concealment
// the listener's audio is not the clean decode, and such clicks are listed as
// not heard. With a trained --checkpoint the ClickDetector's figure is printed
// too.
//
// Opus: the server decodes what reached it (concealing gaps, dropping frames
// that come too late) and encodes that with libopus, so under loss or
// reordering (the sender's start burst of 7 frames is reordered by any jitter)
// its audio is not the sender's clean decode, and Opus at 6 kbps keeps nothing
// of the buzz's waveform that would survive the difference. So for the Opus
// configurations two protocol peers (RoomObserver) join the room beside the
// listener, directly (no relay): one for Opus as the listener asked, which gets
// the very packets the listener gets (the server encodes the same decode for
// every Opus member from the same sample on), and one for raw codes. The bench
// aligns with the decode of the first one's packets; the Opus packets' capture
// times, matched with the code frames', tell which sender frame the server's
// decode started at (transcode_first_sequence). The Opus rows include Opus's
// lookahead (156 samples at 24 kHz).
//
// Configurations (each at every loss rate): EnCodec raw codes at 6 kbps,
// EnCodec LM-coded at 6 kbps, and libopus at 6 kbps with 20 ms and 10 ms frames
// (the sender sends raw codes; the server decodes them and encodes Opus for the
// listener, which asked for Opus). Diagnostic configurations, not run by
// default: raw-jb1 (raw codes, the listener's jitter buffer target held at one
// frame, max_delay_frames = 1).
//
//   build/bench/e2e_latency [--seconds 12] [--losses 0,5,15]
//                           [--configs raw,lm,opus20,opus10] [--threads 1]
//                           [--checkpoint FILE] [--lm-checkpoint FILE] [--seed 1]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <map>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <opus.h>
#include <spdlog/spdlog.h>

#include "bench_common.h"
#include "encodec/client.h"
#include "encodec/client_audio.h"
#include "encodec/live_model.h"
#include "encodec/lm.h"
#include "encodec/net/impairment.h"
#include "encodec/net/opus_codec.h"
#include "encodec/net/wire.h"
#include "encodec/server.h"
#include "encodec/streaming.h"

namespace {

using namespace encodec::bench;
using encodec::client::CaptureSource;
using encodec::client::PlaybackSink;

constexpr int kRateHz = 24000;
constexpr int kHop = 320;  // the model's frame, and the clients' block
constexpr double kClickIntervalS = 0.5;
constexpr int kClickSamples = 24;
constexpr double kBandwidthKbps = 6.0;
constexpr int kOpusBitrateBps = 6000;
// Alignment: the local decode's frames from the one holding the click on, and
// how well they must match the listener's output.
constexpr int kTemplateSamples = 4 * kHop;
constexpr double kMinCorrelation = 0.8;
// Onsets are searched for this long after a click was spoken.
constexpr double kSearchS = 0.45;

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

struct HeardBlock {
  int64_t start = 0;  // its first sample's index in the output
  int64_t write_ns = 0;
};

struct Heard {
  std::vector<float> audio;
  std::vector<HeardBlock> blocks;
  std::vector<int64_t> onsets;  // the ClickDetector's, output sample indexes
  // When output sample `index` was heard: its block's write time plus its offset, in seconds.
  double heard_s(int64_t index) const {
    auto it = std::upper_bound(blocks.begin(), blocks.end(), index,
                               [](int64_t i, const HeardBlock& block) { return i < block.start; });
    if (it == blocks.begin()) return NAN;
    --it;
    return it->write_ns * 1e-9 + static_cast<double>(index - it->start) / kRateHz;
  }
};

// Keeps everything written, with each block's write time, and runs a
// ClickDetector on it as it comes.
class RecordingSink final : public PlaybackSink {
 public:
  RecordingSink(float threshold, Heard* heard) : detector_(threshold, kRateHz), heard_(heard) {}
  void write(const float* samples, int64_t count) override {
    const int64_t write_ns = now_ns();
    heard_->blocks.push_back({static_cast<int64_t>(heard_->audio.size()), write_ns});
    heard_->audio.insert(heard_->audio.end(), samples, samples + count);
    for (const int64_t onset : detector_.feed(samples, count)) heard_->onsets.push_back(onset);
  }
  void finish() override {}
  bool is_device() const override { return false; }
  std::string describe() const override { return "recording sink with a click detector"; }

 private:
  encodec::client::ClickDetector detector_;
  Heard* heard_;
};

// --- the local decode ---------------------------------------------------------

std::vector<float> click_train(int64_t samples) {
  auto source = encodec::client::open_click_source(kRateHz, kClickIntervalS, 0, kClickSamples);
  std::vector<float> audio(static_cast<size_t>(samples));
  source->read(audio.data(), samples);
  return audio;
}

// What the listener hears without loss: the streaming encoder and decoder
// (sample n of the output is sample n of the input's decode). With `encode_ms`
// and `decode_ms`: each frame's compute time after the start.
std::vector<float> encodec_round_trip(const encodec::EncodecModel& model, const std::vector<float>& in,
                                      std::vector<double>* encode_ms = nullptr,
                                      std::vector<double>* decode_ms = nullptr) {
  encodec::StreamingEncoder encoder(model);
  encoder.set_bandwidth(kBandwidthKbps);
  encodec::StreamingDecoder decoder(model);
  std::vector<float> out;
  out.reserve(in.size());
  encodec::CodeFrame frame;
  std::vector<float> block;
  constexpr size_t kStartFrames = 16;
  for (size_t at = 0; at + kHop <= in.size(); at += kHop) {
    const auto start = std::chrono::steady_clock::now();
    encoder.push(in.data() + at, kHop);
    const auto encoded = std::chrono::steady_clock::now();
    while (encoder.pop(&frame)) decoder.push(frame);
    const auto decoded = std::chrono::steady_clock::now();
    if (encode_ms && at / kHop >= kStartFrames) {
      encode_ms->push_back(std::chrono::duration<double, std::milli>(encoded - start).count());
      decode_ms->push_back(std::chrono::duration<double, std::milli>(decoded - encoded).count());
    }
    block.resize(static_cast<size_t>(decoder.samples_ready()));
    decoder.pop(block.data(), static_cast<int64_t>(block.size()));
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

int opus_lookahead_samples() {
  int error = 0;
  OpusEncoder* encoder = opus_encoder_create(kRateHz, 1, OPUS_APPLICATION_VOIP, &error);
  if (error != OPUS_OK) return -1;
  opus_int32 lookahead = -1;
  opus_encoder_ctl(encoder, OPUS_GET_LOOKAHEAD(&lookahead));
  opus_encoder_destroy(encoder);
  return lookahead;
}

// x[n] - x[n - kHop]: what is not frame-periodic (the random model's buzz cancels).
std::vector<float> frame_residual(const std::vector<float>& x) {
  std::vector<float> d(x.size(), 0.0f);
  for (size_t i = kHop; i < x.size(); ++i) d[i] = x[i] - x[i - kHop];
  return d;
}

// --- what the server sent the room ---------------------------------------------

// A protocol peer in the room, joined for raw codes or for Opus, that records
// what the server sends it: the code frames' sequences and capture times, or
// the Opus packets.
class RoomObserver {
 public:
  struct Frame {
    uint32_t sequence = 0;
    uint64_t capture_time_us = 0;
  };
  struct OpusPacket {
    uint32_t sequence = 0;
    uint64_t capture_time_us = 0;
    std::string payload;
  };

  // opus_frame_ms > 0: joins for Opus (as the listener does) and records the packets.
  RoomObserver(uint16_t port, const encodec::LiveModel& live, const std::string& room, int opus_frame_ms = 0) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd_ < 0) throw std::runtime_error("observer: no socket");
    const int buffer_bytes = 1 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_port = htons(port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&server), sizeof server) != 0) {
      ::close(fd_);
      throw std::runtime_error("observer: cannot reach the server");
    }
    encodec::wire::Envelope hello;
    auto* body = hello.mutable_hello();
    body->set_protocol_version(encodec::net::kProtocolVersion);
    body->set_client_name("e2e-observer");
    body->mutable_model()->set_name(live.model.name());
    body->mutable_model()->set_checksum(live.checksum);
    body->mutable_model()->set_sample_rate_hz(kRateHz);
    body->mutable_model()->set_frame_samples(kHop);
    body->add_payload_kinds(encodec::wire::PAYLOAD_KIND_RAW_CODES);
    encodec::wire::Envelope reply;
    if (!request(hello, encodec::wire::Envelope::kWelcome, &reply)) {
      ::close(fd_);
      throw std::runtime_error("observer: no Welcome");
    }
    session_id_ = reply.welcome().session_id();
    encodec::wire::Envelope join;
    join.mutable_join()->set_room(room);
    join.mutable_join()->set_role(encodec::wire::ROLE_LISTEN);
    if (opus_frame_ms > 0) {
      join.mutable_join()->mutable_receive()->set_kind(encodec::wire::PAYLOAD_KIND_OPUS);
      join.mutable_join()->mutable_receive()->set_opus_frame_ms(static_cast<uint32_t>(opus_frame_ms));
      join.mutable_join()->mutable_receive()->set_opus_bitrate_bps(kOpusBitrateBps);
    } else {
      join.mutable_join()->mutable_receive()->set_kind(encodec::wire::PAYLOAD_KIND_RAW_CODES);
    }
    if (!request(join, encodec::wire::Envelope::kJoined, &reply)) {
      ::close(fd_);
      throw std::runtime_error("observer: could not join room " + room);
    }
    frames_.reserve(1 << 16);
    packets_.reserve(1 << 16);
    thread_ = std::thread([this] { record(); });
  }
  ~RoomObserver() {
    stop();
    ::close(fd_);
  }
  // Stops recording (and leaves); frames() is complete after it.
  void stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    thread_.join();
    encodec::wire::Envelope bye;
    bye.mutable_goodbye()->set_reason("done");
    send(bye);
  }
  const std::vector<Frame>& frames() const { return frames_; }
  const std::vector<OpusPacket>& packets() const { return packets_; }

 private:
  void send(encodec::wire::Envelope& envelope) {
    envelope.set_session_id(session_id_);
    uint8_t datagram[encodec::net::kMaxDatagramBytes];
    const size_t size = encodec::net::serialize_datagram(envelope, datagram, sizeof datagram);
    if (size > 0) ::send(fd_, datagram, size, 0);
  }
  // One envelope received within timeout_ms (false: none).
  bool receive(encodec::wire::Envelope* envelope, int timeout_ms) {
    pollfd request{fd_, POLLIN, 0};
    if (::poll(&request, 1, timeout_ms) <= 0) return false;
    uint8_t buffer[2048];
    const ssize_t bytes = ::recv(fd_, buffer, sizeof buffer, 0);
    return bytes > 0 && encodec::net::parse_datagram(buffer, static_cast<size_t>(bytes), envelope) ==
                            encodec::net::ParseError::kNone;
  }
  // Sends (again every 300 ms) until an envelope of `kind` comes back, 5 s at most.
  bool request(encodec::wire::Envelope& envelope, encodec::wire::Envelope::BodyCase kind,
               encodec::wire::Envelope* reply) {
    for (int attempt = 0; attempt < 16; ++attempt) {
      send(envelope);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
      while (std::chrono::steady_clock::now() < deadline) {
        if (receive(reply, 50)) {
          if (reply->body_case() == kind) return true;
          if (reply->body_case() == encodec::wire::Envelope::kError) return false;
        }
      }
    }
    return false;
  }
  void record() {
    encodec::wire::Envelope envelope;
    auto last_sent = std::chrono::steady_clock::now();
    while (!stop_.load()) {
      if (receive(&envelope, 50) && envelope.body_case() == encodec::wire::Envelope::kMedia) {
        const encodec::wire::Media& media = envelope.media();
        if (media.payload().empty()) {
          // an end mark
        } else if (media.kind() == encodec::wire::PAYLOAD_KIND_OPUS) {
          packets_.push_back({media.sequence(), media.capture_time_us(), media.payload()});
        } else if (media.kind() == encodec::wire::PAYLOAD_KIND_RAW_CODES) {
          frames_.push_back({media.sequence(), media.capture_time_us()});
        }
      }
      if (std::chrono::steady_clock::now() - last_sent > std::chrono::milliseconds(500)) {
        encodec::wire::Envelope keep_alive;
        keep_alive.mutable_keep_alive()->set_sent_time_us(0);
        send(keep_alive);
        last_sent = std::chrono::steady_clock::now();
      }
    }
  }

  int fd_ = -1;
  uint64_t session_id_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<Frame> frames_;
  std::vector<OpusPacket> packets_;
};

// The Opus packets a receiver got, decoded in sequence order (a missing one concealed).
std::vector<float> decode_opus_packets(const std::vector<RoomObserver::OpusPacket>& received, int frame_ms) {
  const int frame = kRateHz * frame_ms / 1000;
  std::string error;
  auto decoder = encodec::net::OpusFrameDecoder::create(kRateHz, frame, &error);
  if (!decoder) throw std::runtime_error("libopus: " + error);
  std::map<uint32_t, const std::string*> in_order;
  for (const auto& packet : received) in_order.emplace(packet.sequence, &packet.payload);
  std::vector<float> out;
  if (in_order.empty()) return out;
  uint32_t expected = in_order.begin()->first;
  for (const auto& [sequence, payload] : in_order) {
    for (; expected < sequence; ++expected) {
      out.resize(out.size() + frame);
      decoder->conceal(out.data() + out.size() - frame);
    }
    out.resize(out.size() + frame);
    float* at = out.data() + out.size() - frame;
    if (!decoder->decode(reinterpret_cast<const uint8_t*>(payload->data()), payload->size(), at)) decoder->conceal(at);
    expected = sequence + 1;
  }
  return out;
}

// The sender's frame at the Opus stream's first sample. The server's transcoder
// decodes the sender's frames from the first one its reorder window takes (the
// start burst reordered by jitter may begin it at frame 1 or 2), and stamps
// each Opus packet with the capture time of the decoded frame that completed
// it: packet p (frames of F samples) ends in decoded frame ((p + 1) F - 1) / 320,
// which is the sender's frame with that capture time. -1: no packet matched.
int64_t transcode_first_sequence(const std::vector<RoomObserver::Frame>& frames,
                                 const std::vector<RoomObserver::OpusPacket>& packets, int frame_samples) {
  std::map<uint64_t, uint32_t> sequence_of;  // capture time -> the sender's frame
  for (const auto& frame : frames) sequence_of.emplace(frame.capture_time_us, frame.sequence);
  std::map<int64_t, int> votes;
  for (const auto& packet : packets) {
    const auto found = sequence_of.find(packet.capture_time_us);
    if (packet.capture_time_us == 0 || found == sequence_of.end()) continue;
    const int64_t decoded_frame = ((int64_t{packet.sequence} + 1) * frame_samples - 1) / kHop;
    ++votes[int64_t{found->second} - decoded_frame];
  }
  if (votes.empty()) return -1;
  // The packets before any concealment in the transcoder agree; a concealed
  // frame shifts the later ones.
  return std::max_element(votes.begin(), votes.end(),
                          [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

// --- preflight: is the ClickDetector usable with this model? -------------------

struct Preflight {
  float threshold = 0.1f;
  int clicks = 0, found = 0;
  double shift_p50_samples = NAN;  // ClickDetector onset out minus click in
  float click_peak_min = 0, quiet_peak = 0;
  bool detector_usable = false;
};

Preflight preflight(const std::vector<float>& decoded) {
  Preflight result;
  const int64_t interval = std::llround(kClickIntervalS * kRateHz);
  const int64_t quiet = std::llround(encodec::client::kClickQuietS * kRateHz);
  float click_peak_min = INFINITY, quiet_peak = 0;
  std::vector<int64_t> clicks;
  for (int64_t k = 1;; ++k) {  // click 0 is the stream's start
    const int64_t at = encodec::client::click_position(k, kRateHz, kClickIntervalS);
    if (at + interval > static_cast<int64_t>(decoded.size())) break;
    clicks.push_back(at);
    float peak = 0;
    for (int64_t i = at; i < at + 2 * kHop; ++i) peak = std::max(peak, std::abs(decoded[i]));
    click_peak_min = std::min(click_peak_min, peak);
    // The quiet before the click: the detector needs kClickQuietS under the threshold there.
    for (int64_t i = at - quiet - kHop; i < at - kHop; ++i) quiet_peak = std::max(quiet_peak, std::abs(decoded[i]));
  }
  result.click_peak_min = click_peak_min;
  result.quiet_peak = quiet_peak;
  result.threshold = quiet_peak > 0 ? std::sqrt(quiet_peak * click_peak_min) : 0.5f * click_peak_min;
  const std::vector<int64_t> onsets = encodec::client::find_clicks(
      decoded.data(), static_cast<int64_t>(decoded.size()), result.threshold, kRateHz);
  std::vector<double> shifts;
  for (const int64_t at : clicks) {
    for (const int64_t onset : onsets) {
      if (onset >= at - kHop && onset < at + interval / 2) {
        shifts.push_back(static_cast<double>(onset - at));
        break;
      }
    }
  }
  result.clicks = static_cast<int>(clicks.size());
  result.found = static_cast<int>(shifts.size());
  result.shift_p50_samples = percentile(shifts, 0.5);
  // A clear margin, every click, and the onset where the click is (a trained model).
  result.detector_usable = result.clicks > 0 && result.found == result.clicks && quiet_peak < 0.25f * click_peak_min &&
                           std::abs(result.shift_p50_samples) <= kHop / 4;
  return result;
}

// --- configurations -----------------------------------------------------------

struct Config {
  std::string name;   // for --configs
  std::string label;  // for the table
  bool lm = false;
  int opus_frame_ms = 0;      // 0: EnCodec codes to the listener
  int max_delay_frames = 0;   // 0: the jitter buffer's default
};

const std::vector<Config>& all_configs() {
  static const std::vector<Config> configs = {
      {"raw", "EnCodec raw codes", false, 0, 0},
      {"lm", "EnCodec LM-coded", true, 0, 0},
      {"opus20", "Opus, 20 ms frames", false, 20, 0},
      {"opus10", "Opus, 10 ms frames", false, 10, 0},
      {"raw-jb1", "raw, jitter target 1 frame", false, 0, 1},
  };
  return configs;
}

struct RunResult {
  Config config;
  double loss_percent = 0;
  int64_t clicks_sent = 0;  // counted ones (after the warm-up)
  std::vector<double> latencies_ms;           // by alignment
  std::vector<double> detector_latencies_ms;  // by the ClickDetector (trained models)
  std::vector<std::pair<double, double>> missed;  // stream time (s), best correlation
  std::vector<std::pair<double, double>> series;  // stream time (s), latency (ms) of each click found
  double correlation_min = NAN;                   // of the clicks found
  uint64_t relay_dropped = 0, relay_packets = 0;
  encodec::net::JitterBufferStats jitter;
  uint64_t undecodable = 0;
  uint64_t lm_resets = 0;
  double client_latency_p50_ms = NAN;  // the listener's own: the sender's capture stamp to the decode
  double client_latency_p99_ms = NAN;
  uint64_t frames_sent = 0;
  double payload_kbps = 0;
  int64_t samples_out = 0;       // the listener's stream samples written to the sink
  int64_t samples_decoded = 0;   // its slots played or concealed, in samples
  int64_t server_late = -1;          // Opus: frames the transcoder dropped for coming too late
  int64_t server_concealed = -1;     // Opus: frames it concealed
  uint32_t server_first_sequence = 0;  // Opus: the frame its stream started at
  std::string error;
};

// --- one configuration at one loss rate -----------------------------------------

struct Setup {
  const encodec::LiveModel* live = nullptr;
  std::shared_ptr<const encodec::LmModel> lm;
  encodec::server::Server* server = nullptr;
  double seconds = 12;
  double warmup_s = 1.0;
  double jitter_ms = 2.0;
  int threads = 1;
  float threshold = 0.1f;
  bool detector_usable = false;
  uint64_t seed = 1;
  // The frame residual of the sender's clean decode (what a raw or LM listener hears without loss).
  std::vector<float> reference_encodec;
};

void wait_until(const std::function<bool()>& ready, double timeout_s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
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

// The output sample where `click`'s sample was heard (by aligning the local
// decode's residual with the listener's) and the correlation there; -1 when
// there is nothing to align (correlation NaN: the listener's output was silent).
std::pair<int64_t, double> align_click(const Heard& heard, const std::vector<float>& heard_residual,
                                       const std::vector<float>& reference, int64_t reference_base,
                                       const SentClick& click) {
  const int64_t template_start = click.sample / kHop * kHop;  // the sender's sample
  if (template_start < reference_base ||
      template_start - reference_base + kTemplateSamples > static_cast<int64_t>(reference.size())) {
    return {-1, 0.0};
  }
  const float* t = reference.data() + (template_start - reference_base);
  double t_energy = 0;
  for (int i = 0; i < kTemplateSamples; ++i) t_energy += double(t[i]) * t[i];
  if (t_energy <= 0) return {-1, 0.0};
  // Output samples heard from the click's time to kSearchS after it.
  const double spoken = click.spoken_s();
  int64_t first = -1, last = -1;
  for (const HeardBlock& block : heard.blocks) {
    const double at = block.write_ns * 1e-9;
    if (at + static_cast<double>(kHop) / kRateHz < spoken - 0.005) continue;
    if (at > spoken + kSearchS) break;
    if (first < 0) first = block.start;
    last = block.start + kHop;
  }
  if (first < 0) return {-1, 0.0};
  const int64_t lead = click.sample - template_start;  // the click's place in the template
  const int64_t lo = std::max<int64_t>(0, first - lead);
  const int64_t hi = std::min<int64_t>(static_cast<int64_t>(heard_residual.size()) - kTemplateSamples, last - lead);
  if (hi < lo) return {-1, 0.0};
  // Sliding energy of the listener's residual.
  const float* x = heard_residual.data();
  double x_energy = 0;
  for (int i = 0; i < kTemplateSamples; ++i) x_energy += double(x[lo + i]) * x[lo + i];
  int64_t best = -1;
  double best_correlation = -2;
  for (int64_t m = lo; m <= hi; ++m) {
    if (m > lo) {
      x_energy += double(x[m + kTemplateSamples - 1]) * x[m + kTemplateSamples - 1] - double(x[m - 1]) * x[m - 1];
    }
    if (x_energy <= 1e-12) continue;
    float dot = 0;
    for (int i = 0; i < kTemplateSamples; ++i) dot += t[i] * x[m + i];
    const double correlation = dot / std::sqrt(t_energy * x_energy);
    if (correlation > best_correlation) {
      best_correlation = correlation;
      best = m;
    }
  }
  if (best < 0) return {-1, NAN};  // the listener's output was silent there (a long concealment fades out)
  return {best + lead, best_correlation};
}

RunResult run_one(const Setup& setup, const Config& config, double loss_percent, int run_index) {
  RunResult result;
  result.config = config;
  result.loss_percent = loss_percent;

  // The previous run's sessions and room are gone first (a listener needs its
  // sender's room to exist, which we tell by the room count).
  wait_until([&] { return setup.server->stats().sessions == 0 && setup.server->stats().rooms == 0; }, 8.0);
  const encodec::server::ServerStats stats_before = setup.server->stats();

  encodec::net::ImpairmentOptions impairment;
  impairment.loss = loss_percent / 100.0;
  impairment.jitter_ms = setup.jitter_ms;
  impairment.seed = setup.seed + 2 * static_cast<uint64_t>(run_index);  // the relay also uses seed + 1
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
  const int64_t total_samples = std::llround(setup.seconds * kRateHz);
  std::vector<SentClick> sent;
  sent.reserve(static_cast<size_t>(setup.seconds / kClickIntervalS) + 4);
  Heard heard;
  heard.audio.reserve(static_cast<size_t>(total_samples + 10 * kRateHz));
  heard.blocks.reserve(static_cast<size_t>((total_samples + 10 * kRateHz) / kHop));

  encodec::client::ClientOptions sender;
  sender.server = "127.0.0.1:" + std::to_string(relay.local_endpoint().port());
  sender.mode = encodec::client::Mode::kSend;
  sender.room = room;
  sender.bandwidth_kbps = kBandwidthKbps;
  sender.lm = config.lm;
  sender.wait_for_members = config.opus_frame_ms > 0 ? 4 : 2;  // Opus: and the two observers
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
  if (config.max_delay_frames > 0) {
    listener.jitter.min_delay_frames = std::min(listener.jitter.min_delay_frames, config.max_delay_frames);
    listener.jitter.max_delay_frames = config.max_delay_frames;
  }
  const float threshold = setup.threshold;
  listener.playback_factory = [&heard, threshold] { return std::make_unique<RecordingSink>(threshold, &heard); };

  const auto lm = config.lm ? setup.lm : nullptr;
  encodec::client::ClientReport sent_report, heard_report;
  std::unique_ptr<RoomObserver> observer;  // Opus: the code frames the server forwarded
  std::unique_ptr<RoomObserver> opus_observer;  // Opus: what it sent an Opus member
  try {
    ClientThread sender_thread(*setup.live, lm, sender, setup.threads);
    wait_until([&] { return setup.server->stats().rooms >= 1 || sender_thread.done(); }, 8.0);
    if (config.opus_frame_ms > 0) {
      observer = std::make_unique<RoomObserver>(setup.server->udp_port(), *setup.live, room);
      opus_observer =
          std::make_unique<RoomObserver>(setup.server->udp_port(), *setup.live, room, config.opus_frame_ms);
    }
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
  if (sent_report.frames_sent > 0) {
    result.payload_kbps =
        8.0 * sent_report.payload_bytes_sent / (sent_report.frames_sent * kHop / double(kRateHz)) / 1000.0;
  }
  if (!heard_report.streams.empty()) {
    const encodec::client::StreamReport& stream = heard_report.streams.front();
    result.jitter = stream.jitter;
    result.undecodable = stream.undecodable;
    result.lm_resets = stream.lm_resets_requested;
    result.client_latency_p50_ms = stream.latency_p50_ms;
    result.client_latency_p99_ms = stream.latency_p99_ms;
    result.samples_out = stream.samples_out;
    const int frame = config.opus_frame_ms > 0 ? kRateHz * config.opus_frame_ms / 1000 : kHop;
    result.samples_decoded =
        static_cast<int64_t>(stream.jitter.played + stream.jitter.concealed + stream.jitter.stretched) * frame;
  }

  // What the listener would hear without its own concealment: the sender's
  // clean decode, or for Opus the server's transcode of the frames it got.
  std::vector<float> opus_reference;
  int64_t reference_base = 0;  // the sender's sample at the reference's sample 0
  if (observer) {
    observer->stop();
    opus_observer->stop();
    const int frame_samples = kRateHz * config.opus_frame_ms / 1000;
    opus_reference = frame_residual(decode_opus_packets(opus_observer->packets(), config.opus_frame_ms));
    const int64_t first_sequence = transcode_first_sequence(observer->frames(), opus_observer->packets(), frame_samples);
    if (first_sequence < 0) {
      result.error = "the Opus packets' capture times match none of the sender's frames";
      return result;
    }
    reference_base = first_sequence * kHop;
    result.server_first_sequence = static_cast<uint32_t>(first_sequence);
    const encodec::server::ServerStats stats = setup.server->stats();
    result.server_concealed = static_cast<int64_t>(stats.transcode_concealed - stats_before.transcode_concealed);
    result.server_late = static_cast<int64_t>(stats.reorder_late - stats_before.reorder_late);
  }
  const std::vector<float>& reference = observer ? opus_reference : setup.reference_encodec;
  const std::vector<float> heard_residual = frame_residual(heard.audio);
  const int64_t warmup_samples = std::llround(setup.warmup_s * kRateHz);
  for (const SentClick& click : sent) {
    if (click.sample < warmup_samples || click.sample + kTemplateSamples > total_samples) continue;
    ++result.clicks_sent;
    const auto [index, correlation] = align_click(heard, heard_residual, reference, reference_base, click);
    if (index < 0 || correlation < kMinCorrelation) {
      result.missed.emplace_back(static_cast<double>(click.sample) / kRateHz, correlation);
      continue;
    }
    result.latencies_ms.push_back(1000.0 * (heard.heard_s(index) - click.spoken_s()));
    result.series.emplace_back(static_cast<double>(click.sample) / kRateHz, result.latencies_ms.back());
    result.correlation_min =
        std::isnan(result.correlation_min) ? correlation : std::min(result.correlation_min, correlation);
    if (setup.detector_usable) {
      // The first detected onset heard after the click was spoken, within the search time.
      for (const int64_t onset : heard.onsets) {
        const double latency_s = heard.heard_s(onset) - click.spoken_s();
        if (latency_s >= -0.001 && latency_s < kSearchS) {
          result.detector_latencies_ms.push_back(1000.0 * latency_s);
          break;
        }
      }
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
  bool per_click = false;
  CLI::App app{
      "Mouth-to-ear latency, client -> encodecd -> client on 127.0.0.1 (all in this process), for EnCodec raw "
      "codes, EnCodec LM-coded and Opus at 6 kbps, at several loss rates between the sender and the server. "
      "Mouth-to-ear per click: the listener's sink write time of the block holding it (plus its offset) minus "
      "the sender's capture read time of the block holding it (plus its offset)"};
  app.add_option("--seconds", seconds,
                 "Seconds of clicks (one every 0.5 s) sent in real time per configuration and loss rate")
      ->capture_default_str()
      ->check(CLI::Range(3.0, 3600.0));
  app.add_option("--losses", losses,
                 "Packet loss rates in percent between the sender and the server, both directions (UdpImpairmentRelay, "
                 "seeded); the listener is connected directly")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--configs", config_names,
                 "Configurations, in order: raw (EnCodec raw codes), lm (EnCodec LM-coded), opus20 / opus10 (the "
                 "server transcodes to libopus, 20 / 10 ms frames); diagnostic: raw-jb1 (raw codes, the "
                 "listener's jitter buffer target held at 1 frame)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"raw", "lm", "opus20", "opus10", "raw-jb1"}));
  app.add_option("--checkpoint", checkpoint,
                 "EnCodec 24 kHz checkpoint for the server and both clients (default: the official size with "
                 "random weights; speed does not depend on the values)")
      ->check(CLI::ExistingFile);
  app.add_option("--lm-checkpoint", lm_checkpoint,
                 "LM checkpoint for the lm configuration (default: the official size with random weights)")
      ->check(CLI::ExistingFile);
  app.add_option("--threads", threads,
                 "LibTorch threads of each model user: the server's compute thread, the sender and the listener")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--seed", seed, "Seed of the impairment relay (run i uses seed + 2i and seed + 2i + 1)")
      ->capture_default_str();
  app.add_option("--jitter-ms", jitter_ms,
                 "Extra delay on the sender's path to the server (and back), uniform in [0, this] ms per packet, so the "
                 "jitter buffer has work")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 500.0));
  app.add_option("--warmup", warmup_s,
                 "Clicks in the first seconds of each run are not counted (the codec's and the jitter buffer's start)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  app.add_flag("--per-click", per_click, "Also print every click's latency (stream time: ms)");
  CLI11_PARSE(app, argc, argv);
  if (warmup_s + 1.0 > seconds) {
    std::fprintf(stderr, "--seconds must exceed --warmup by at least 1 s\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);  // the server's session log

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
      random_lm->set_kernels(encodec::LmKernels::kDeterministic);  // as load_live_lm
      lm = random_lm;
      lm_source = "official size, random weights";
    }
    lm_source += " (deterministic kernels, det1)";
  }

  // The LM's cost per frame as the clients pay it: the sender codes each frame
  // as its own segment and starts a new context (a new LmStreamEncoder) every
  // 75 frames; the listener decodes each segment.
  std::string lm_timing;
  if (lm) {
    std::vector<encodec::CodeFrame> codes;
    {
      encodec::StreamingEncoder encoder(live.model);
      encoder.set_bandwidth(kBandwidthKbps);
      const std::vector<float> clicks = click_train(4 * kRateHz);
      encodec::CodeFrame frame;
      for (size_t at = 0; at + kHop <= clicks.size(); at += kHop) {
        encoder.push(clicks.data() + at, kHop);
        while (encoder.pop(&frame)) codes.push_back(frame);
      }
    }
    std::vector<double> encode_frame_ms, decode_frame_ms, new_context_ms;
    std::unique_ptr<encodec::LmStreamEncoder> lm_encoder;
    std::unique_ptr<encodec::LmStreamDecoder> lm_decoder;
    constexpr int kContextFrames = 75;
    for (size_t i = 0; i < codes.size(); ++i) {
      const int n = codes[i].num_codebooks;
      std::vector<int64_t> frame_codes(codes[i].codes.begin(), codes[i].codes.begin() + n);
      const auto start = std::chrono::steady_clock::now();
      if (i % kContextFrames == 0) lm_encoder = std::make_unique<encodec::LmStreamEncoder>(*lm, n);
      const auto created = std::chrono::steady_clock::now();
      std::string bytes = lm_encoder->push_frame(frame_codes);
      bytes += lm_encoder->end_segment();
      const auto encoded = std::chrono::steady_clock::now();
      if (i % kContextFrames == 0) {
        if (!lm_decoder) {
          lm_decoder = std::make_unique<encodec::LmStreamDecoder>(*lm, n);
        } else {
          lm_decoder->finish();
        }
      }
      lm_decoder->feed(bytes);
      lm_decoder->next_frame();
      lm_decoder->end_segment();
      const auto decoded = std::chrono::steady_clock::now();
      if (i < 2) continue;  // first use
      if (i % kContextFrames == 0) new_context_ms.push_back(std::chrono::duration<double, std::milli>(created - start).count());
      encode_frame_ms.push_back(std::chrono::duration<double, std::milli>(encoded - created).count());
      decode_frame_ms.push_back(std::chrono::duration<double, std::milli>(decoded - encoded).count());
    }
    char buffer[320];
    std::snprintf(buffer, sizeof buffer,
                  "LM compute per frame here (local): code p50 %.2f / p99 %.2f ms, decode p50 %.2f / p99 %.2f ms, "
                  "a new context's encoder %.2f ms",
                  percentile(encode_frame_ms, 0.5), percentile(encode_frame_ms, 0.99), percentile(decode_frame_ms, 0.5),
                  percentile(decode_frame_ms, 0.99), percentile(new_context_ms, 0.5));
    lm_timing = buffer;
  }

  std::printf("machine: %s, %u hardware threads; load average %s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("model: %s, %s, %.0f kbps; LM: %s\n", live.model.name().c_str(), live.source.c_str(), kBandwidthKbps,
              lm_source.c_str());
  std::printf("threads: %d LibTorch thread(s) per model user (server compute thread, sender, listener); server "
              "1 I/O thread; everything in this process\n",
              threads);
  std::printf("path: sender (real time, 320-sample blocks) -> relay (loss, jitter 0-%.1f ms, seeded) -> encodecd -> "
              "listener (real time, adaptive jitter buffer), UDP on 127.0.0.1\n",
              jitter_ms);
  std::printf("clicks: %d samples at %.1f every %.1f s, %.0f s per run, the first %.1f s not counted\n", kClickSamples,
              encodec::client::kClickAmplitude, kClickIntervalS, seconds, warmup_s);

  // The local decodes the listener's output is aligned with.
  Setup setup;
  std::vector<double> encode_ms, decode_ms;
  const std::vector<float> decoded =
      encodec_round_trip(live.model, click_train(std::llround(seconds * kRateHz)), &encode_ms, &decode_ms);
  std::printf("codec compute per 13.3 ms frame here (local, %d thread(s), while nothing else of this bench runs): "
              "encode p50 %.2f / p99 %.2f ms, decode p50 %.2f / p99 %.2f ms\n",
              threads, percentile(encode_ms, 0.5), percentile(encode_ms, 0.99), percentile(decode_ms, 0.5),
              percentile(decode_ms, 0.99));
  setup.reference_encodec = frame_residual(decoded);
  const Preflight check = preflight(decoded);
  std::printf("click detector on the local decode: click peaks >= %.3g, quiet before clicks <= %.3g, threshold "
              "%.3g: found %d of %d, onset shift p50 %s samples -> %s\n",
              check.click_peak_min, check.quiet_peak, check.threshold, check.found, check.clicks,
              format_ms(check.shift_p50_samples).c_str(),
              check.detector_usable ? "usable, its figures are printed too"
                                    : "not usable (the model does not give clicks back as clicks: random weights?); "
                                      "clicks found by alignment only");
  if (!lm_timing.empty()) std::printf("%s\n", lm_timing.c_str());
  std::printf("Opus lookahead (OPUS_GET_LOOKAHEAD, VoIP, 24 kHz): %d samples = %.1f ms, included in the Opus rows\n",
              opus_lookahead_samples(), opus_lookahead_samples() * 1000.0 / kRateHz);
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

  setup.live = &live;
  setup.lm = lm;
  setup.server = &server;
  setup.seconds = seconds;
  setup.warmup_s = warmup_s;
  setup.jitter_ms = jitter_ms;
  setup.threads = threads;
  setup.threshold = check.threshold;
  setup.detector_usable = check.detector_usable;
  setup.seed = seed;

  // A short run first, not counted: the first run of a process pays for the
  // compute threads' and kernels' first use (late packets, a raised jitter target).
  int run_index = 0;
  {
    Setup warmup = setup;
    warmup.seconds = 3.0;
    warmup.warmup_s = 0.5;
    std::printf("warm-up run (3 s, Opus 20 ms, not counted) ...\n");
    std::fflush(stdout);
    run_one(warmup, all_configs()[2], 0.0, run_index++);
  }
  std::vector<RunResult> results;
  for (const Config& config : configs) {
    for (const double loss : losses) {
      std::printf("running %s, %g%% loss ...\n", config.label.c_str(), loss);
      std::fflush(stdout);
      results.push_back(run_one(setup, config, loss, run_index++));
      if (!results.back().error.empty()) std::printf("  failed: %s\n", results.back().error.c_str());
    }
  }
  server.stop("bench done");

  std::printf("\nmachine: %s, %u hardware threads, %d LibTorch thread(s) per model user; load average %s\n",
              cpu_model().c_str(), std::thread::hardware_concurrency(), threads, load_average().c_str());
  std::printf("mouth-to-ear per click = listener block write time + offset / rate - (sender block read time + offset "
              "/ rate); %.0f s per run\n\n",
              seconds);
  std::printf("| config | loss | clicks found | p50 ms | p99 ms | max ms | concealed frames | jb target frames | "
              "client p50 ms | sender kbps |%s\n",
              setup.detector_usable ? " detector p50 ms |" : "");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |%s\n",
              setup.detector_usable ? " --- |" : "");
  for (const RunResult& r : results) {
    if (!r.error.empty()) {
      std::printf("| %s | %g%% | failed: %s |\n", r.config.label.c_str(), r.loss_percent, r.error.c_str());
      continue;
    }
    const double max_ms =
        r.latencies_ms.empty() ? NAN : *std::max_element(r.latencies_ms.begin(), r.latencies_ms.end());
    std::printf("| %s | %g%% | %zu/%lld | %s | %s | %s | %llu | %d | %s | %.2f |", r.config.label.c_str(),
                r.loss_percent, r.latencies_ms.size(), static_cast<long long>(r.clicks_sent),
                format_ms(percentile(r.latencies_ms, 0.5)).c_str(), format_ms(percentile(r.latencies_ms, 0.99)).c_str(),
                format_ms(max_ms).c_str(), static_cast<unsigned long long>(r.jitter.concealed + r.undecodable),
                r.jitter.target_delay_frames, format_ms(r.client_latency_p50_ms).c_str(), r.payload_kbps);
    if (setup.detector_usable) std::printf(" %s |", format_ms(percentile(r.detector_latencies_ms, 0.5)).c_str());
    std::printf("\n");
  }
  std::printf("\nconcealed frames: jitter-buffer slots concealed plus packets that could not be decoded (LM "
              "out of context). jb target: the listener's jitter-buffer target at the end. client p50: the "
              "listener's own figure, from the sender's capture stamp (taken after encoding) to the frame's "
              "decode: it leaves out the encode and the listener's playout queue. sender kbps: the sender's payload (EnCodec "
              "codes, also for the Opus rows: the server transcodes).\n");

  std::printf("\nper run: the relay, the listener's jitter buffer, and the clicks not heard\n");
  for (const RunResult& r : results) {
    if (!r.error.empty()) continue;
    std::printf("  %s, %g%%: relay dropped %llu of %llu; played %llu, concealed %llu, late %llu, discarded %llu, "
                "stretched %llu, skipped %llu; undecodable %llu, LM resets asked %llu; samples decoded - written (dropped by the playout queue, or left in it) %lld; alignment correlation >= %.3f",
                r.config.label.c_str(), r.loss_percent, static_cast<unsigned long long>(r.relay_dropped),
                static_cast<unsigned long long>(r.relay_packets), static_cast<unsigned long long>(r.jitter.played),
                static_cast<unsigned long long>(r.jitter.concealed), static_cast<unsigned long long>(r.jitter.late),
                static_cast<unsigned long long>(r.jitter.discarded), static_cast<unsigned long long>(r.jitter.stretched),
                static_cast<unsigned long long>(r.jitter.skipped_concealments),
                static_cast<unsigned long long>(r.undecodable), static_cast<unsigned long long>(r.lm_resets),
                static_cast<long long>(r.samples_decoded - r.samples_out), r.correlation_min);
    if (!r.latencies_ms.empty() && !std::isnan(r.client_latency_p50_ms)) {
      std::printf("\n    mouth-to-ear p50 - client p50 = %.1f ms (the sender's encode before its capture stamp, and the "
                  "listener's playout queue)",
                  percentile(r.latencies_ms, 0.5) - r.client_latency_p50_ms);
    }
    if (r.server_concealed >= 0) {
      std::printf("\n    server transcoder input: started at frame %u, %lld frames concealed, %lld dropped as too late",
                  r.server_first_sequence, static_cast<long long>(r.server_concealed),
                  static_cast<long long>(r.server_late));
    }
    if (per_click) {
      std::printf("\n    per click (stream time s: ms):");
      for (const auto& [at, ms] : r.series) std::printf(" %.1f: %.1f", at, ms);
    }
    if (!r.missed.empty()) {
      std::printf("\n    not heard (concealed near the click; time in the stream, best correlation):");
      for (const auto& [at, correlation] : r.missed) {
        if (std::isnan(correlation)) {
          std::printf(" %.1f s (silence)", at);
        } else {
          std::printf(" %.1f s (%.2f)", at, correlation);
        }
      }
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
  if (const RunResult* raw0 = find("raw", 0)) {
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
    if (!raw || !lm_run) {
      if (find("raw", loss) || std::any_of(configs.begin(), configs.end(), [](const Config& c) { return c.lm; })) {
        std::printf("  LM-coded p50 within %.0f ms of raw, %g%% loss: no LM clicks heard\n", kTargetLmOverRawMs, loss);
      }
      continue;
    }
    if (2 * lm_run->latencies_ms.size() < static_cast<size_t>(lm_run->clicks_sent)) {
      std::printf("  LM-coded p50 within %.0f ms of raw, %g%% loss: %+.1f ms over only %zu of %lld clicks (the rest "
                  "concealed): not judged\n",
                  kTargetLmOverRawMs, loss,
                  percentile(lm_run->latencies_ms, 0.5) - percentile(raw->latencies_ms, 0.5),
                  lm_run->latencies_ms.size(), static_cast<long long>(lm_run->clicks_sent));
      continue;
    }
    const double difference = percentile(lm_run->latencies_ms, 0.5) - percentile(raw->latencies_ms, 0.5);
    std::printf("  LM-coded p50 within %.0f ms of raw, %g%% loss: %+.1f ms  %s\n", kTargetLmOverRawMs, loss,
                difference, std::abs(difference) <= kTargetLmOverRawMs ? "met" : "MISSED");
  }
  return 0;
}
