// encodecd's transcoding endpoint with real HTTP requests on 127.0.0.1: the
// bytes of POST /v1/encode and /v1/decode against the `encodec` command's for
// the same input and options (golden checkpoints, both models, LM coding),
// long inputs as jobs (202, progress, result), bad and oversized bodies, a
// full queue, cancelled jobs, a client that stalls mid-upload, tokens, rate
// limits, and the metrics against what the test did.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "encodec/cli.h"
#include "encodec/compress.h"
#include "encodec/demo_model.h"
#include "encodec/ecdc.h"
#include "encodec/http_endpoint.h"
#include "encodec/server.h"
#include "golden.h"
#include "http_client.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

std::string error_of(const HttpReply& reply) {
  try {
    return nlohmann::json::parse(reply.body).at("error").get<std::string>();
  } catch (const std::exception&) {
    return "(not a JSON error: " + reply.body.substr(0, 200) + ")";
  }
}

// Noise in a 16-bit WAV file: `seconds` at `rate_hz`, `channels` channels.
std::string noise_wav(const std::string& dir, double seconds, int rate_hz, int channels) {
  const std::string path = dir + "/noise_" + std::to_string(rate_hz) + "_" + std::to_string(channels) + ".wav";
  const int64_t frames = static_cast<int64_t>(seconds * rate_hz);
  const std::vector<float> values = random_normal_values(static_cast<size_t>(frames * channels), 7);
  torch::Tensor samples = torch::from_blob(const_cast<float*>(values.data()), {channels, frames}, torch::kFloat32)
                              .clone()
                              .mul_(0.1f)
                              .clamp_(-0.9f, 0.9f);
  write_pcm16(path, samples, rate_hz);
  return path;
}

class HttpTranscodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, loopback_server_options());
    server_->start();
    dir_ = make_temp_dir("http_transcode");
  }
  void TearDown() override {
    if (http_) http_->stop();
    if (server_) server_->stop("test over");
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static server::HttpOptions golden_options() {
    server::HttpOptions options;
    options.listen = "127.0.0.1:0";
    options.request_timeout_ms = 2000;
    options.models.checkpoint_24khz = golden_path("encodec_24khz-random.th");
    options.models.checkpoint_48khz = golden_path("encodec_48khz-random.th");
    options.models.lm_checkpoint_24khz = golden_path("encodec_lm_24khz-random.th");
    options.models.lm_checkpoint_48khz = golden_path("encodec_lm_48khz-random.th");
    // The tests poll jobs and make many requests: only the rate limit's own test limits them.
    options.requests_per_second = 1000;
    options.request_burst = 1000;
    return options;
  }

  void start_http(server::HttpOptions options) {
    http_ = std::make_unique<server::HttpEndpoint>(*server_, options);
    http_->start();
  }

  uint16_t port() const { return http_->port(); }

  // The `encodec` command's output for `arguments` (INPUT OUTPUT last), one thread.
  std::string cli_output(std::vector<std::string> arguments, const std::string& output) {
    std::vector<std::string> command = {"encodec", "-q", "-f", "--threads", "1"};
    command.insert(command.end(), arguments.begin(), arguments.end());
    std::vector<const char*> argv;
    for (const std::string& argument : command) argv.push_back(argument.c_str());
    EXPECT_EQ(run_encodec_cli(static_cast<int>(argv.size()), argv.data()), 0);
    return read_file_bytes(output);
  }

  std::map<std::string, double> metrics() { return parse_metrics(http_request(port(), "/metrics").body); }

  // Polls GET /v1/jobs/ID until it is no longer 202 (or 60 s pass).
  HttpReply wait_for_job(const std::string& id, std::vector<double>* progress = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
      HttpReply reply = http_request(port(), "/v1/jobs/" + id);
      if (reply.status != 202 || std::chrono::steady_clock::now() > deadline) return reply;
      if (progress) progress->push_back(nlohmann::json::parse(reply.body).at("progress").get<double>());
      std::this_thread::sleep_for(milliseconds(50));
    }
  }

  const LiveModel* live_ = nullptr;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<server::HttpEndpoint> http_;
  std::string dir_;
};

