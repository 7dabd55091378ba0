#include "encodec/http_endpoint.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <unordered_map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "encodec/server.h"
#include "encodec/server_config.h"
#include "transcode_service.h"

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
    {&ServerStats::reported_lost, "reported_lost", "Frames receivers reported lost (concealed)"},
    {&ServerStats::reported_late, "reported_late", "Frames receivers reported late (dropped)"},
    {&ServerStats::reported_duplicates, "reported_duplicates", "Duplicate frames receivers reported"},
    {&ServerStats::send_dropped, "send_dropped", "Messages dropped on a full socket or write queue"},
    {&ServerStats::transcoded_frames, "transcoded_frames", "Opus frames made for Opus members"},
    {&ServerStats::encoded_frames, "encoded_frames", "Code frames made for ROLE_ENCODE sessions"},
    {&ServerStats::compute_ticks, "compute_ticks", "Batched model ticks of the compute thread"},
    {&ServerStats::compute_dropped, "compute_dropped", "Work refused on a full compute queue"},
    {&ServerStats::compute_discarded, "compute_discarded", "Media the compute thread had no stream for"},
    {&ServerStats::reorder_duplicates, "reorder_duplicates", "Duplicate frames dropped before decoding"},
    {&ServerStats::reorder_late, "reorder_late", "Frames that came after their slot was concealed"},
    {&ServerStats::transcode_concealed, "transcode_concealed", "Code frames concealed for Opus members (lost)"},
    {&ServerStats::opus_in_frames, "opus_in_frames", "Opus senders' packets decoded"},
    {&ServerStats::opus_in_concealed, "opus_in_concealed", "Opus senders' packets concealed (lost)"},
    {&ServerStats::opus_in_malformed, "opus_in_malformed", "Opus senders' packets libopus refused"},
    {&ServerStats::opus_in_encoded_frames, "opus_in_encoded_frames", "Code frames made from Opus senders"},
};

// Per client address: a token bucket of requests.
class ClientRateLimits {
 public:
  ClientRateLimits(double per_second, double burst) : per_second_(per_second), burst_(burst) {}
  bool allow(const std::string& address) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    if (buckets_.size() > kMaxClients) forget_idle(now);
    Bucket& bucket = buckets_.try_emplace(address, Bucket{burst_, now}).first->second;
    bucket.tokens = std::min(burst_, bucket.tokens + per_second_ * seconds_between(bucket.last, now));
    bucket.last = now;
    if (bucket.tokens < 1.0) return false;
    bucket.tokens -= 1.0;
    return true;
  }

 private:
  static constexpr size_t kMaxClients = 4096;
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point last;
  };
  static double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
  }
  // Buckets full again are the same as no bucket.
  void forget_idle(std::chrono::steady_clock::time_point now) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      const bool refilled = it->second.tokens + per_second_ * seconds_between(it->second.last, now) >= burst_;
      it = refilled ? buckets_.erase(it) : std::next(it);
    }
  }
  double per_second_;
  double burst_;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

constexpr const char* kJobsPrefix = "/v1/jobs/";

// Constant-time comparison: a wrong token's timing says nothing about the right one.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    difference |= static_cast<unsigned char>(given[i] ^ expected[i % std::max<size_t>(1, expected.size())]);
  }
  return difference == 0;
}

}  // namespace

struct HttpEndpoint::Impl {
  Impl(Server& media_server, HttpOptions http_options)
      : server(media_server),
        options(std::move(http_options)),
        acceptor(io),
        rate_limits(options.requests_per_second, options.request_burst),
        models(options.models),
        transcoder(options, models) {
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
    const auto gauge = [&](const char* name, const char* help) {
      return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add({});
    };
    sessions_gauge = gauge("encodecd_sessions", "Sessions open");
    rooms_gauge = gauge("encodecd_rooms", "Rooms open");
    compute_queue_gauge = gauge("encodecd_compute_queue_depth", "Media work waiting for the compute thread");
    transcode_queue_gauge = gauge("encodecd_transcode_queue_depth", "Transcoding jobs waiting for a worker");
    transcode_running_gauge = gauge("encodecd_transcode_running", "Transcoding jobs running");
    for (const CounterField& field : kCounterFields) {
      auto& family = prometheus::BuildCounter()
                         .Name(std::string("encodecd_") + field.name + "_total")
                         .Help(field.help)
                         .Register(*registry);
      counters.push_back(&family.Add({}));
    }
    published.assign(counters.size(), 0);
    const std::vector<double> bounds(kComputeTickBucketSeconds.begin(), kComputeTickBucketSeconds.end());
    tick_histogram = &prometheus::BuildHistogram()
                          .Name("encodecd_compute_tick_seconds")
                          .Help("Compute time of each batched model tick of the compute thread")
                          .Register(*registry)
                          .Add({}, bounds);
    requests = &prometheus::BuildCounter()
                    .Name("encodecd_http_requests_total")
                    .Help("HTTP requests answered, by status code")
                    .Register(*registry);
    jobs_counter = &prometheus::BuildCounter()
                        .Name("encodecd_transcode_jobs_total")
                        .Help("Transcoding requests answered, by kind and status code")
                        .Register(*registry);
    auto& unauthenticated_family = prometheus::BuildCounter()
                                       .Name("encodecd_http_unauthenticated_total")
                                       .Help("HTTP requests refused for a missing or wrong token")
                                       .Register(*registry);
    http_unauthenticated = &unauthenticated_family.Add({});
    auto& rate_limited_family = prometheus::BuildCounter()
                                    .Name("encodecd_http_rate_limited_total")
                                    .Help("HTTP requests refused over a client's rate limit")
                                    .Register(*registry);
    http_rate_limited = &rate_limited_family.Add({});
  }

