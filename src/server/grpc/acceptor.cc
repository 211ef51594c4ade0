#include "server/grpc/acceptor.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace muster::server::grpcadapter {
namespace {

// Splits HOST:PORT ([v6]:PORT too).
bool splitHostPort(const std::string& listen, std::string* host, std::string* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 >= listen.size()) return false;
  *host = listen.substr(0, colon);
  *port = listen.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

// Listens on every address `listen` resolves to (localhost: 127.0.0.1 and ::1), all on the
// same port; port 0 takes the port the first one got.
absl::StatusOr<std::vector<int>> listenOn(const std::string& listen, int* bound_port) {
  std::string host, port;
  if (!splitHostPort(listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc-listen ", listen, ": expected HOST:PORT, e.g. 127.0.0.1:7443"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc-listen ", listen, ": cannot resolve: ", gai_strerror(rc)));
  }
  std::string last_error = "no address";
  std::vector<int> fds;
  int chosen_port = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    sockaddr_storage addr{};
    std::memcpy(&addr, a->ai_addr, a->ai_addrlen);
    auto* port_field = a->ai_family == AF_INET6 ? &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                : &reinterpret_cast<sockaddr_in*>(&addr)->sin_port;
    if (chosen_port != 0) *port_field = htons(static_cast<uint16_t>(chosen_port));
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), a->ai_addrlen) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      continue;
    }
    if (chosen_port == 0) {
      sockaddr_storage bound{};
      socklen_t len = sizeof bound;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      chosen_port = bound.ss_family == AF_INET6
                        ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                        : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    }
    fds.push_back(fd);
  }
  freeaddrinfo(found);
  if (fds.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen for agents on ", listen, ": ",
                                               last_error, " (change --grpc-listen)"));
  }
  *bound_port = chosen_port;
  return fds;
}

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Acceptor>> Acceptor::start(const Options& options,
                                                          std::function<void(int fd)> hand_off,
                                                          std::function<void()> on_refused) {
  std::unique_ptr<Acceptor> a(new Acceptor());
  a->fd_ceiling_ = options.fd_ceiling;
  a->hand_off_ = std::move(hand_off);
  a->on_refused_ = std::move(on_refused);
  if (options.listen.empty()) {
    return absl::InvalidArgumentError("no --grpc-listen address: agents could not connect");
  }
  for (const auto& listen : options.listen) {
    int port = 0;
    auto fds = listenOn(listen, &port);
    if (!fds.ok()) return fds.status();  // the destructor closes what was opened
    a->listen_fds_.insert(a->listen_fds_.end(), fds->begin(), fds->end());
    a->ports_.push_back(port);
  }
  a->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (a->wake_fd_ < 0) {
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  Acceptor* raw = a.get();
  a->thread_ = std::thread([raw] { raw->run(); });
  pthread_setname_np(a->thread_.native_handle(), "agent-accept");
  return a;
}

Acceptor::~Acceptor() { stop(); }

void Acceptor::stop() {
  if (!stopping_.exchange(true) && thread_.joinable()) {
    uint64_t one = 1;
    (void)::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int fd : listen_fds_) ::close(fd);
  listen_fds_.clear();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

void Acceptor::run() {
  std::vector<pollfd> fds;
  for (int fd : listen_fds_) fds.push_back({fd, POLLIN, 0});
  fds.push_back({wake_fd_, POLLIN, 0});
  int64_t last_log_ms = 0;
  uint64_t refused_since_log = 0;
  // `counted`: a connection was closed (the metric counts those, not waits for descriptors).
  auto refuse = [&](const char* why, bool counted) {
    if (counted) {
      ++refused_since_log;
      if (on_refused_) on_refused_();
    }
    int64_t now = steadyMs();
    if (now - last_log_ms >= 10'000) {
      spdlog::warn(
          "agent port: {}; refused {} connection(s) in the last 10 s and keeps serving the "
          "connected agents; raise the descriptor limit (LimitNOFILE) or add a replica",
          why, refused_since_log);
      last_log_ms = now;
      refused_since_log = 0;
    }
  };
  while (!stopping_.load()) {
    int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("agent port: poll failed: {}", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (fds.back().revents != 0) break;  // woken by stop()
    for (size_t i = 0; i + 1 < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if ((fds[i].revents & (POLLERR | POLLNVAL)) != 0 && (fds[i].revents & POLLIN) == 0) {
        refuse("a listening socket reported an error", false);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      // Drain the backlog of this listener (bounded, so one listener cannot starve others).
      for (int k = 0; k < 256; ++k) {
        int fd = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            // Out of descriptors or memory: leave the rest in the kernel's queue, wait for
            // descriptors to free up, never stop listening.
            refuse(std::strerror(errno), false);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            break;
          }
          // Unexpected: say so at most every 10 s and back off, never spin.
          refuse(std::strerror(errno), false);
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          break;
        }
        if (fd_ceiling_ > 0 && fd >= fd_ceiling_) {
          ::close(fd);
          refuse("at the descriptor ceiling", true);
          continue;
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        hand_off_(fd);
      }
    }
  }
}

}  // namespace muster::server::grpcadapter
