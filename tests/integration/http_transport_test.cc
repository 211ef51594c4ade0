// HTTP transport behaviour on raw sockets: garbage, slow and idle clients, pipelining,
// chunked bodies over the limit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

// A plain TCP client with a receive timeout.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
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

 private:
  int fd_ = -1;
  bool connected_ = false;
};

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

class HttpTransportTest : public HttpApiTest {
 protected:
  void restartWith(HttpOptions options) {
    server_->shutdown();
    server_.reset();
    startServer(std::move(options));
  }
};

TEST_F(HttpTransportTest, GarbageGets400AndTheServerKeepsServing) {
  RawClient client(server_->port());
  ASSERT_TRUE(client.connected());
  client.send("\x16\x03\x01\x02\x00 this is not HTTP\r\n\r\n");
  bool closed = false;
  std::string reply = client.readAll(5s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
  EXPECT_TRUE(closed);
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(HttpTransportTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient client(server_->port());
  client.send(
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n"
      "Connection: close\r\n\r\n");
  bool closed = false;
  std::string reply = client.readAll(5s, &closed);
  EXPECT_TRUE(closed);
  size_t ok = reply.find("HTTP/1.1 200");
  size_t missing = reply.find("HTTP/1.1 404");
  ASSERT_NE(ok, std::string::npos) << reply;
  ASSERT_NE(missing, std::string::npos) << reply;
  EXPECT_LT(ok, missing);
}

TEST_F(HttpTransportTest, SlowHeadersAndIdleConnectionsAreClosed) {
  HttpOptions options;
  options.header_timeout_ms = 300;
  options.idle_timeout_ms = 300;
  restartWith(options);

  RawClient slow(server_->port());
  slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finishes its headers
  bool closed = false;
  auto start = std::chrono::steady_clock::now();
  slow.readAll(5s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);

  RawClient idle(server_->port());
  idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string reply = idle.readAll(5s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(countOf(reply, "HTTP/1.1 200"), 1u) << reply;
}

TEST_F(HttpTransportTest, ChunkedBodyOverTheLimitIs413) {
  enrollHost("web-1");
  RawClient client(server_->port());
  std::string chunk(64 * 1024, 'x');
  std::string request = "POST /api/v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        std::string(kToken) +
                        "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  char size_line[32];
  std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
  for (int i = 0; i < 40; ++i) request += size_line + chunk + "\r\n";
  request += "0\r\n\r\n";
  client.send(request);
  bool closed = false;
  std::string reply = client.readAll(5s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply.substr(0, 200);
  EXPECT_EQ(commandCount(), 0u);
}

TEST_F(HttpTransportTest, HeadAnswersHeadersOnly) {
  RawClient client(server_->port());
  client.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  bool closed = false;
  std::string reply = client.readAll(5s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  EXPECT_EQ(reply.find("\"status\""), std::string::npos) << reply;
}

}  // namespace
}  // namespace muster::server::http