  Server& server;
  HttpOptions options;
  asio::io_context io;
  tcp::acceptor acceptor;
  uint16_t bound_port = 0;
  std::thread thread;
  std::atomic<int> connections{0};
  ClientRateLimits rate_limits;
  TranscodeModels models;
  TranscodeService transcoder;

  std::mutex metrics_mutex;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Gauge* sessions_gauge = nullptr;
  prometheus::Gauge* rooms_gauge = nullptr;
  prometheus::Gauge* compute_queue_gauge = nullptr;
  prometheus::Gauge* transcode_queue_gauge = nullptr;
  prometheus::Gauge* transcode_running_gauge = nullptr;
  std::vector<prometheus::Counter*> counters;  // as kCounterFields
  std::vector<uint64_t> published;             // what each counter holds
  prometheus::Histogram* tick_histogram = nullptr;
  std::array<uint64_t, kComputeTickBuckets + 1> published_ticks{};
  double published_tick_seconds = 0.0;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Counter>* jobs_counter = nullptr;
  prometheus::Counter* http_unauthenticated = nullptr;
  prometheus::Counter* http_rate_limited = nullptr;

  // The counters follow the server's (prometheus-cpp counters only go up by
  // increments: each scrape adds what the server counted since the last).
  std::string metrics_text() {
    const ServerStats stats = server.stats();
    std::lock_guard<std::mutex> lock(metrics_mutex);
    sessions_gauge->Set(static_cast<double>(stats.sessions));
    rooms_gauge->Set(static_cast<double>(stats.rooms));
    compute_queue_gauge->Set(static_cast<double>(stats.compute_queue_depth));
    transcode_queue_gauge->Set(static_cast<double>(transcoder.queue_depth()));
    transcode_running_gauge->Set(static_cast<double>(transcoder.running()));
    for (size_t i = 0; i < counters.size(); ++i) {
      const uint64_t value = stats.*(kCounterFields[i].field);
      if (value > published[i]) counters[i]->Increment(static_cast<double>(value - published[i]));
      published[i] = std::max(published[i], value);
    }
    std::vector<double> new_ticks(published_ticks.size());
    for (size_t i = 0; i < published_ticks.size(); ++i) {
      new_ticks[i] = static_cast<double>(stats.compute_tick_counts[i] - published_ticks[i]);
      published_ticks[i] = stats.compute_tick_counts[i];
    }
    tick_histogram->ObserveMultiple(new_ticks, stats.compute_tick_seconds - published_tick_seconds);
    published_tick_seconds = stats.compute_tick_seconds;
    return prometheus::TextSerializer().Serialize(registry->Collect());
  }

  void count_request(unsigned status) {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    requests->Add({{"code", std::to_string(status)}}).Increment();
  }
  void count_job(const char* kind, unsigned status) {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    jobs_counter->Add({{"kind", kind}, {"code", std::to_string(status)}}).Increment();
  }

