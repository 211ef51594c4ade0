// Floods against every bound of the HTTP transport: event streams past the cap, followers
// that never read, connections past the cap, headers and bodies trickled byte by byte. Each
// outcome is read from /metrics (or the socket), never from a guessed sleep.
#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

std::string followRequest(const std::string& id) {
  return "GET /api/v1/commands/" + id +
         "/output?follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
         "\r\n\r\n";
}

class HttpBoundsTest : public HttpApiTest {
 protected:
  std::string newCommand() {
    enrollHost("web-1");
    return str(createCommand("web-1").at("commands").as_array()[0], "id");
  }
  void publish(const std::string& id, uint64_t offset, std::string data) {
    plane_->bus().publishChunk(
        model::OutputChunk{id, model::OutputStream::kStdout, offset, std::move(data)});
  }
};

TEST_F(HttpBoundsTest, FollowersPastTheCapGet503SayingTheLimit) {
  HttpOptions options;
  options.sse_max_followers = 2;
  restartWith(options);
  std::string id = newCommand();
  std::string url = base_ + "/api/v1/commands/" + id + "/output";
  auto first = std::make_unique<SseClient>(url);
  SseClient second(url);
  ASSERT_TRUE(waitFor([&] { return server_->followers() == 2; }));

  Reply refused = call("GET", "/api/v1/commands/" + id + "/output?follow=1");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(errorCode(refused), "unavailable");
  EXPECT_NE(errorMessage(refused).find("2 of 2"), std::string::npos) << refused.body;
  EXPECT_NE(errorMessage(refused).find("--http-max-followers"), std::string::npos);
  EXPECT_NE(refused.header_blob.find("Retry-After"), std::string::npos);
  EXPECT_EQ(metric("muster_sse_followers_refused_total"), 1);
  EXPECT_EQ(metric("muster_sse_followers"), 2);
  // Everything else is still answered.
  EXPECT_EQ(call("GET", "/api/v1/commands/" + id).status, 200);

  // A place freed is a place taken again.
  first.reset();
  ASSERT_TRUE(waitFor([&] { return server_->followers() == 1; }));
  SseClient third(url);
  ASSERT_TRUE(waitFor([&] { return third.headersSeen(); }));
  EXPECT_EQ(server_->followers(), 2);
  EXPECT_EQ(metric("muster_sse_followers_refused_total"), 1);
}

TEST_F(HttpBoundsTest, FollowerThatNeverReadsIsDroppedAndItsBufferStaysBounded) {
  constexpr uint64_t kCap = 256 << 10;
  HttpOptions options;
  options.sse_max_queued_bytes = kCap;
  restartWith(options);
  std::string id = newCommand();
  RawClient deaf(server_->port(), 4096);
  ASSERT_TRUE(deaf.send(followRequest(id)));
  ASSERT_TRUE(waitFor([&] { return server_->followers() == 1; }));

  // However much is published, what the server holds for this follower stays under the cap;
  // the kernel's socket buffers take a few MB first, so publish until it is dropped.
  const std::string chunk(64 << 10, 'x');
  uint64_t offset = 0;
  bool dropped = false;
  for (int i = 0; i < 8192 && !dropped; ++i) {
    publish(id, offset, chunk);
    offset += chunk.size();
    if (i % 64 == 63) dropped = metric("muster_sse_followers_dropped_total") >= 1;
  }
  ASSERT_TRUE(dropped) << "published " << offset << " bytes to a follower that reads nothing";
  EXPECT_LE(metric("muster_sse_buffer_peak_bytes"), kCap);
  // Cut off (its write was stuck), its place and its buffer given back.
  ASSERT_TRUE(waitFor([&] { return server_->followers() == 0; }));
  EXPECT_EQ(metric("muster_sse_buffered_bytes"), 0);
  EXPECT_EQ(metric("muster_sse_followers_dropped_total"), 1);
  bool closed = false;
  deaf.readAll(10s, &closed);
  EXPECT_TRUE(closed);
}

