// Where a session's messages go: a UDP address (sent from any thread with
// sendto, which is thread-safe, never blocking) or a TCP connection's bounded
// write queue. With authentication each message is signed for its session.
#pragma once

#include <sys/socket.h>

#include <memory>

#include <boost/asio/ip/udp.hpp>

#include "encodec/net/tcp_connection.h"
#include "encodec/net/wire.h"

namespace encodec::server {

class Peer {
 public:
  virtual ~Peer() = default;
  // Non-blocking: false when the message was dropped (full socket buffer or
  // write queue, too large, closed). Signed once sign_with was called.
  virtual bool send(const wire::Envelope& envelope) = 0;
  // With authentication, before the peer is shared: every message is signed for the session.
  void sign_with(std::shared_ptr<const net::MessageKey> key, uint64_t session_id) {
    signer_ = std::make_unique<net::MessageSigner>(std::move(key), net::Direction::kServerToClient);
    signer_->set_session(session_id);
  }

 protected:
  std::unique_ptr<net::MessageSigner> signer_;  // null: unsigned
};

class UdpPeer final : public Peer {
 public:
  UdpPeer(int socket_fd, boost::asio::ip::udp::endpoint endpoint)
      : socket_fd_(socket_fd), endpoint_(endpoint) {}
  bool send(const wire::Envelope& envelope) override {
    uint8_t datagram[net::kMaxDatagramBytes];
    const size_t size = net::serialize_datagram(envelope, datagram, sizeof datagram, signer_.get());
    if (size == 0) return false;
    return ::sendto(socket_fd_, datagram, size, MSG_DONTWAIT, endpoint_.data(), endpoint_.size()) ==
           static_cast<ssize_t>(size);
  }
  const boost::asio::ip::udp::endpoint& endpoint() const { return endpoint_; }

 private:
  int socket_fd_;
  boost::asio::ip::udp::endpoint endpoint_;
};

class TcpPeer final : public Peer {
 public:
  explicit TcpPeer(std::shared_ptr<net::TcpConnection> connection)
      : connection_(std::move(connection)) {}
  bool send(const wire::Envelope& envelope) override {
    return connection_->send(envelope, signer_.get());
  }
  net::TcpConnection& connection() { return *connection_; }

 private:
  std::shared_ptr<net::TcpConnection> connection_;
};

}  // namespace encodec::server
