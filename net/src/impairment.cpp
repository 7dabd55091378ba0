#include "encodec/net/impairment.h"

#include <algorithm>
#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace encodec::net {
namespace {

using boost::asio::ip::udp;

// From the generator's raw bits, not std::uniform_real_distribution, whose
// output differs between standard libraries: the same seed plans the same
// impairments everywhere.
double unit_interval(std::mt19937_64& random) {
  return static_cast<double>(random() >> 11) * 0x1.0p-53;
}

double at_least_zero(double value) { return std::max(0.0, value); }

constexpr size_t kRelayBufferBytes = 65536;

}  // namespace

Impairment::Impairment(ImpairmentOptions options) : options_(options), random_(options.seed) {}

int Impairment::plan(int64_t delays_us[2]) {
  // Every packet draws the same five numbers, so changing one probability
  // leaves the other decisions of a seed where they were.
  const double loss_draw = unit_interval(random_);
  const double duplicate_draw = unit_interval(random_);
  const double reorder_draw = unit_interval(random_);
  const double jitter_draws[2] = {unit_interval(random_), unit_interval(random_)};

  ++stats_.packets;
  if (loss_draw < options_.loss) {
    ++stats_.dropped;
    return 0;
  }
  const int copies = duplicate_draw < options_.duplicate ? 2 : 1;
  if (copies == 2) ++stats_.duplicated;
  const bool held_back = reorder_draw < options_.reorder;
  if (held_back) ++stats_.reordered;
  for (int copy = 0; copy < copies; ++copy) {
    double delay_ms =
        at_least_zero(options_.delay_ms) + at_least_zero(options_.jitter_ms) * jitter_draws[copy];
    if (held_back) delay_ms += at_least_zero(options_.reorder_ms);
    delays_us[copy] = std::llround(delay_ms * 1000.0);
  }
  return copies;
}

// Every handler runs under `mutex` (the io_context may run on several
// threads, and stop() comes from any thread), and holds the State alive.
struct UdpImpairmentRelay::State : std::enable_shared_from_this<State> {
  enum class Direction { kToServer, kToClient };
  struct Client {
    udp::endpoint endpoint;  // where the client sends from, and its answers go
    udp::socket upstream;    // connected to the server
    std::array<uint8_t, kRelayBufferBytes> buffer;
    explicit Client(boost::asio::io_context& io) : upstream(io) {}
  };

  State(boost::asio::io_context& io_context, udp::endpoint server_endpoint,
        ImpairmentOptions options)
      : io(io_context),
        server(server_endpoint),
        listener(io_context, udp::endpoint(boost::asio::ip::address_v4::loopback(), 0)),
        local(listener.local_endpoint()),
        upstream_impairment(options),
        downstream_impairment([&] {
          ImpairmentOptions downstream = options;
          downstream.seed = options.seed + 1;
          return downstream;
        }()) {}

  void receive_from_clients() {
    listener.async_receive_from(
        boost::asio::buffer(listener_buffer), client_sender,
        [self = shared_from_this()](const boost::system::error_code& error, size_t size) {
          std::lock_guard<std::mutex> lock(self->mutex);
          if (self->stopped) return;
          if (!error) self->forward_upstream(size);
          self->receive_from_clients();
        });
  }

  void receive_from_server(Client* client) {
    client->upstream.async_receive(
        boost::asio::buffer(client->buffer),
        [self = shared_from_this(), client](const boost::system::error_code& error, size_t size) {
          std::lock_guard<std::mutex> lock(self->mutex);
          if (self->stopped) return;
          // A refused send (the server not listening yet) surfaces here; keep listening.
          if (!error) self->forward_downstream(client, size);
          self->receive_from_server(client);
        });
  }

  void forward_upstream(size_t size) {
    Client* client = client_for(client_sender);
    if (client != nullptr) deliver(Direction::kToServer, listener_buffer.data(), size, client);
  }