TEST_F(HttpBoundsTest, DroppedFollowerIsToldWhereToResumeAndResumesThere) {
  HttpOptions options;
  options.sse_max_queued_bytes = 64 << 10;
  restartWith(options);
  std::string id = newCommand();
  std::string url = base_ + "/api/v1/commands/" + id + "/output";
  putOutput(id, model::OutputStream::kStdout, 0, "hello\n");
  SseClient follower(url);
  ASSERT_TRUE(waitFor([&] { return follower.text().find("hello") != std::string::npos; }));

  // More than the follower may have queued at once: it falls behind at once.
  std::string big(100 << 10, 'y');
  putOutput(id, model::OutputStream::kStdout, 6, big);
  publish(id, 6, big);
  ASSERT_TRUE(waitFor([&] { return follower.finished(); }));
  auto events = parseEvents(follower.text());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "error");
  const auto& error = events.back().second.as_object();
  EXPECT_EQ(error.at("error").at("code").as_string(), "resource_exhausted");
  std::string message(error.at("error").at("message").as_string());
  EXPECT_NE(message.find("stdout_offset=6&stderr_offset=0"), std::string::npos) << message;
  EXPECT_NE(message.find("Last-Event-ID: 6,0"), std::string::npos) << message;
  EXPECT_EQ(error.at("resume").at("stdout_offset").as_int64(), 6);
  EXPECT_EQ(metric("muster_sse_followers_dropped_total"), 1);
  ASSERT_EQ(call("POST", "/api/v1/commands/" + id + "/cancel").status, 200);

  // Both ways of resuming get the rest exactly once, from offset 6.
  for (auto [query, headers] :
       {std::pair{std::string("?follow=1&stdout_offset=6&stderr_offset=0"),
                  std::vector<std::string>{}},
        std::pair{std::string("?follow=1"), std::vector<std::string>{"Last-Event-ID: 6,0"}}}) {
    SseClient resumed(url + query, headers);
    ASSERT_TRUE(waitFor([&] { return resumed.finished(); }));
    std::string text;
    uint64_t first_offset = UINT64_MAX;
    auto resumed_events = parseEvents(resumed.text());
    for (const auto& [name, data] : resumed_events) {
      if (name != "output") continue;
      first_offset = std::min<uint64_t>(first_offset, data.at("offset").as_int64());
      text += str(data, "data");
    }
    EXPECT_EQ(first_offset, 6u) << query;
    EXPECT_EQ(text, big) << query;
    ASSERT_FALSE(resumed_events.empty());
    EXPECT_EQ(resumed_events.back().first, "end");
  }
}

TEST_F(HttpBoundsTest, ConnectionsPastTheCapGet503AndAreClosed) {
  HttpOptions options;
  options.max_connections = 4;
  options.header_timeout_ms = 60'000;  // the held connections send nothing
  restartWith(options);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<RawClient>(server_->port()));
    ASSERT_TRUE(held.back()->connected());
  }
  ASSERT_TRUE(waitFor([&] { return server_->openConnections() == 4; }));

  for (int i = 0; i < 3; ++i) {
    RawClient extra(server_->port());
    extra.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    bool closed = false;
    std::string reply = extra.readAll(5s, &closed);
    EXPECT_EQ(reply.rfind("HTTP/1.1 503", 0), 0u) << reply;
    EXPECT_NE(reply.find("\"code\":\"unavailable\""), std::string::npos) << reply;
    EXPECT_NE(reply.find("4 of 4"), std::string::npos) << reply;
    EXPECT_NE(reply.find("--http-max-connections"), std::string::npos) << reply;
    EXPECT_TRUE(closed);
  }
  EXPECT_EQ(server_->openConnections(), 4);

  held.pop_back();
  ASSERT_TRUE(waitFor([&] { return server_->openConnections() == 3; }));
  EXPECT_EQ(metric("muster_http_connections_refused_total"), 3);
  // That scrape's connection is closed by curl, but the server may not have seen it yet.
  ASSERT_TRUE(waitFor([&] { return server_->openConnections() == 3; }));
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(HttpBoundsTest, HeadersTrickledByteByByteAreCutOffAtTheHeaderTimeout) {
  HttpOptions options;
  options.header_timeout_ms = 500;
  restartWith(options);
  RawClient slow(server_->port());
  ASSERT_TRUE(slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "));
  // One byte every 20 ms would keep a per-read timeout alive for the whole 30 s.
  auto start = std::chrono::steady_clock::now();
  bool cut_off = false;
  for (int i = 0; i < 1500 && !cut_off; ++i) {
    cut_off = !slow.send("a") || slow.peerClosed();
    if (!cut_off) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(cut_off);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_EQ(metric("muster_http_timeouts_total{phase=\"header\"}"), 1);
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(HttpBoundsTest, AConnectionThatSendsNothingIsClosedAtTheHeaderTimeout) {
  HttpOptions options;
  options.header_timeout_ms = 300;
  restartWith(options);
  RawClient silent(server_->port());
  bool closed = false;
  silent.readAll(10s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(metric("muster_http_timeouts_total{phase=\"header\"}"), 1);
}

TEST_F(HttpBoundsTest, BodyTrickledByteByByteIsCutOffAtTheBodyTimeout) {
  enrollHost("web-1");
  HttpOptions options;
  options.body_timeout_ms = 500;
  restartWith(options);
  RawClient slow(server_->port());
  ASSERT_TRUE(slow.send("POST /api/v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        std::string(kToken) +
                        "\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"));
  auto start = std::chrono::steady_clock::now();
  bool cut_off = false;
  for (int i = 0; i < 1500 && !cut_off; ++i) {
    cut_off = !slow.send(" ") || slow.peerClosed();
    if (!cut_off) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(cut_off);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_EQ(metric("muster_http_timeouts_total{phase=\"body\"}"), 1);
  EXPECT_EQ(commandCount(), 0u);
}

}  // namespace
}  // namespace muster::server::http
