// One TCP connection carrying length-prefixed Envelopes (wire.h), in the manner
// of Boost.Beast's sessions: its own strand, a read loop handing each message to
// a callback, and a bounded write queue that any thread may fill without
// blocking (a full queue drops the message and says so).
//
// Usage:
//   auto connection = TcpConnection::create(std::move(socket), callbacks);
//   connection->start();                       // reads until close or error
//   connection->send(envelope);                // any thread
//   connection->close();                       // any thread; on_closed runs once
//
// Thread safety: send() and close() from any thread; the callbacks run on the
// connection's strand, one at a time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

#include "encodec/net/wire.h"

namespace encodec::net {

class TcpConnection : public std::enable_shared_from_this<TcpConnection> {
 public:
  struct Callbacks {
    // A complete message; `envelope` is valid until the callback returns (it is
    // reused), as is current_message() (its bytes and authenticator).
    std::function<void(TcpConnection&, const wire::Envelope& envelope)> on_message;
    // The connection ended: peer closed, error, framing error (text says which) or close().
    std::function<void(TcpConnection&, const std::string& reason)> on_closed;
  };
  // Messages waiting to be written; beyond it send() drops (a slow reader must
  // not grow the server's memory).
  static constexpr size_t kWriteQueueMessages = 1024;

  static std::shared_ptr<TcpConnection> create(boost::asio::ip::tcp::socket socket,
                                               Callbacks callbacks);
  ~TcpConnection();

  void start();
  // Queues the message, signed by `signer` when there is one (auth.h); false
  // when the queue is full, the message is too large or the connection is closed.
  bool send(const wire::Envelope& envelope, const MessageSigner* signer = nullptr);
  // Writes what is queued (up to a short grace period), then closes.
  void close_after_writes();
  void close();
  bool is_open() const { return open_.load(); }
  const boost::asio::ip::tcp::endpoint& remote_endpoint() const { return remote_; }
  // In on_message: the message's bytes and authenticator trailer.
  const SignedMessage& current_message() const { return reader_.last_message(); }
  uint64_t dropped_sends() const { return dropped_sends_.load(); }
  // Messages queued and not yet written (a sender that must not drop waits on it).
  size_t queued_messages();

 private:
  TcpConnection(boost::asio::ip::tcp::socket socket, Callbacks callbacks);
  void do_read();
  void on_read(const boost::system::error_code& error, size_t bytes);
  void do_write();
  void on_write(const boost::system::error_code& error, size_t bytes);
  void finish(const std::string& reason);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::ip::tcp::endpoint remote_;
  Callbacks callbacks_;
  std::array<uint8_t, 16 * 1024> read_buffer_{};
  TcpFrameReader reader_;
  wire::Envelope envelope_;  // reused for every message read

  // The write queue: a ring of preallocated strings (capacity kept between uses).
  std::mutex write_mutex_;
  std::vector<std::string> write_ring_;
  size_t write_head_ = 0;   // next to write
  size_t write_count_ = 0;  // queued
  bool writing_ = false;
  bool close_when_written_ = false;

  std::string close_reason_;  // on the strand: why the connection is being closed
  std::atomic<bool> open_{true};
  std::atomic<bool> finished_{false};
  std::atomic<uint64_t> dropped_sends_{0};
};

// Connects (blocking, with a timeout) to host:port. Throws std::runtime_error
// naming the address when it fails.
boost::asio::ip::tcp::socket connect_tcp(boost::asio::io_context& io, const std::string& host,
                                         uint16_t port, int timeout_ms);

}  // namespace encodec::net