  void forward_downstream(Client* client, size_t size) {
    deliver(Direction::kToClient, client->buffer.data(), size, client);
  }

  Client* client_for(const udp::endpoint& endpoint) {
    auto found = clients.find(endpoint);
    if (found != clients.end()) return found->second.get();
    auto client = std::make_unique<Client>(io);
    client->endpoint = endpoint;
    boost::system::error_code error;
    client->upstream.open(server.protocol(), error);
    if (!error) client->upstream.connect(server, error);
    if (error) return nullptr;  // out of sockets: the datagram is lost
    Client* created = client.get();
    clients.emplace(endpoint, std::move(client));
    receive_from_server(created);
    return created;
  }

  // Plans the copies of one datagram and sends each when its delay is up.
  void deliver(Direction direction, const uint8_t* bytes, size_t size, Client* client) {
    Impairment& impairment =
        direction == Direction::kToServer ? upstream_impairment : downstream_impairment;
    int64_t delays_us[2];
    const int copies = impairment.plan(delays_us);
    for (int copy = 0; copy < copies; ++copy) {
      auto datagram = std::make_shared<std::vector<uint8_t>>(bytes, bytes + size);
      if (delays_us[copy] == 0) {
        send(direction, client, datagram);
        continue;
      }
      auto timer = std::make_shared<boost::asio::steady_timer>(
          io, std::chrono::microseconds(delays_us[copy]));
      timers.insert(timer);
      timer->async_wait([self = shared_from_this(), timer, direction, client,
                         datagram](const boost::system::error_code& error) {
        std::lock_guard<std::mutex> lock(self->mutex);
        self->timers.erase(timer);
        if (!error && !self->stopped) self->send(direction, client, datagram);
      });
    }
  }

  void send(Direction direction, Client* client,
            const std::shared_ptr<std::vector<uint8_t>>& datagram) {
    // The handler owns the bytes until the send is done; a failed send is a lost datagram.
    auto done = [self = shared_from_this(), datagram](const boost::system::error_code&, size_t) {};
    if (direction == Direction::kToServer) {
      client->upstream.async_send(boost::asio::buffer(*datagram), std::move(done));
    } else {
      listener.async_send_to(boost::asio::buffer(*datagram), client->endpoint, std::move(done));
    }
  }

  void stop() {
    std::lock_guard<std::mutex> lock(mutex);
    if (stopped) return;
    stopped = true;
    boost::system::error_code ignored;
    listener.close(ignored);
    for (auto& [endpoint, client] : clients) client->upstream.close(ignored);
    for (const auto& timer : timers) timer->cancel();
    timers.clear();
  }

  boost::asio::io_context& io;
  const udp::endpoint server;
  std::mutex mutex;
  bool stopped = false;
  udp::socket listener;
  const udp::endpoint local;
  std::array<uint8_t, kRelayBufferBytes> listener_buffer;
  udp::endpoint client_sender;
  std::map<udp::endpoint, std::unique_ptr<Client>> clients;
  std::set<std::shared_ptr<boost::asio::steady_timer>> timers;  // to cancel on stop
  Impairment upstream_impairment;
  Impairment downstream_impairment;
};

UdpImpairmentRelay::UdpImpairmentRelay(boost::asio::io_context& io, udp::endpoint server,
                                       ImpairmentOptions options)
    : state_(std::make_shared<State>(io, server, options)) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->receive_from_clients();
}

UdpImpairmentRelay::~UdpImpairmentRelay() { stop(); }

udp::endpoint UdpImpairmentRelay::local_endpoint() const { return state_->local; }

ImpairmentStats UdpImpairmentRelay::upstream_stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->upstream_impairment.stats();
}

ImpairmentStats UdpImpairmentRelay::downstream_stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->downstream_impairment.stats();
}

void UdpImpairmentRelay::stop() { state_->stop(); }

}  // namespace encodec::net
