// A TCP proxy on 127.0.0.1 that forwards every connection it accepts to a port and keeps every
// byte it carried, each direction apart: what someone on the wire between two ends sees. It
// also counts the reads that returned data each way (paced messages arrive as separate
// segments, so a read is a segment).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace muster::itest {

class RecordingProxy {
 public:
  explicit RecordingProxy(int port) : port_(port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = loopback(0);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      throw std::runtime_error("RecordingProxy: cannot listen on 127.0.0.1");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    listen_port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { acceptLoop(); });
  }
  ~RecordingProxy() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(listen_fd_);
    std::vector<std::thread> pumps;
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
      pumps.swap(pumps_);
    }
    for (auto& t : pumps) t.join();
    for (int fd : fds_) ::close(fd);
  }
  int port() const { return listen_port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(listen_port_); }
  // Everything sent so far towards the proxied port / back from it, all connections.
  std::string toServer() const {
    std::lock_guard lock(mu_);
    return to_server_;
  }
  std::string toClient() const {
    std::lock_guard lock(mu_);
    return to_client_;
  }
  uint64_t readsToServer() const {
    std::lock_guard lock(mu_);
    return reads_to_server_;
  }
  uint64_t readsToClient() const {
    std::lock_guard lock(mu_);
    return reads_to_client_;
  }
  int connections() const {
    std::lock_guard lock(mu_);
    return static_cast<int>(fds_.size() / 2);
  }

 private:
  static sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    return addr;
  }
  void acceptLoop() {
    for (;;) {
      int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;  // shut down
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr = loopback(port_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      std::lock_guard lock(mu_);
      fds_.push_back(client);
      fds_.push_back(server);
      pumps_.emplace_back(
          [this, client, server] { pump(client, server, &to_server_, &reads_to_server_); });
      pumps_.emplace_back(
          [this, client, server] { pump(server, client, &to_client_, &reads_to_client_); });
    }
  }
  void pump(int from, int to, std::string* record, uint64_t* reads) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(from, buf, sizeof buf);
      if (n <= 0) break;
      {
        std::lock_guard lock(mu_);
        record->append(buf, static_cast<size_t>(n));
        ++*reads;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) return;
        off += w;
      }
    }
    ::shutdown(to, SHUT_WR);
  }

  const int port_;
  int listen_fd_ = -1;
  int listen_port_ = 0;
  std::thread accept_thread_;
  mutable std::mutex mu_;
  std::vector<int> fds_;                                // guarded by mu_; closed in the destructor
  std::vector<std::thread> pumps_;                      // guarded by mu_
  std::string to_server_, to_client_;                   // guarded by mu_
  uint64_t reads_to_server_ = 0, reads_to_client_ = 0;  // guarded by mu_
};

}  // namespace muster::itest
