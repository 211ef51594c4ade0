// Command output over HTTP: whole-output reassembly and Server-Sent Events (stored, live,
// deduplicated, gaps marked), and event streams ending at shutdown.

#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

class HttpEventsTest : public HttpApiTest {};

TEST_F(HttpEventsTest, OutputIsReassembledWithOverlapsDroppedAndGapsMarked) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  putOutput(id, model::OutputStream::kStdout, 0, "hello ");
  putOutput(id, model::OutputStream::kStdout, 6, "world\n");
  putOutput(id, model::OutputStream::kStdout, 3, "lo world\nXX");  // resend, overlapping
  putOutput(id, model::OutputStream::kStdout, 100, "tail\n");      // the agent dropped 86 bytes
  putOutput(id, model::OutputStream::kStderr, 0, "oops \xff\n");   // not UTF-8

  Reply both = call("GET", "/api/v1/commands/" + id + "/output");
  ASSERT_EQ(both.status, 200) << both.body;
  EXPECT_EQ(str(both.json, "stdout"), "hello world\nXX\n[... 86 bytes truncated ...]\ntail\n");
  EXPECT_EQ(str(both.json, "stderr"), "oops \xEF\xBF\xBD\n");
  EXPECT_TRUE(both.json.as_object().at("truncated").as_bool());

  Reply err_only = call("GET", "/api/v1/commands/" + id + "/output?stream=stderr");
  ASSERT_EQ(err_only.status, 200);
  EXPECT_FALSE(err_only.json.as_object().contains("stdout"));
  EXPECT_EQ(call("GET", "/api/v1/commands/" + id + "/output?stream=video").status, 400);
}

TEST_F(HttpEventsTest, FollowOfFinishedCommandSendsStoredOutputThenEnd) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  putOutput(id, model::OutputStream::kStdout, 0, "line one\n");
  putOutput(id, model::OutputStream::kStdout, 9, "line two\n");
  ASSERT_EQ(call("POST", "/api/v1/commands/" + id + "/cancel").status, 200);

  Reply r = call("GET", "/api/v1/commands/" + id + "/output?follow=1");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.header_blob.find("text/event-stream"), std::string::npos);
  auto events = parseEvents(r.body);
  std::string stdout_text;
  for (const auto& [name, data] : events) {
    if (name == "output") stdout_text += str(data, "data");
  }
  EXPECT_EQ(stdout_text, "line one\nline two\n");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "end");
  EXPECT_EQ(str(events.back().second, "state"), "cancelled");
}

TEST_F(HttpEventsTest, FollowStreamsLiveChunksDedupedWithGapsMarked) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  putOutput(id, model::OutputStream::kStdout, 0, "stored\n");
  SseClient follower(base_ + "/api/v1/commands/" + id + "/output");
  ASSERT_TRUE(waitFor([&] { return follower.text().find("stored") != std::string::npos; }));

  auto publish = [&](model::OutputStream s, uint64_t offset, std::string data) {
    plane_->bus().publishChunk(model::OutputChunk{id, s, offset, std::move(data)});
  };
  publish(model::OutputStream::kStdout, 0, "stored\n");   // already sent: dropped
  publish(model::OutputStream::kStdout, 7, "live \xC3");  // a character split across chunks
  publish(model::OutputStream::kStdout, 13, "\xA9 one\n");
  publish(model::OutputStream::kStderr, 0, "warn\n");
  publish(model::OutputStream::kStdout, 40, "after gap\n");  // 21 bytes never arrive
  ASSERT_EQ(call("POST", "/api/v1/commands/" + id + "/cancel").status, 200);
  ASSERT_TRUE(waitFor([&] { return follower.finished(); }));

  auto events = parseEvents(follower.text());
  std::string out, err;
  for (const auto& [name, data] : events) {
    if (name != "output") continue;
    (str(data, "stream") == "stderr" ? err : out) += str(data, "data");
  }
  EXPECT_EQ(out, "stored\nlive \xC3\xA9 one\n\n[... 21 bytes truncated ...]\nafter gap\n");
  EXPECT_EQ(err, "warn\n");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "end");
  EXPECT_EQ(str(events.back().second, "state"), "cancelled");
}

TEST_F(HttpEventsTest, FollowFillsChunksStoredButNotPublishedToIt) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  SseClient follower(base_ + "/api/v1/commands/" + id + "/output?follow=1");
  ASSERT_TRUE(waitFor([&] { return follower.headersSeen(); }));
  // Stored without reaching the bus (as if published before the follower subscribed).
  putOutput(id, model::OutputStream::kStdout, 0, "early\n");
  plane_->bus().publishChunk(model::OutputChunk{id, model::OutputStream::kStdout, 6, "late\n"});
  ASSERT_EQ(call("POST", "/api/v1/commands/" + id + "/cancel").status, 200);
  ASSERT_TRUE(waitFor([&] { return follower.finished(); }));
  std::string out;
  for (const auto& [name, data] : parseEvents(follower.text())) {
    if (name == "output") out += str(data, "data");
  }
  EXPECT_EQ(out, "early\nlate\n");
}

TEST_F(HttpEventsTest, ShutdownEndsEventStreamsAndReturnsPromptly) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  SseClient follower(base_ + "/api/v1/commands/" + id + "/output?follow=1");
  ASSERT_TRUE(waitFor([&] { return follower.headersSeen(); }));
  auto start = std::chrono::steady_clock::now();
  server_->shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  ASSERT_TRUE(waitFor([&] { return follower.finished(); }));
  auto events = parseEvents(follower.text());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "error");
}

}  // namespace
}  // namespace muster::server::http