TEST_F(HttpTranscodeTest, EncodeGivesTheCommandsBytes) {
  start_http(golden_options());
  const std::string speech = golden_path("inputs/speech_24k.wav");
  const std::string music = golden_path("inputs/music_stereo_48k.wav");
  const std::string checkpoint_24 = golden_path("encodec_24khz-random.th");
  const std::string checkpoint_48 = golden_path("encodec_48khz-random.th");
  const std::string out = dir_ + "/cli.ecdc";
  struct Case {
    std::string query;
    std::string input;
    std::vector<std::string> cli;
  };
  const std::vector<Case> cases = {
      {"", speech, {"--checkpoint", checkpoint_24}},
      {"?bandwidth=1.5", music, {"-b", "1.5", "--checkpoint", checkpoint_24}},
      {"?bandwidth=12&lm=1", speech,
       {"-b", "12", "--lm", "--lm-checkpoint", golden_path("encodec_lm_24khz-random.th"), "--checkpoint", checkpoint_24}},
      {"?model=48khz&bandwidth=24", music, {"--hq", "-b", "24", "--checkpoint", checkpoint_48}},
      {"?model=48khz&bandwidth=3&lm=true", speech,
       {"--hq", "-b", "3", "--lm", "--lm-checkpoint", golden_path("encodec_lm_48khz-random.th"), "--checkpoint",
        checkpoint_48}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> arguments = c.cli;
    arguments.push_back(c.input);
    arguments.push_back(out);
    const std::string expected = cli_output(arguments, out);
    const HttpReply reply = http_request(port(), "/v1/encode" + c.query, "POST", read_file_bytes(c.input));
    ASSERT_EQ(reply.status, 200) << c.query << ": " << reply.body.substr(0, 300);
    EXPECT_EQ(reply.content_type, "application/octet-stream");
    EXPECT_EQ(reply.body, expected) << c.query << ": " << describe_byte_difference(reply.body, expected);
  }
  EXPECT_EQ(metrics()["encodecd_transcode_jobs_total{code=\"200\",kind=\"encode\"}"], cases.size());
}

TEST_F(HttpTranscodeTest, DecodeGivesTheCommandsWav) {
  start_http(golden_options());
  const std::string checkpoint_24 = golden_path("encodec_24khz-random.th");
  const std::string checkpoint_48 = golden_path("encodec_48khz-random.th");
  const std::string lm_24 = golden_path("encodec_lm_24khz-random.th");
  struct Case {
    std::vector<std::string> encode;  // options of the command that makes the .ecdc
    std::string query;
    std::vector<std::string> decode;
  };
  const std::vector<Case> cases = {
      {{"--checkpoint", checkpoint_24}, "", {"--checkpoint", checkpoint_24}},
      {{"--checkpoint", checkpoint_24, "-b", "24"}, "?rescale=1", {"-r", "--checkpoint", checkpoint_24}},
      {{"--checkpoint", checkpoint_24, "--lm", "--lm-checkpoint", lm_24}, "",
       {"--checkpoint", checkpoint_24, "--lm-checkpoint", lm_24}},
      {{"--hq", "--checkpoint", checkpoint_48}, "", {"--checkpoint", checkpoint_48}},
  };
  const std::string ecdc = dir_ + "/in.ecdc";
  const std::string wav = dir_ + "/cli.wav";
  for (const Case& c : cases) {
    std::vector<std::string> encode = c.encode;
    encode.push_back(golden_path("inputs/music_stereo_48k.wav"));
    encode.push_back(ecdc);
    const std::string compressed = cli_output(encode, ecdc);
    std::vector<std::string> decode = c.decode;
    decode.push_back(ecdc);
    decode.push_back(wav);
    const std::string expected = cli_output(decode, wav);
    const HttpReply reply = http_request(port(), "/v1/decode" + c.query, "POST", compressed);
    ASSERT_EQ(reply.status, 200) << c.query << ": " << reply.body.substr(0, 300);
    EXPECT_EQ(reply.content_type, "audio/wav");
    EXPECT_EQ(reply.body, expected) << describe_byte_difference(reply.body, expected);
  }
  // The scratch files of the decodes are gone.
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
    EXPECT_EQ(entry.path().filename().string().rfind("encodecd-job-", 0), std::string::npos) << entry.path();
  }
}

