#include "encodec/http_endpoint.h"

#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "encodec/server.h"
#include "encodec/server_config.h"

namespace encodec::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

// The media server's counters as Prometheus metrics: a ServerStats field, its
// metric's name (without the encodecd_ prefix and _total suffix) and help.
struct CounterField {
  uint64_t ServerStats::*field;
  const char* name;
  const char* help;
};

const CounterField kCounterFields[] = {
    {&ServerStats::sessions_opened, "sessions_opened", "Sessions opened (Hello accepted)"},
    {&ServerStats::sessions_timed_out, "sessions_timed_out", "Sessions ended by missing keep-alives"},
    {&ServerStats::packets_in, "packets_in", "Datagrams and TCP messages received"},
    {&ServerStats::packets_out, "packets_out", "Datagrams and TCP messages sent"},
    {&ServerStats::media_in, "media_in", "Media messages received"},
    {&ServerStats::media_out, "media_out", "Media messages sent"},
    {&ServerStats::malformed, "malformed", "Messages that are not a valid Envelope"},
    {&ServerStats::oversized, "oversized", "Datagrams over 1200 bytes, TCP lengths over the limit"},
    {&ServerStats::bad_protocol_version, "bad_protocol_version", "Hellos with another protocol version"},
    {&ServerStats::unknown_session, "unknown_session", "Messages for no session (dropped unanswered)"},
    {&ServerStats::unknown_room, "unknown_room", "Joins of rooms that do not exist"},
    {&ServerStats::rejected, "rejected", "Other refused requests"},
    {&ServerStats::rate_limited, "rate_limited", "Messages over a source's rate limit"},
    {&ServerStats::unauthenticated, "unauthenticated",
     "Messages without a valid authenticator, or whose key does not grant the room"},
    {&ServerStats::replayed, "replayed", "Authentic messages seen before (replay window, Hello nonce)"},
    {&ServerStats::invalid_media, "invalid_media", "Media with a bad payload, or outside a room"},
    {&ServerStats::format_mismatch, "format_mismatch", "Frames a member could not take"},
    {&ServerStats::raw_codes_requests, "raw_codes_requests", "LM senders asked for raw codes"},
    {&ServerStats::reports, "reports", "Receiver reports"},
    {&ServerStats::send_dropped, "send_dropped", "Messages dropped on a full socket or write queue"},
    {&ServerStats::transcoded_frames, "transcoded_frames", "Opus frames made for Opus members"},
    {&ServerStats::encoded_frames, "encoded_frames", "Code frames made for ROLE_ENCODE sessions"},
    {&ServerStats::compute_ticks, "compute_ticks", "Batched model ticks of the compute thread"},
    {&ServerStats::compute_dropped, "compute_dropped", "Work refused on a full compute queue"},
    {&ServerStats::reorder_duplicates, "reorder_duplicates", "Duplicate frames dropped before decoding"},
    {&ServerStats::reorder_late, "reorder_late", "Frames that came after their slot was concealed"},
    {&ServerStats::transcode_concealed, "transcode_concealed", "Code frames concealed for Opus members (lost)"},
    {&ServerStats::opus_in_frames, "opus_in_frames", "Opus senders' packets decoded"},
    {&ServerStats::opus_in_concealed, "opus_in_concealed", "Opus senders' packets concealed (lost)"},
    {&ServerStats::opus_in_malformed, "opus_in_malformed", "Opus senders' packets libopus refused"},
    {&ServerStats::opus_in_encoded_frames, "opus_in_encoded_frames", "Code frames made from Opus senders"},
};

}  // namespace

struct HttpEndpoint::Impl {
  Impl(Server& media_server, HttpOptions http_options)
      : server(media_server), options(std::move(http_options)), acceptor(io) {
    const Endpoint endpoint = parse_endpoint(options.listen, "--http");
    boost::system::error_code error;
    const tcp::endpoint bind_to(asio::ip::make_address(endpoint.address, error), endpoint.port);
    if (!error) acceptor.open(bind_to.protocol(), error);
    if (!error) acceptor.set_option(asio::socket_base::reuse_address(true), error);
    if (!error) acceptor.bind(bind_to, error);
    if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
    if (error) {
      throw std::runtime_error("cannot listen for HTTP on " + options.listen + ": " + error.message());
    }
    bound_port = acceptor.local_endpoint().port();
    auto& sessions = prometheus::BuildGauge().Name("encodecd_sessions").Help("Sessions open").Register(*registry);
    sessions_gauge = &sessions.Add({});
    auto& rooms = prometheus::BuildGauge().Name("encodecd_rooms").Help("Rooms open").Register(*registry);
    rooms_gauge = &rooms.Add({});
    for (const CounterField& field : kCounterFields) {
      auto& family = prometheus::BuildCounter()
                         .Name(std::string("encodecd_") + field.name + "_total")
                         .Help(field.help)
                         .Register(*registry);
      counters.push_back(&family.Add({}));
    }
    published.assign(counters.size(), 0);
    requests = &prometheus::BuildCounter()
                    .Name("encodecd_http_requests_total")
                    .Help("HTTP requests answered, by status code")
                    .Register(*registry);
  }

  Server& server;
  HttpOptions options;
  asio::io_context io;
  tcp::acceptor acceptor;
  uint16_t bound_port = 0;
  std::thread thread;

