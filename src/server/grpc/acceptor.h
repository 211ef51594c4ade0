// musterd's own accept loop for the agent port. gRPC 1.51's listener stops accepting for good
// after one EMFILE; ours never gives up: a connection that would take the process past its
// descriptor ceiling is closed at once (counted and logged), EMFILE itself is waited out,
// and accepted connections are handed to gRPC with AddInsecureChannelFromFd.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace muster::server::grpcadapter {

class Acceptor {
 public:
  struct Options {
    std::vector<std::string> listen;  // HOST:PORT each; port 0 picks one
    // Descriptors numbered at or above this are refused (Linux hands out the lowest free
    // number, so an accepted fd of N means N descriptors are in use). 0: no ceiling.
    int fd_ceiling = 0;
  };
  // `hand_off` takes ownership of an accepted, non-blocking socket. `on_refused` is called
  // (on the accept thread) for each connection closed at the ceiling.
  static absl::StatusOr<std::unique_ptr<Acceptor>> start(const Options& options,
                                                         std::function<void(int fd)> hand_off,
                                                         std::function<void()> on_refused);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Bound port of each listen address, in order.
  const std::vector<int>& ports() const { return ports_; }
  // Stops accepting and closes the listening sockets (established connections stay).
  void stop();

 private:
  Acceptor() = default;
  void run();

  std::vector<int> listen_fds_;
  std::vector<int> ports_;
  int wake_fd_ = -1;  // eventfd that ends run()
  int fd_ceiling_ = 0;
  std::function<void(int)> hand_off_;
  std::function<void()> on_refused_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace muster::server::grpcadapter