// A server that runs the demo model encodes 24 kHz with it, as the command
// does, and decodes files by the model they name.
TEST_F(HttpTranscodeTest, ADemoServerEncodesWithTheDemoModelAndDecodesByTheFilesModel) {
  const std::string demo = std::string(ENCODEC_SOURCE_DIR) + "/models/" + kDemoCheckpoint24kHz;
  server::HttpOptions options = golden_options();
  options.models.demo_checkpoint_24khz = demo;
  start_http(options);
  const std::string speech = golden_path("inputs/speech_24k.wav");
  const std::string ecdc = dir_ + "/demo.ecdc", wav = dir_ + "/demo.wav";
  const std::string expected = cli_output({"-b", "3", "--checkpoint", demo, speech, ecdc}, ecdc);
  std::istringstream header_bytes(expected);
  EXPECT_EQ(read_ecdc_header(header_bytes).model_name, kModelNameDemo24kHz);
  HttpReply reply = http_request(port(), "/v1/encode?bandwidth=3", "POST", read_file_bytes(speech));
  ASSERT_EQ(reply.status, 200) << reply.body.substr(0, 300);
  EXPECT_EQ(reply.body, expected) << describe_byte_difference(reply.body, expected);

  reply = http_request(port(), "/v1/decode", "POST", expected);
  ASSERT_EQ(reply.status, 200) << reply.body.substr(0, 300);
  const std::string expected_wav = cli_output({"--checkpoint", demo, ecdc, wav}, wav);
  EXPECT_EQ(reply.body, expected_wav) << describe_byte_difference(reply.body, expected_wav);

  // A file of the official name decodes with the official checkpoint.
  const std::string official = cli_output({"--checkpoint", golden_path("encodec_24khz-random.th"), speech, ecdc}, ecdc);
  reply = http_request(port(), "/v1/decode", "POST", official);
  ASSERT_EQ(reply.status, 200) << reply.body.substr(0, 300);
  EXPECT_EQ(reply.body, cli_output({"--checkpoint", golden_path("encodec_24khz-random.th"), ecdc, wav}, wav));

  reply = http_request(port(), "/v1/encode?lm=1", "POST", read_file_bytes(speech));
  EXPECT_EQ(reply.status, 400);
  EXPECT_NE(error_of(reply).find("demo model"), std::string::npos) << error_of(reply);
}

TEST_F(HttpTranscodeTest, LongInputsBecomeJobsWithProgressThenTheResult) {
  server::HttpOptions options = golden_options();
  options.sync_limit_seconds = 2;
  start_http(options);
  const std::string input = noise_wav(dir_, 20, 48000, 2);
  const std::string out = dir_ + "/cli.ecdc";
  const std::string expected =
      cli_output({"--hq", "-b", "6", "--checkpoint", golden_path("encodec_48khz-random.th"), input, out}, out);

  const HttpReply accepted = http_request(port(), "/v1/encode?model=48khz", "POST", read_file_bytes(input));
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const nlohmann::json job = nlohmann::json::parse(accepted.body);
  const std::string id = job.at("job");
  EXPECT_EQ(accepted.headers.at("location"), "/v1/jobs/" + id);
  EXPECT_DOUBLE_EQ(job.at("audio_seconds").get<double>(), 20.0);
  std::vector<double> progress;
  const HttpReply done = wait_for_job(id, &progress);
  ASSERT_EQ(done.status, 200) << done.body.substr(0, 300);
  EXPECT_EQ(done.body, expected) << describe_byte_difference(done.body, expected);
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GE(progress[i], progress[i - 1]);
  for (const double fraction : progress) EXPECT_LE(fraction, 1.0);
  // The result stays until its time to live; then the id is unknown.
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + id).body, expected);
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + id, "DELETE").status, 200);
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + id).status, 404);

  // A short input is answered at once, with the same bytes as the command.
  const std::string short_input = golden_path("inputs/short_48k.wav");
  const std::string short_expected =
      cli_output({"--hq", "--checkpoint", golden_path("encodec_48khz-random.th"), short_input, out}, out);
  EXPECT_EQ(http_request(port(), "/v1/encode?model=48khz", "POST", read_file_bytes(short_input)).body, short_expected);
}

