// HTTP transport behaviour on raw sockets: garbage, slow and idle clients, pipelining,
// chunked bodies over the limit.
#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

class HttpTransportTest : public HttpApiTest {};

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