  static std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }
  static std::string query_of(const std::string& target) {
    const size_t question = target.find('?');
    return question == std::string::npos ? "" : target.substr(question + 1);
  }
  static bool is_upload(const std::string& path) { return path == "/v1/encode" || path == "/v1/decode"; }

  // Checks that need only the header: the resource and method, the token, the
  // client's rate, an upload's declared size. Answered before any body is read.
  std::optional<HttpAnswer> check_header(const http::request_parser<http::string_body>::value_type& header,
                                         const std::string& client) {
    const std::string path = path_of(std::string(header.target()));
    const http::verb method = header.method();
    const auto not_allowed = [&](const char* allow) {
      HttpAnswer answer = HttpAnswer::json_error(
          405, std::string(header.method_string()) + " " + path + ": allowed here: " + allow);
      answer.headers.emplace_back("Allow", allow);
      return answer;
    };
    if (!rate_limits.allow(client)) {
      http_rate_limited->Increment();
      HttpAnswer answer = HttpAnswer::json_error(
          429, "too many requests from " + client + " (more than " +
                   std::to_string(options.requests_per_second) + " per second)");
      answer.headers.emplace_back("Retry-After", "1");
      return answer;
    }
    const bool is_job = path.rfind(kJobsPrefix, 0) == 0 && path.size() > std::strlen(kJobsPrefix);
    if (path == "/healthz" || path == "/metrics") {
      if (method != http::verb::get && method != http::verb::head) return not_allowed("GET, HEAD");
    } else if (is_upload(path)) {
      if (method != http::verb::post) return not_allowed("POST");
    } else if (is_job) {
      if (method != http::verb::get && method != http::verb::delete_) return not_allowed("GET, DELETE");
    } else {
      return HttpAnswer::json_error(404, "no such resource: '" + path +
                                             "' (GET /healthz, GET /metrics, POST /v1/encode, POST /v1/decode, "
                                             "GET or DELETE /v1/jobs/ID)");
    }
    if (path != "/healthz" && !options.auth_token.empty()) {
      const std::string given(header[http::field::authorization]);
      const std::string bearer = "Bearer ";
      if (given.rfind(bearer, 0) != 0 || !same_secret(given.substr(bearer.size()), options.auth_token)) {
        http_unauthenticated->Increment();
        HttpAnswer answer = HttpAnswer::json_error(
            401, given.empty() ? path + " needs a token: send \"Authorization: Bearer TOKEN\""
                               : "the token in the Authorization header is wrong");
        answer.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"encodecd\"");
        return answer;
      }
    }
    const size_t limit = is_upload(path) ? options.max_upload_bytes : options.max_request_bytes;
    if (header.has_content_length()) {
      const auto declared = header[http::field::content_length];
      const unsigned long long length = std::strtoull(std::string(declared).c_str(), nullptr, 10);
      if (length > limit) return too_large(limit);
    }
    return std::nullopt;
  }

  static HttpAnswer too_large(size_t limit) {
    return HttpAnswer::json_error(413, "request body over " + std::to_string(limit) + " bytes");
  }

  // A whole request: either its answer now, or (a synchronous transcoding
  // job) nullopt, the answer then coming through `later`.
  std::optional<HttpAnswer> answer(http::request<http::string_body>& request,
                                   std::function<void(const HttpAnswer&)> later) {
    const std::string target(request.target());
    const std::string path = path_of(target);
    if (path == "/healthz") {
      const ServerStats stats = server.stats();
      return HttpAnswer{200, "application/json",
                        nlohmann::json{{"status", "ok"}, {"sessions", stats.sessions}, {"rooms", stats.rooms}}.dump() + "\n",
                        {}};
    }
    if (path == "/metrics") return HttpAnswer{200, "text/plain; version=0.0.4", metrics_text(), {}};
    if (path.rfind(kJobsPrefix, 0) == 0) {
      const std::string id = path.substr(std::strlen(kJobsPrefix));
      return request.method() == http::verb::delete_ ? transcoder.cancel(id) : transcoder.job_status(id);
    }
    const bool encode = path == "/v1/encode";
    const char* kind = encode ? "encode" : "decode";
    auto body = std::make_shared<const std::string>(std::move(request.body()));
    HttpAnswer error;
    const std::shared_ptr<TranscodeJob> job = encode ? transcoder.check_encode(query_of(target), body, &error)
                                                     : transcoder.check_decode(query_of(target), body, &error);
    if (!job) {
      count_job(kind, error.status);
      return error;
    }
    const bool asynchronous = job->asynchronous;
    job->on_done = [this, kind, asynchronous, later = std::move(later)](const HttpAnswer& done) {
      count_job(kind, done.status);
      if (!asynchronous) later(done);
    };
    if (std::optional<HttpAnswer> refused = transcoder.submit(job)) {
      count_job(kind, refused->status);
      return refused;
    }
    if (!asynchronous) return std::nullopt;
    HttpAnswer accepted{202, "application/json",
                        nlohmann::json{{"job", job->id},
                                       {"status", "queued"},
                                       {"audio_seconds", job->audio_seconds},
                                       {"url", kJobsPrefix + job->id}}
                                .dump() +
                            "\n",
                        {}};
    accepted.headers.emplace_back("Location", kJobsPrefix + job->id);
    return accepted;
  }

  // Time to move `bytes` at 1 MB/s beyond the base timeout, against slow clients.
  std::chrono::milliseconds transfer_deadline(size_t bytes) const {
    return std::chrono::milliseconds(options.request_timeout_ms + static_cast<int64_t>(bytes / 1000));
  }

  // One connection: requests read with a deadline and a size limit, answered in order.
  struct Connection : std::enable_shared_from_this<Connection> {
    Connection(Impl& owner, tcp::socket socket) : impl(owner), stream(std::move(socket)) {
      boost::system::error_code ignored;
      client = stream.socket().remote_endpoint(ignored).address().to_string();
      ++impl.connections;
    }
    ~Connection() { --impl.connections; }
    Impl& impl;
    beast::tcp_stream stream;
    std::string client;
    beast::flat_buffer buffer;
    std::optional<http::request_parser<http::string_body>> parser;
    http::response<http::string_body> response;
    http::response<http::empty_body> continue_response;

    void read() {
      parser.emplace();
      parser->header_limit(static_cast<uint32_t>(impl.options.max_request_bytes));
      // The parser checks a declared length against this as the header ends,
      // before check_header can apply the path's limit: the larger one here.
      parser->body_limit(std::max(impl.options.max_request_bytes, impl.options.max_upload_bytes));
      stream.expires_after(std::chrono::milliseconds(impl.options.request_timeout_ms));
      http::async_read_header(stream, buffer, *parser, [self = shared_from_this()](beast::error_code error, size_t) {
        self->on_header(error);
      });
    }

    bool closing_error(beast::error_code error) {
      if (error == http::error::end_of_stream || error == beast::error::timeout ||
          error == asio::error::operation_aborted || error == asio::error::connection_reset) {
        close();
        return true;
      }
      return false;
    }

    void on_header(beast::error_code error) {
      if (closing_error(error)) return;
      if (error) {
        reply_to_bad_request(error);
        return;
      }
      if (std::optional<HttpAnswer> refused = impl.check_header(parser->get(), client)) {
        // The body (if any) is not read: the connection ends after the answer.
        send(*refused, /*keep_alive=*/false);
        return;
      }
      const std::string path = path_of(std::string(parser->get().target()));
      const size_t limit = is_upload(path) ? impl.options.max_upload_bytes : impl.options.max_request_bytes;
      parser->body_limit(limit);
      stream.expires_after(impl.transfer_deadline(parser->content_length().value_or(limit)));
      if (beast::iequals(parser->get()[http::field::expect], "100-continue")) {
        continue_response = {http::status::continue_, parser->get().version()};
        http::async_write(stream, continue_response, [self = shared_from_this()](beast::error_code error, size_t) {
          if (error) {
            self->close();
            return;
          }
          self->read_body();
        });
        return;
      }
      read_body();
    }

    void read_body() {
      http::async_read(stream, buffer, *parser,
                       [self = shared_from_this()](beast::error_code error, size_t) { self->on_read(error); });
    }

    void reply_to_bad_request(beast::error_code error) {
      // Too large or not HTTP: answered once, then the connection ends.
      const bool too_large = error == http::error::body_limit || error == http::error::header_limit;
      // (The request line is parsed before a body over the limit is noticed.)
      const size_t limit = error == http::error::body_limit &&
                                   is_upload(path_of(std::string(parser->get().target())))
                               ? impl.options.max_upload_bytes
                               : impl.options.max_request_bytes;
      send(too_large ? Impl::too_large(limit)
                     : HttpAnswer::json_error(400, "not an HTTP request: " + error.message()),
           /*keep_alive=*/false);
    }

    void on_read(beast::error_code error) {
      if (closing_error(error)) return;
      if (error) {
        reply_to_bad_request(error);
        return;
      }
      http::request<http::string_body>& request = parser->get();
      const bool keep_alive = request.keep_alive();
      const bool head = request.method() == http::verb::head;
      // Nothing to time out while the job runs (the deadline starts with the answer).
      stream.expires_never();
      auto self = shared_from_this();
      std::optional<HttpAnswer> now = impl.answer(request, [self, keep_alive, head](const HttpAnswer& done) {
        asio::post(self->stream.get_executor(), [self, done, keep_alive, head] { self->send(done, keep_alive, head); });
      });
      if (now) send(*now, keep_alive, head);
    }

    void send(const HttpAnswer& answer, bool keep_alive, bool head = false) {
      response = {};
      response.version(11);
      response.result(answer.status);
      response.set(http::field::server, "encodecd");
      response.set(http::field::content_type, answer.content_type);
      for (const auto& [field, value] : answer.headers) response.set(field, value);
      response.body() = head ? std::string() : answer.body;
      response.keep_alive(keep_alive);
      response.prepare_payload();
      if (head) response.content_length(answer.body.size());
      impl.count_request(answer.status);
      stream.expires_after(impl.transfer_deadline(response.body().size()));
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
      if (!error) {
        if (connections.load() >= options.max_connections) {
          // Over the limit: closed at once (a busy client retries; memory stays bounded).
          beast::error_code ignored;
          socket.close(ignored);
        } else {
          std::make_shared<Connection>(*this, std::move(socket))->read();
        }
      }
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
  impl_->transcoder.stop();
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