TEST_F(HttpTranscodeTest, BadRequestsAreRefusedNamingWhatIsWrong) {
  server::HttpOptions options = golden_options();
  options.max_upload_bytes = 200000;
  options.max_audio_seconds = 2;
  start_http(options);
  const std::string speech = read_file_bytes(golden_path("inputs/speech_24k.wav"));  // 2.5 s
  const std::string tiny = read_file_bytes(golden_path("inputs/tiny_24k.wav"));
  struct Case {
    std::string path;
    std::string body;
    long status;
    std::string named;  // in the error message
  };
  const std::vector<Case> cases = {
      {"/v1/encode", "RIFF this is not audio at all", 400, "request body"},
      {"/v1/encode", "", 400, "empty"},
      {"/v1/encode?bandwidth=7", tiny, 400, "bandwidth=7"},
      {"/v1/encode?model=48khz&bandwidth=1.5", tiny, 400, "bandwidth=1.5"},
      {"/v1/encode?model=96khz", tiny, 400, "model=96khz"},
      {"/v1/encode?lm=maybe", tiny, 400, "lm=maybe"},
      {"/v1/encode?bandwith=6", tiny, 400, "'bandwith'"},
      {"/v1/encode?bandwidth=%zz", tiny, 400, "percent"},
      {"/v1/encode", speech, 413, "2"},
      {"/v1/encode", std::string(300000, 'x'), 413, "200000"},
      {"/v1/decode", tiny, 400, ".ecdc"},
      {"/v1/decode?rescale=2", tiny, 400, "rescale=2"},
      {"/v1/jobs/0123456789abcdef", "", 404, "0123456789abcdef"},
  };
  for (const Case& c : cases) {
    const HttpReply reply = http_request(port(), c.path, c.body.empty() && c.path.rfind("/v1/jobs", 0) == 0 ? "GET" : "POST", c.body);
    EXPECT_EQ(reply.status, c.status) << c.path << ": " << reply.body;
    EXPECT_EQ(reply.content_type, "application/json") << c.path;
    EXPECT_NE(error_of(reply).find(c.named), std::string::npos) << c.path << ": " << error_of(reply);
  }
  EXPECT_EQ(http_request(port(), "/v1/encode", "GET").status, 405);
  // A corrupt .ecdc (a good header, then garbage) fails in its job: 400.
  const std::string out = dir_ + "/tiny.ecdc";
  std::string corrupt = cli_output({"--checkpoint", golden_path("encodec_24khz-random.th"),
                                    golden_path("inputs/tiny_24k.wav"), out}, out);
  corrupt.resize(corrupt.size() - 3);
  const HttpReply truncated = http_request(port(), "/v1/decode", "POST", corrupt);
  EXPECT_EQ(truncated.status, 400) << truncated.body;
  EXPECT_NE(error_of(truncated).find("corrupt"), std::string::npos) << error_of(truncated);
  // Everything above was answered without running a model, but the last.
  const auto samples = metrics();
  EXPECT_EQ(samples.at("encodecd_transcode_jobs_total{code=\"400\",kind=\"encode\"}"), 8);
  EXPECT_EQ(samples.at("encodecd_transcode_jobs_total{code=\"413\",kind=\"encode\"}"), 1);
  EXPECT_EQ(samples.at("encodecd_transcode_jobs_total{code=\"400\",kind=\"decode\"}"), 3);
  // The too-large body was refused from its Content-Length, before any job.
  EXPECT_EQ(samples.at("encodecd_http_requests_total{code=\"413\"}"), 2);
}

