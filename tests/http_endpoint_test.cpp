// encodecd's HTTP endpoint with real requests on 127.0.0.1 (libcurl, and raw
// sockets for what curl will not send): /healthz against the sessions opened,
// /metrics counters against the datagrams the test sent, the request counter
// by status against the requests made, JSON errors naming what was wrong,
// oversized and garbage requests, a client too slow to finish its request.
#include <chrono>
#include <map>
#include <regex>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "encodec/http_endpoint.h"
#include "encodec/server.h"
#include "golden.h"
#include "http_client.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

HttpReply request(uint16_t port, const std::string& path, const char* method = "GET",
                  const std::string& body = "") {
  return http_request(port, path, method, body);
}

class HttpEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, loopback_server_options());
    server_->start();
    server::HttpOptions options;
    options.listen = "127.0.0.1:0";
    options.request_timeout_ms = 300;
    options.max_request_bytes = 4096;
    http_ = std::make_unique<server::HttpEndpoint>(*server_, options);
    http_->start();
  }
  void TearDown() override {
    if (http_) http_->stop();
    if (server_) server_->stop("test over");
  }

  const LiveModel* live_ = nullptr;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<server::HttpEndpoint> http_;
};

TEST_F(HttpEndpointTest, HealthzCountsTheOpenSessions) {
  RawPeer first(server_->udp_port(), false), second(server_->udp_port(), false);
  ASSERT_NE(first.hello(), 0u);
  ASSERT_NE(second.hello(), 0u);
  const HttpReply reply = request(http_->port(), "/healthz");
  ASSERT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, "application/json");
  const nlohmann::json health = nlohmann::json::parse(reply.body);
  EXPECT_EQ(health.at("status"), "ok");
  EXPECT_EQ(health.at("sessions").get<uint64_t>(), server_->stats().sessions);
  EXPECT_EQ(health.at("sessions").get<uint64_t>(), 2u);
}

TEST_F(HttpEndpointTest, MetricsCountWhatTheTestSent) {
  constexpr int kMalformed = 7, kOversized = 3;
  RawPeer peer(server_->udp_port(), false);
  ASSERT_NE(peer.hello(), 0u);
  for (int i = 0; i < kMalformed; ++i) peer.send_bytes(std::string("\xff\xfe not a protobuf", 18));
  for (int i = 0; i < kOversized; ++i) peer.send_bytes(std::string(1500, 'x'));
  // The datagrams are counted once the server has read them.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((server_->stats().malformed < kMalformed || server_->stats().oversized < kOversized) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const HttpReply reply = request(http_->port(), "/metrics");
  ASSERT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, "text/plain; version=0.0.4");
  std::map<std::string, double> samples = parse_metrics(reply.body);
  EXPECT_EQ(samples["encodecd_malformed_total"], kMalformed);
  EXPECT_EQ(samples["encodecd_oversized_total"], kOversized);
  EXPECT_EQ(samples["encodecd_sessions_opened_total"], 1);
  EXPECT_EQ(samples["encodecd_sessions"], 1);
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(samples["encodecd_packets_in_total"], static_cast<double>(stats.packets_in));

  // A second scrape: the counters move by what happened in between.
  peer.send_bytes(std::string("\x01\x02", 2));
  while (server_->stats().malformed < kMalformed + 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  samples = parse_metrics(request(http_->port(), "/metrics").body);
  EXPECT_EQ(samples["encodecd_malformed_total"], kMalformed + 1);
  EXPECT_EQ(samples["encodecd_oversized_total"], kOversized);
}

// Receiver reports are cumulative: the lost/late/duplicate counters sum what
// each report adds, per member and stream.
TEST_F(HttpEndpointTest, MetricsSumWhatReceiversReported) {
  RawPeer first(server_->udp_port(), false), second(server_->udp_port(), false);
  ASSERT_NE(first.hello(), 0u);
  ASSERT_NE(second.hello(), 0u);
  const auto report = [](uint32_t stream, uint64_t lost, uint64_t late, uint64_t duplicates) {
    wire::Envelope envelope;
    envelope.mutable_report()->set_stream_id(stream);
    envelope.mutable_report()->set_lost(lost);
    envelope.mutable_report()->set_late(late);
    envelope.mutable_report()->set_duplicates(duplicates);
    return envelope;
  };
  first.send(report(1, 3, 0, 1));
  first.send(report(1, 10, 2, 1));  // +7 lost, +2 late
  first.send(report(2, 4, 0, 0));   // another stream
  second.send(report(1, 5, 1, 2));  // another member
  second.send(report(1, 1, 1, 2));  // went down (a restarted receiver): adds nothing
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server_->stats().reports < 5 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::map<std::string, double> samples = parse_metrics(request(http_->port(), "/metrics").body);
  EXPECT_EQ(samples.at("encodecd_reports_total"), 5);
  EXPECT_EQ(samples.at("encodecd_reported_lost_total"), 10 + 4 + 5);
  EXPECT_EQ(samples.at("encodecd_reported_late_total"), 2 + 1);
  EXPECT_EQ(samples.at("encodecd_reported_duplicates_total"), 1 + 2);
}

TEST_F(HttpEndpointTest, ErrorsAreJsonNamingWhatWasWrongAndCountedByStatus) {
  const HttpReply missing = request(http_->port(), "/v1/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.content_type, "application/json");
  EXPECT_NE(nlohmann::json::parse(missing.body).at("error").get<std::string>().find("/v1/nothing"),
            std::string::npos);
  const HttpReply wrong_method = request(http_->port(), "/metrics", "DELETE");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_NE(nlohmann::json::parse(wrong_method.body).at("error").get<std::string>().find("DELETE"),
            std::string::npos);
  const HttpReply too_large = request(http_->port(), "/metrics", "GET", std::string(8192, 'a'));
  EXPECT_EQ(too_large.status, 413);
  // Not HTTP at all: 400, then the connection ends.
  const std::string garbage = raw_exchange(http_->port(), std::string("\x16\x03\x01 hello?\r\n\r\n", 14));
  EXPECT_EQ(garbage.rfind("HTTP/1.1 400", 0), 0u) << garbage;

  std::map<std::string, double> samples = parse_metrics(request(http_->port(), "/metrics").body);
  EXPECT_EQ(samples["encodecd_http_requests_total{code=\"404\"}"], 1);
  EXPECT_EQ(samples["encodecd_http_requests_total{code=\"405\"}"], 1);
  EXPECT_EQ(samples["encodecd_http_requests_total{code=\"413\"}"], 1);
  EXPECT_EQ(samples["encodecd_http_requests_total{code=\"400\"}"], 1);
  // This scrape is counted once answered: the 200s before it are none.
  EXPECT_EQ(samples.count("encodecd_http_requests_total{code=\"200\"}"), 0u);
}

TEST_F(HttpEndpointTest, AClientTooSlowToSendItsRequestIsDisconnected) {
  // Half a request line, then nothing: the server closes the connection at its
  // request timeout (300 ms here) without an answer; recv gives up after 10 s.
  const auto started = std::chrono::steady_clock::now();
  const std::string received = raw_exchange(http_->port(), "GET /metr");
  const double waited_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(received.empty()) << received;
  EXPECT_LT(waited_s, 9.0) << "the connection was not closed";
  // The endpoint still serves.
  EXPECT_EQ(request(http_->port(), "/healthz").status, 200);
}

}  // namespace
}  // namespace encodec::testing
