#include "loopback.h"

#include <poll.h>

#include <filesystem>
#include <random>
#include <stdexcept>
#include <thread>

#include <boost/asio/write.hpp>

#include <gtest/gtest.h>
#include <sndfile.h>

#include "encodec/audio_stream.h"
#include "encodec/client_audio.h"
#include "golden.h"

namespace encodec::testing {

namespace asio = boost::asio;

const LiveModel* golden_live_model() {
  static const std::unique_ptr<LiveModel> model = []() -> std::unique_ptr<LiveModel> {
    if (!golden_dir()) return nullptr;
    LiveModelOptions options;
    options.checkpoint = golden_path("encodec_24khz-random.th");
    return std::make_unique<LiveModel>(load_live_model(options));
  }();
  return model.get();
}

std::shared_ptr<const LmModel> golden_live_lm() {
  static const std::shared_ptr<const LmModel> lm = []() -> std::shared_ptr<const LmModel> {
    if (!golden_dir()) return nullptr;
    return load_live_lm(golden_path("encodec_lm_24khz-random.th"), "",
                        golden_live_model()->model.config());
  }();
  return lm;
}

server::ServerOptions loopback_server_options() {
  server::ServerOptions options;
  options.udp_listen = "127.0.0.1:0";
  options.tcp_listen = "127.0.0.1:0";
  options.keep_alive_interval_ms = 200;
  options.session_timeout_ms = 1500;
  return options;
}

namespace {

// Every frame of a finished encoder.
std::vector<CodeFrame> finish_and_pop(StreamingEncoder& encoder) {
  encoder.finish();
  std::vector<CodeFrame> frames;
  CodeFrame frame;
  while (encoder.pop(&frame)) frames.push_back(frame);
  return frames;
}

}  // namespace

std::vector<CodeFrame> encode_file(const EncodecModel& model, const std::string& path,
                                   double bandwidth_kbps) {
  StreamingEncoder encoder(model);
  encoder.set_bandwidth(bandwidth_kbps);
  AudioFileReader reader(path, model.sample_rate_hz(), 1);
  while (auto block = reader.read()) {
    const torch::Tensor samples = block->contiguous();
    encoder.push(samples.data_ptr<float>(), samples.size(1));
  }
  return finish_and_pop(encoder);
}

std::vector<CodeFrame> encode_samples(const EncodecModel& model, const std::vector<float>& samples,
                                      double bandwidth_kbps) {
  StreamingEncoder encoder(model);
  encoder.set_bandwidth(bandwidth_kbps);
  encoder.push(samples.data(), static_cast<int64_t>(samples.size()));
  return finish_and_pop(encoder);
}

std::vector<CodeFrame> truncate_codes(std::vector<CodeFrame> frames, int codebooks) {
  for (CodeFrame& frame : frames) {
    for (int k = codebooks; k < frame.num_codebooks; ++k) frame.codes[k] = 0;
    frame.num_codebooks = std::min(frame.num_codebooks, codebooks);
  }
  return frames;
}

std::vector<float> decode_codes(const EncodecModel& model, const std::vector<CodeFrame>& frames,
                                size_t first) {
  StreamingDecoder decoder(model);
  for (size_t i = first; i < frames.size(); ++i) decoder.push(frames[i]);
  decoder.finish();
  std::vector<float> audio(static_cast<size_t>(decoder.samples_ready()));
  decoder.pop(audio.data(), static_cast<int64_t>(audio.size()));
  return audio;
}

std::vector<float> read_wav(const std::string& path) {
  SF_INFO info{};
  SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
  if (file == nullptr) throw std::runtime_error("cannot read " + path);
  std::vector<short> pcm(static_cast<size_t>(info.frames * info.channels));
  sf_readf_short(file, pcm.data(), info.frames);
  sf_close(file);
  std::vector<float> samples(pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i) samples[i] = pcm[i] / 32768.0f;
  return samples;
}

std::vector<float> as_written(const std::vector<float>& samples, const std::string& dir) {
  const std::string path = dir + "/expected.wav";
  auto sink = client::open_file_sink(path, 24000);
  sink->write(samples.data(), static_cast<int64_t>(samples.size()));
  sink->finish();
  std::vector<float> result = read_wav(path);
  std::filesystem::remove(path);
  return result;
}

void expect_clean_call(uint16_t udp_port, const std::string& dir,
                       const std::function<void()>& meanwhile, int members,
                       const std::string& token) {
  const LiveModel& live = *golden_live_model();
  const auto member = [&](const std::string& input, const std::string& output) {
    client::ClientOptions options;
    options.server = "127.0.0.1:" + std::to_string(udp_port);
    options.mode = client::Mode::kCall;
    options.room = "call";
    options.input = golden_path("inputs/" + input);
    options.output = dir + "/" + output;
    options.as_fast_as_possible = true;
    options.wait_for_members = members;
    options.token = token;
    return options;
  };
  ClientRun run_a(member("speech_24k.wav", "a.wav")), run_b(member("chirp_odd_24k.wav", "b.wav"));
  meanwhile();
  run_a.get();
  run_b.get();
  const auto decoded = [&](const std::string& name) {
    return as_written(decode_codes(live.model, encode_file(live.model, golden_path("inputs/" + name), 6.0)),
                      dir);
  };
  EXPECT_EQ(read_wav(dir + "/a.wav"), decoded("chirp_odd_24k.wav"));
  EXPECT_EQ(read_wav(dir + "/b.wav"), decoded("speech_24k.wav"));
}

// --- RawPeer -----------------------------------------------------------------

RawPeer::RawPeer(uint16_t port, bool tcp) {
  if (tcp) {
    tcp_ = std::make_unique<asio::ip::tcp::socket>(io_);
    tcp_->connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  } else {
    udp_ = std::make_unique<asio::ip::udp::socket>(io_);
    udp_->open(asio::ip::udp::v4());
    udp_->connect(asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }
}

RawPeer::~RawPeer() = default;

void RawPeer::use_key(const std::string& secret) {
  signer_ = std::make_unique<net::MessageSigner>(std::make_shared<const net::MessageKey>(secret),
                                                 net::Direction::kClientToServer);
  signer_->set_session(session_id_);
}

void RawPeer::set_session(uint64_t session_id) {
  session_id_ = session_id;
  if (signer_) signer_->set_session(session_id);
}

std::string RawPeer::serialize(wire::Envelope envelope) {
  if (envelope.session_id() == 0) envelope.set_session_id(session_id_);
  std::string bytes;
  if (tcp_) {
    net::append_tcp_frame(envelope, &bytes, signer_.get());
  } else {
    bytes.resize(net::kMaxDatagramBytes);
    bytes.resize(net::serialize_datagram(envelope, reinterpret_cast<uint8_t*>(bytes.data()),
                                         bytes.size(), signer_.get()));
  }
  return bytes;
}

void RawPeer::send(wire::Envelope envelope) {
  last_sent_ = serialize(std::move(envelope));
  send_bytes(last_sent_);
}

void RawPeer::send_bytes(const std::string& bytes) {
  boost::system::error_code ignored;
  if (tcp_) {
    asio::write(*tcp_, asio::buffer(bytes), ignored);
  } else {
    udp_->send(asio::buffer(bytes), 0, ignored);
  }
}

std::optional<wire::Envelope> RawPeer::receive(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int fd = tcp_ ? tcp_->native_handle() : udp_->native_handle();
  for (;;) {
    if (tcp_) {
      wire::Envelope envelope;
      const auto result = reader_.next(&envelope);
      if (result == net::TcpFrameReader::kMessage) {
        const net::SignedMessage& message = reader_.last_message();
        last_received_.assign(reinterpret_cast<const char*>(message.envelope_bytes),
                              message.envelope_size + (message.has_trailer ? net::kAuthTrailerBytes : 0));
        return envelope;
      }
      if (result == net::TcpFrameReader::kError) return std::nullopt;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || closed_) return std::nullopt;
    pollfd request{fd, POLLIN, 0};
    if (::poll(&request, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    uint8_t buffer[65536];
    boost::system::error_code error;
    size_t bytes = 0;
    if (tcp_) {
      bytes = tcp_->read_some(asio::buffer(buffer), error);
      if (error) {
        closed_ = true;
        continue;
      }
      reader_.append(buffer, bytes);
    } else {
      bytes = udp_->receive(asio::buffer(buffer), 0, error);
      if (error) continue;  // e.g. ICMP unreachable from an earlier send
      wire::Envelope envelope;
      const net::SignedMessage message = net::split_signed(buffer, bytes);
      if (net::parse_datagram(message.envelope_bytes, message.envelope_size, &envelope) ==
          net::ParseError::kNone) {
        last_received_.assign(reinterpret_cast<const char*>(buffer), bytes);
        return envelope;
      }
    }
  }
}

std::optional<wire::Envelope> RawPeer::receive_until(
    const std::function<bool(const wire::Envelope&)>& match, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    std::optional<wire::Envelope> envelope = receive(left);
    if (!envelope) return std::nullopt;
    if (match(*envelope)) return envelope;
  }
}

uint64_t RawPeer::hello(uint32_t protocol_version, bool with_model) {
  const LiveModel* live = golden_live_model();
  wire::Envelope envelope;
  wire::Hello* hello = envelope.mutable_hello();
  hello->set_protocol_version(protocol_version);
  hello->set_client_name("raw-peer");
  if (with_model) {
    hello->mutable_model()->set_name(live->model.name());
    hello->mutable_model()->set_checksum(live->checksum);
  }
  if (signer_) {
    hello->set_auth_time_unix_ms(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count()));
    std::random_device random;
    std::string nonce(16, '\0');
    for (char& byte : nonce) byte = static_cast<char>(random());
    hello->set_auth_nonce(nonce);
  }
  send(envelope);
  const auto reply = receive_until(
      [](const wire::Envelope& e) { return e.has_welcome() || e.has_error(); },
      std::chrono::milliseconds(2000));
  if (!reply || !reply->has_welcome()) return 0;
  set_session(reply->welcome().session_id());
  return session_id_;
}

// --- ClientRun -----------------------------------------------------------------

ClientRun::ClientRun(client::ClientOptions options, std::shared_ptr<const LmModel> lm)
    : client_(client::needs_model(options)
                  ? std::make_unique<client::Client>(*golden_live_model(), std::move(lm), std::move(options))
                  : std::make_unique<client::Client>(std::move(options))) {
  thread_ = std::thread([this] {
    try {
      report_ = client_->run();
    } catch (const std::exception& error) {
      error_ = error.what();
    }
  });
}

ClientRun::~ClientRun() {
  if (thread_.joinable()) {
    client_->stop();
    thread_.join();
  }
}

client::ClientReport ClientRun::get() {
  if (thread_.joinable()) thread_.join();
  if (!error_.empty()) throw std::runtime_error("client failed: " + error_);
  return report_;
}

}  // namespace encodec::testing