TEST_F(HttpTranscodeTest, AFullQueueAnswers503WithRetryAfter) {
  server::HttpOptions options = golden_options();
  options.sync_limit_seconds = 1;
  options.queue_capacity = 1;
  options.transcode_workers = 1;
  start_http(options);
  // Each job takes seconds (60 s of 48 kHz stereo): the first runs, the second waits.
  const std::string input = read_file_bytes(noise_wav(dir_, 60, 48000, 2));
  const HttpReply running = http_request(port(), "/v1/encode?model=48khz", "POST", input);
  ASSERT_EQ(running.status, 202) << running.body;
  const HttpReply waiting = http_request(port(), "/v1/encode?model=48khz", "POST", input);
  ASSERT_EQ(waiting.status, 202) << waiting.body;
  const std::string waiting_id = nlohmann::json::parse(waiting.body).at("job");
  const nlohmann::json waiting_status = nlohmann::json::parse(http_request(port(), "/v1/jobs/" + waiting_id).body);
  EXPECT_EQ(waiting_status.at("status"), "queued");
  EXPECT_EQ(waiting_status.at("queue_position"), 1);
  const HttpReply refused = http_request(port(), "/v1/encode?model=48khz", "POST", input);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(error_of(refused).find("queue is full"), std::string::npos) << error_of(refused);
  ASSERT_TRUE(refused.headers.count("retry-after"));
  EXPECT_GE(std::stoi(refused.headers.at("retry-after")), 1);
  std::map<std::string, double> samples = metrics();
  EXPECT_EQ(samples.at("encodecd_transcode_queue_depth"), 1);
  EXPECT_EQ(samples.at("encodecd_transcode_running"), 1);
  EXPECT_EQ(samples.at("encodecd_transcode_jobs_total{code=\"503\",kind=\"encode\"}"), 1);

  // Cancelled, the queued job never runs and the running one stops.
  const std::string running_id = nlohmann::json::parse(running.body).at("job");
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + waiting_id, "DELETE").status, 200);
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + running_id, "DELETE").status, 200);
  EXPECT_EQ(http_request(port(), "/v1/jobs/" + running_id).status, 404);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (metrics()["encodecd_transcode_running"] != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  samples = metrics();
  EXPECT_EQ(samples["encodecd_transcode_running"], 0);
  EXPECT_EQ(samples["encodecd_transcode_queue_depth"], 0);
  // The stopped job counts as stopped (503), not as a result.
  EXPECT_EQ(samples["encodecd_transcode_jobs_total{code=\"200\",kind=\"encode\"}"], 0);
}

TEST_F(HttpTranscodeTest, AClientStallingMidUploadIsCutOff) {
  server::HttpOptions options = golden_options();
  options.request_timeout_ms = 300;
  start_http(options);
  // Declares 1000 bytes, sends 10: cut off at the deadline (0.3 s + 1 ms per kB), unanswered.
  const auto started = std::chrono::steady_clock::now();
  const std::string received = raw_exchange(
      port(), "POST /v1/encode HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789");
  const double waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(received.empty()) << received;
  EXPECT_LT(waited_s, 5.0);
  // Headers trickling in one byte at a time: cut off too.
  std::string trickle_received;
  std::thread trickler([&] { trickle_received = raw_exchange(port(), "POST /v1/encode HTTP/1.1\r\nHo", 1000); });
  // Meanwhile others are served.
  EXPECT_EQ(http_request(port(), "/healthz").status, 200);
  trickler.join();
  EXPECT_TRUE(trickle_received.empty()) << trickle_received;
}