  std::mutex metrics_mutex;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Gauge* sessions_gauge = nullptr;
  prometheus::Gauge* rooms_gauge = nullptr;
  std::vector<prometheus::Counter*> counters;  // as kCounterFields
  std::vector<uint64_t> published;             // what each counter holds
  prometheus::Family<prometheus::Counter>* requests = nullptr;

  // The counters follow the server's (prometheus-cpp counters only go up by
  // increments: each scrape adds what the server counted since the last).
  std::string metrics_text() {
    const ServerStats stats = server.stats();
    std::lock_guard<std::mutex> lock(metrics_mutex);
    sessions_gauge->Set(static_cast<double>(stats.sessions));
    rooms_gauge->Set(static_cast<double>(stats.rooms));
    for (size_t i = 0; i < counters.size(); ++i) {
      const uint64_t value = stats.*(kCounterFields[i].field);
      if (value > published[i]) counters[i]->Increment(static_cast<double>(value - published[i]));
      published[i] = std::max(published[i], value);
    }
    return prometheus::TextSerializer().Serialize(registry->Collect());
  }

  void count_request(unsigned status) {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    requests->Add({{"code", std::to_string(status)}}).Increment();
  }

  http::response<http::string_body> answer(const http::request<http::string_body>& request) {
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(request.keep_alive());
    response.set(http::field::server, "encodecd");
    const std::string target(request.target());
    const std::string path = target.substr(0, target.find('?'));
    const auto json_error = [&](http::status status, const std::string& message) {
      response.result(status);
      response.set(http::field::content_type, "application/json");
      response.body() = nlohmann::json{{"error", message}}.dump() + "\n";
    };
    if (path != "/healthz" && path != "/metrics") {
      json_error(http::status::not_found, "no such resource: '" + path + "' (GET /healthz, GET /metrics)");
    } else if (request.method() != http::verb::get && request.method() != http::verb::head) {
      json_error(http::status::method_not_allowed,
                 std::string(request.method_string()) + " " + path + ": only GET is allowed here");
      response.set(http::field::allow, "GET, HEAD");
    } else if (path == "/healthz") {
      const ServerStats stats = server.stats();
      response.result(http::status::ok);
      response.set(http::field::content_type, "application/json");
      response.body() =
          nlohmann::json{{"status", "ok"}, {"sessions", stats.sessions}, {"rooms", stats.rooms}}.dump() + "\n";
    } else {
      response.result(http::status::ok);
      response.set(http::field::content_type, "text/plain; version=0.0.4");
      response.body() = metrics_text();
    }
    if (request.method() == http::verb::head) response.body().clear();
    response.prepare_payload();
    return response;
  }

  // One connection: requests read with a deadline and a size limit, answered in order.
  struct Connection : std::enable_shared_from_this<Connection> {
    Connection(Impl& owner, tcp::socket socket) : impl(owner), stream(std::move(socket)) {}
    Impl& impl;
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    std::optional<http::request_parser<http::string_body>> parser;
    http::response<http::string_body> response;

    void read() {
      parser.emplace();
      parser->header_limit(static_cast<uint32_t>(impl.options.max_request_bytes));
      parser->body_limit(impl.options.max_request_bytes);
      stream.expires_after(std::chrono::milliseconds(impl.options.request_timeout_ms));
      http::async_read(stream, buffer, *parser,
                       [self = shared_from_this()](beast::error_code error, size_t) { self->on_read(error); });
    }

    void on_read(beast::error_code error) {
      if (error == http::error::end_of_stream || error == beast::error::timeout ||
          error == asio::error::operation_aborted) {
        close();
        return;
      }
      if (error) {
        // Too large or not HTTP: answered once, then the connection ends.
        const bool too_large = error == http::error::body_limit || error == http::error::header_limit;
        response = {};
        response.version(11);
        response.result(too_large ? http::status::payload_too_large : http::status::bad_request);
        response.set(http::field::content_type, "application/json");
        response.body() = nlohmann::json{{"error", too_large ? "request over " +
                                                                   std::to_string(impl.options.max_request_bytes) +
                                                                   " bytes"
                                                             : "not an HTTP request: " + error.message()}}
                              .dump() +
                          "\n";
        response.keep_alive(false);
        response.prepare_payload();
        write();
        return;
      }
      response = impl.answer(parser->get());
      write();
    }

    void write() {
      impl.count_request(response.result_int());
      stream.expires_after(std::chrono::milliseconds(impl.options.request_timeout_ms));
      http::async_write(stream, response, [self = shared_from_this()](beast::error_code error, size_t) {
        if (error || !self->response.keep_alive()) {
          self->close();
        } else {
          self->read();
        }
      });
    }

    void close() {
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream.close();
    }
  };

  void accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code error, tcp::socket socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) std::make_shared<Connection>(*this, std::move(socket))->read();
      if (acceptor.is_open()) accept();
    });
  }
};

HttpEndpoint::HttpEndpoint(Server& server, HttpOptions options)
    : impl_(std::make_unique<Impl>(server, std::move(options))) {}

HttpEndpoint::~HttpEndpoint() { stop(); }

void HttpEndpoint::start() {
  if (impl_->thread.joinable()) return;
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

void HttpEndpoint::stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->io.stop();
  impl_->thread.join();
}

uint16_t HttpEndpoint::port() const { return impl_->bound_port; }

}  // namespace encodec::server
