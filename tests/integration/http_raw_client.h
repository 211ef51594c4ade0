// A raw TCP client for the HTTP tests: bytes exactly as written (slowloris trickles,
// garbage, pipelining), a small receive buffer for clients that stop reading.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>

namespace muster::server::http {

// A plain TCP client with a receive timeout.
class RawClient {
 public:
  // `receive_buffer` > 0 shrinks SO_RCVBUF before connecting: a client that stops reading
  // then stops the server's writes sooner.
  explicit RawClient(int port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool connected() const { return connected_; }
  // False when the peer is gone.
  bool send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until the peer closes or `timeout` passes; `closed` tells which.
  std::string readAll(std::chrono::milliseconds timeout, bool* closed) {
    timeval tv{0, 50 * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    *closed = false;
    char buf[65536];
    while (std::chrono::steady_clock::now() < deadline) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        *closed = true;
        break;
      }
      if (n > 0) out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Reads until `needle` arrived (true) or `timeout` passed; the bytes go to `out`.
  bool readUntil(const std::string& needle, std::chrono::milliseconds timeout, std::string* out) {
    timeval tv{0, 50 * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (out->find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return false;
      if (n > 0) out->append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // True when the peer has closed (or reset) the connection; never blocks.
  bool peerClosed() {
    char byte;
    ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

}  // namespace muster::server::http