TEST_F(HttpTranscodeTest, ATokenIsRequiredWhenConfigured) {
  server::HttpOptions options = golden_options();
  options.auth_token = "s3cret-token-of-the-test";
  start_http(options);
  const std::string tiny = read_file_bytes(golden_path("inputs/tiny_24k.wav"));
  const HttpReply none = http_request(port(), "/v1/encode", "POST", tiny);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers.at("www-authenticate"), "Bearer realm=\"encodecd\"");
  EXPECT_NE(error_of(none).find("Authorization: Bearer"), std::string::npos) << error_of(none);
  const HttpReply wrong = http_request(port(), "/v1/encode", "POST", tiny, {"Authorization: Bearer s3cret-token-of-the-tesT"});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(http_request(port(), "/metrics").status, 401);
  // /healthz stays open (load balancers probe it without secrets).
  EXPECT_EQ(http_request(port(), "/healthz").status, 200);
  const std::vector<std::string> right = {"Authorization: Bearer s3cret-token-of-the-test"};
  const HttpReply encoded = http_request(port(), "/v1/encode", "POST", tiny, right);
  EXPECT_EQ(encoded.status, 200) << encoded.body;
  const std::map<std::string, double> samples = parse_metrics(http_request(port(), "/metrics", "GET", "", right).body);
  EXPECT_EQ(samples.at("encodecd_http_unauthenticated_total"), 3);
  EXPECT_EQ(samples.at("encodecd_http_requests_total{code=\"401\"}"), 3);
}

TEST_F(HttpTranscodeTest, EachClientIsRateLimited) {
  server::HttpOptions options = golden_options();
  options.requests_per_second = 0.5;
  options.request_burst = 3;
  start_http(options);
  std::vector<long> statuses;
  for (int i = 0; i < 5; ++i) statuses.push_back(http_request(port(), "/healthz").status);
  EXPECT_EQ(statuses, (std::vector<long>{200, 200, 200, 429, 429}));
  const HttpReply limited = http_request(port(), "/healthz");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(limited.headers.at("retry-after"), "1");
}

// The compute thread's tick histogram against its tick counter, after a
// server-side encoding session made it tick.
TEST_F(HttpTranscodeTest, MetricsHaveTheComputeTickHistogram) {
  start_http(golden_options());
  RawPeer peer(server_->tcp_port(), /*tcp=*/true);
  ASSERT_NE(peer.hello(), 0u);
  wire::Envelope request;
  request.mutable_join()->set_role(wire::ROLE_ENCODE);
  request.mutable_join()->mutable_receive()->set_bandwidth_kbps(6.0);
  peer.send(request);
  ASSERT_TRUE(peer.receive_until([](const wire::Envelope& e) { return e.has_joined(); }, milliseconds(2000)));
  wire::Envelope media;
  media.mutable_media()->set_kind(wire::PAYLOAD_KIND_PCM16);
  media.mutable_media()->set_payload(std::string(2 * 960, '\0'));  // 3 frames of silence
  media.mutable_media()->set_end_of_stream(true);
  peer.send(media);
  int frames = 0;
  while (auto reply = peer.receive_until([](const wire::Envelope& e) { return e.has_media(); }, milliseconds(5000))) {
    frames += reply->media().payload().empty() ? 0 : 1;
    if (reply->media().end_of_stream()) break;
  }
  ASSERT_GT(frames, 0);
  const server::ServerStats stats = server_->stats();
  const std::map<std::string, double> samples = metrics();
  ASSERT_GT(stats.compute_ticks, 0u);
  EXPECT_EQ(samples.at("encodecd_compute_tick_seconds_count"), stats.compute_ticks);
  EXPECT_EQ(samples.at("encodecd_compute_tick_seconds_bucket{le=\"+Inf\"}"), stats.compute_ticks);
  EXPECT_GT(samples.at("encodecd_compute_tick_seconds_sum"), 0.0);
  double previous = 0.0;
  for (const double bound : server::kComputeTickBucketSeconds) {
    std::ostringstream name;
    name << "encodecd_compute_tick_seconds_bucket{le=\"" << bound << "\"}";
    ASSERT_TRUE(samples.count(name.str())) << name.str();
    EXPECT_GE(samples.at(name.str()), previous) << name.str();
    previous = samples.at(name.str());
  }
  EXPECT_EQ(samples.at("encodecd_compute_queue_depth"), 0);
}

}  // namespace
}  // namespace encodec::testing
