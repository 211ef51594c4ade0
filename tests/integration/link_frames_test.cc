// What a command costs on the wire: between a real musterd and the agent's link client, a
// counting TCP proxy sees one segment per message and no more. gRPC 1.51 on its own follows
// every message read from a stream with a WINDOW_UPDATE in a segment of its own (2 of the 5
// segments of a command round trip); scripts/patches/grpc-1.51.1-stream-window-update.patch
// removes them, and this test fails without it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "agent/link_client.h"
#include "muster/v1/agent.pb.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

// Forwards one TCP connection to `port`, counting the reads that returned data each way
// (paced messages arrive as separate segments, so a read is a segment).
class CountingProxy {
 public:
  explicit CountingProxy(int port) : port_(port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    listen_port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { acceptOne(); });
  }
  ~CountingProxy() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    if (client_fd_ >= 0) ::shutdown(client_fd_, SHUT_RDWR);
    if (server_fd_ >= 0) ::shutdown(server_fd_, SHUT_RDWR);
    accept_thread_.join();
    for (auto& t : pumps_) t.join();
    if (client_fd_ >= 0) ::close(client_fd_);
    if (server_fd_ >= 0) ::close(server_fd_);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(listen_port_); }
  uint64_t toServer() const { return to_server_; }
  uint64_t toClient() const { return to_client_; }

 private:
  void acceptOne() {
    int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    client_fd_ = client;
    server_fd_ = server;
    pumps_.emplace_back([this] { pump(client_fd_, server_fd_, &to_server_); });
    pumps_.emplace_back([this] { pump(server_fd_, client_fd_, &to_client_); });
  }
  static void pump(int from, int to, std::atomic<uint64_t>* reads) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(from, buf, sizeof buf);
      if (n <= 0) break;
      ++*reads;
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
  std::atomic<int> client_fd_{-1};
  std::atomic<int> server_fd_{-1};
  std::thread accept_thread_;
  std::vector<std::thread> pumps_;
  std::atomic<uint64_t> to_server_{0};
  std::atomic<uint64_t> to_client_{0};
};

// Messages from the server, waited for one at a time.
class Inbox {
 public:
  void push(const muster::v1::ServerMessage& m) {
    std::lock_guard lock(mu_);
    messages_.push_back(m);
    cv_.notify_all();
  }
  bool next(muster::v1::ServerMessage* out) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !messages_.empty(); })) {
      return false;
    }
    *out = messages_.front();
    messages_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<muster::v1::ServerMessage> messages_;
};

TEST(LinkFramesTest, ACommandRoundTripIsOneSegmentPerMessage) {
  TempDir dir;
  Musterd server(dir);
  const std::string target = server.grpcTarget();
  const int port = std::stoi(target.substr(target.rfind(':') + 1));

  agent::ChannelOptions direct;
  direct.target = target;
  direct.own_connection = true;
  direct.security.ca_pem = server.caPem();  // TLS, as agents run
  muster::v1::EnrollRequest request;
  request.set_token(server.enrollToken());
  request.set_agent_id("probe");
  auto enrolled = agent::enroll(agent::makeChannel(direct), request, 10'000);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();

  CountingProxy proxy(port);
  agent::ChannelOptions proxied;
  proxied.target = proxy.target();
  proxied.own_connection = true;
  proxied.security.ca_pem = server.caPem();
  auto channel = agent::makeChannel(proxied);
  auto inbox = std::make_shared<Inbox>();
  agent::LinkStream::Handlers handlers;
  handlers.on_message = [inbox](const muster::v1::ServerMessage& m) { inbox->push(m); };
  handlers.on_closed = [](const absl::Status&) {};
  auto stream = agent::openStream(channel, "probe", enrolled->credential(), handlers);
  muster::v1::AgentMessage hello;
  hello.mutable_hello()->set_agent_id("probe");
  hello.mutable_hello()->set_version("probe");
  stream->send(hello);
  muster::v1::ServerMessage m;
  ASSERT_TRUE(inbox->next(&m));
  ASSERT_TRUE(m.has_welcome());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // settings and their acks

  constexpr int kCommands = 10;
  const uint64_t to_server_before = proxy.toServer();
  const uint64_t to_client_before = proxy.toClient();
  for (int i = 0; i < kCommands; ++i) {
    server.run({"probe"}, "true");
    ASSERT_TRUE(inbox->next(&m));
    ASSERT_TRUE(m.has_command()) << m.DebugString();
    muster::v1::AgentMessage result;
    result.mutable_result()->set_command_id(m.command().command_id());
    result.mutable_result()->set_outcome(muster::v1::COMMAND_OUTCOME_SUCCEEDED);
    result.mutable_result()->set_has_exit_code(true);
    stream->send(result);
    ASSERT_TRUE(inbox->next(&m));
    ASSERT_TRUE(m.has_result_ack()) << m.DebugString();
    // Apart in time, so that nothing of one round trip shares a segment with the next.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const uint64_t to_server = proxy.toServer() - to_server_before;
  const uint64_t to_client = proxy.toClient() - to_client_before;
  // Per command: the result one way, the command and its ack the other (window updates ride
  // along). Unpatched gRPC: at least 2 and 3.
  EXPECT_LE(to_server, kCommands + 2)
      << "segments agent -> server for " << kCommands << " commands";
  EXPECT_LE(to_client, 2 * kCommands + 2)
      << "segments server -> agent for " << kCommands << " commands";
  stream->close();
}

}  // namespace
}  // namespace muster::itest
