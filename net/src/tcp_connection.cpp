#include "encodec/net/tcp_connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace encodec::net {

namespace asio = boost::asio;
using asio::ip::tcp;

std::shared_ptr<TcpConnection> TcpConnection::create(tcp::socket socket, Callbacks callbacks) {
  return std::shared_ptr<TcpConnection>(new TcpConnection(std::move(socket), std::move(callbacks)));
}

TcpConnection::TcpConnection(tcp::socket socket, Callbacks callbacks)
    : socket_(std::move(socket)), callbacks_(std::move(callbacks)), write_ring_(kWriteQueueMessages) {
  boost::system::error_code ignored;
  remote_ = socket_.remote_endpoint(ignored);
  socket_.set_option(tcp::no_delay(true), ignored);  // frames are small and latency-bound
  for (auto& slot : write_ring_) slot.reserve(256);
}

TcpConnection::~TcpConnection() = default;

void TcpConnection::start() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->do_read(); });
}

void TcpConnection::do_read() {
  socket_.async_read_some(asio::buffer(read_buffer_),
                          [self = shared_from_this()](const boost::system::error_code& error,
                                                      size_t bytes) { self->on_read(error, bytes); });
}

void TcpConnection::on_read(const boost::system::error_code& error, size_t bytes) {
  if (error) {
    finish(error == asio::error::eof ? "peer closed the connection" : error.message());
    return;
  }
  reader_.append(read_buffer_.data(), bytes);
  for (;;) {
    const TcpFrameReader::Result result = reader_.next(&envelope_);
    if (result == TcpFrameReader::kNeedMore) break;
    if (result == TcpFrameReader::kError) {
      // Tell the peer why, then close: a byte stream cannot be resynchronized.
      wire::Envelope error;
      const bool too_large = reader_.error().find("over the limit") != std::string::npos;
      error.mutable_error()->set_code(too_large ? wire::ERROR_TOO_LARGE : wire::ERROR_MALFORMED);
      error.mutable_error()->set_text(reader_.error());
      error.mutable_error()->set_fatal(true);
      close_reason_ = reader_.error();
      send(error);
      close_after_writes();
      return;
    }
    if (callbacks_.on_message) callbacks_.on_message(*this, envelope_);
    if (!open_.load()) return;
  }
  do_read();
}

bool TcpConnection::send(const wire::Envelope& envelope, const MessageSigner* signer) {
  if (!open_.load()) return false;
  bool start_writing = false;
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    if (write_count_ == write_ring_.size() || close_when_written_) {
      dropped_sends_.fetch_add(1);
      return false;
    }
    std::string& slot = write_ring_[(write_head_ + write_count_) % write_ring_.size()];
    slot.clear();
    // Signed under the lock, so that counters go out in the order they were given.
    if (!append_tcp_frame(envelope, &slot, signer)) {
      dropped_sends_.fetch_add(1);
      return false;
    }
    ++write_count_;
    if (!writing_) start_writing = writing_ = true;
  }
  if (start_writing) {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->do_write(); });
  }
  return true;
}

void TcpConnection::do_write() {
  const std::string* head = nullptr;
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    if (write_count_ == 0) {
      writing_ = false;
      if (close_when_written_) {
        boost::system::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
        asio::post(socket_.get_executor(), [self = shared_from_this()] {
          self->finish(self->close_reason_.empty() ? "closed" : self->close_reason_);
        });
      }
      return;
    }
    head = &write_ring_[write_head_];
  }
  asio::async_write(socket_, asio::buffer(*head),
                    [self = shared_from_this()](const boost::system::error_code& error,
                                                size_t bytes) { self->on_write(error, bytes); });
}

void TcpConnection::on_write(const boost::system::error_code& error, size_t /*bytes*/) {
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    write_head_ = (write_head_ + 1) % write_ring_.size();
    --write_count_;
  }
  if (error) {
    {
      std::lock_guard<std::mutex> lock(write_mutex_);
      writing_ = false;
    }
    finish(error.message());
    return;
  }
  do_write();
}

size_t TcpConnection::queued_messages() {
  std::lock_guard<std::mutex> lock(write_mutex_);
  return write_count_;
}

void TcpConnection::close_after_writes() {
  bool close_now = false;
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    close_when_written_ = true;
    close_now = !writing_;
  }
  if (close_now) close();
}

void TcpConnection::close() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    boost::system::error_code ignored;
    self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
    self->socket_.close(ignored);
    self->finish(self->close_reason_.empty() ? "closed" : self->close_reason_);
  });
}

void TcpConnection::finish(const std::string& reason) {
  open_.store(false);
  if (finished_.exchange(true)) return;
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (callbacks_.on_closed) callbacks_.on_closed(*this, reason);
  // The callbacks may hold their owner, which holds this connection: break the cycle.
  callbacks_ = {};
}

tcp::socket connect_tcp(asio::io_context& io, const std::string& host, uint16_t port,
                        int timeout_ms) {
  tcp::socket socket(asio::make_strand(io));
  boost::system::error_code error;
  const auto address = asio::ip::make_address(host, error);
  if (error) throw std::runtime_error("'" + host + "' is not an IP address: " + error.message());
  const tcp::endpoint endpoint(address, port);
  // A blocking connect with a deadline: non-blocking connect, then poll for writability.
  socket.open(endpoint.protocol());
  socket.non_blocking(true);
  socket.connect(endpoint, error);
  if (error == asio::error::would_block || error == asio::error::in_progress) {
    pollfd request{socket.native_handle(), POLLOUT, 0};
    const int ready = ::poll(&request, 1, timeout_ms);
    if (ready == 0) {
      error = asio::error::timed_out;
    } else if (ready < 0) {
      error = boost::system::error_code(errno, boost::system::system_category());
    } else {
      int so_error = 0;
      socklen_t length = sizeof so_error;
      ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_ERROR, &so_error, &length);
      if (so_error != 0) error = boost::system::error_code(so_error, boost::system::system_category());
    }
  }
  if (error) {
    throw std::runtime_error("cannot connect to " + host + ":" + std::to_string(port) + " over TCP: " +
                             error.message());
  }
  socket.non_blocking(false);
  return socket;
}

}  // namespace encodec::net
