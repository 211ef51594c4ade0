// The REST API against a real HttpServer on 127.0.0.1:0, with an in-process ControlPlane
// over a real SqliteStore in a temporary directory, driven by a small libcurl client.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "server/http/http_server.h"
#include "store/sqlite/sqlite_store.h"

namespace muster::server::http {
namespace {
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr char kToken[] = "test-operator-token";

struct Reply {
  long status = 0;
  std::string body;
  json::value json;  // null when the body is not JSON
  std::string header_blob;
};

size_t collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// Polls `condition` every 10 ms until it holds or `timeout` passes.
bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// Server-Sent Events as received by a client: (event, data JSON) pairs.
std::vector<std::pair<std::string, json::value>> parseEvents(const std::string& text) {
  std::vector<std::pair<std::string, json::value>> out;
  size_t pos = 0;
  while (true) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string block = text.substr(pos, end - pos);
    pos = end + 2;
    std::string event = "message", data;
    size_t line_start = 0;
    while (line_start <= block.size()) {
      size_t nl = block.find('\n', line_start);
      std::string line = block.substr(line_start, nl == std::string::npos ? std::string::npos
                                                                          : nl - line_start);
      if (line.rfind("event: ", 0) == 0) event = line.substr(7);
      if (line.rfind("data: ", 0) == 0) data += line.substr(6);
      if (nl == std::string::npos) break;
      line_start = nl + 1;
    }
    if (data.empty()) continue;  // a keep-alive comment
    out.emplace_back(event, json::parse(data));
  }
  return out;
}

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/muster-http-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::SqliteStore::open(dir_ + "/muster.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    slow_path_ = std::make_unique<common::WorkerPool>(1, "test-slow");
    blocking_ = std::make_unique<common::WorkerPool>(2, "test-blocking");
    plane_ = std::make_unique<ControlPlane>(*store_, *slow_path_, common::SystemClock::instance(),
                                            CoreConfig{});
    ASSERT_TRUE(plane_->start().ok());
    startServer(HttpOptions{});
  }

  void startServer(HttpOptions options) {
    options.listen = "127.0.0.1:0";
    options.authenticate = [](std::string_view bearer) -> absl::StatusOr<std::string> {
      if (bearer == kToken) return std::string("tester");
      return absl::UnauthenticatedError("unknown API token");
    };
    auto server = HttpServer::start(*plane_, *blocking_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->port());
  }

  void TearDown() override {
    if (server_) server_->shutdown();
    server_.reset();
    if (blocking_) blocking_->shutdown();
    if (slow_path_) slow_path_->shutdown();
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  Reply call(const std::string& method, const std::string& path, const std::string& body = "",
             std::vector<std::string> headers = {}, bool with_token = true) {
    CURL* curl = curl_easy_init();
    Reply reply;
    std::string url = base_ + path;
    curl_slist* list = nullptr;
    if (with_token) headers.push_back(std::string("Authorization: Bearer ") + kToken);
    if (!body.empty()) headers.push_back("Content-Type: application/json");
    headers.push_back("Expect:");  // no 100-continue round trip
    for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.header_blob);
    if (!body.empty() || method == "POST") {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    CURLcode rc = curl_easy_perform(curl);
    EXPECT_EQ(rc, CURLE_OK) << method << " " << path << ": " << curl_easy_strerror(rc);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    boost::system::error_code ec;
    json::value parsed = json::parse(reply.body, ec);
    if (!ec) reply.json = std::move(parsed);
    return reply;
  }

  static std::string errorCode(const Reply& r) {
    if (!r.json.is_object()) return "<not json: " + r.body + ">";
    const auto* error = r.json.as_object().if_contains("error");
    if (!error || !error->is_object()) return "<no error object>";
    return std::string(error->as_object().at("code").as_string());
  }

  void enrollHost(const std::string& id) {
    auto token = plane_->enrollment().createToken(1, 0, {}, "test");
    ASSERT_TRUE(token.ok()) << token.status();
    auto credential = plane_->enrollment().enroll(EnrollRequest{token->secret, id, {}, {}});
    ASSERT_TRUE(credential.ok()) << credential.status();
  }

  // Creates one command for `host`; returns the response JSON.
  json::object createCommand(const std::string& host, const std::string& extra = "") {
    Reply r = call("POST", "/api/v1/commands",
                   R"({"hosts":[")" + host + R"("],"argv":["echo","hi"])" + extra + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json.is_object() ? r.json.as_object() : json::object{};
  }

  static std::string str(const json::value& v, std::string_view key) {
    const auto* f = v.as_object().if_contains(key);
    if (!f || !f->is_string()) return "";
    return std::string(f->as_string());
  }

  void putOutput(const std::string& id, model::OutputStream stream, uint64_t offset,
                 const std::string& data) {
    auto r = store_->writeAndWait(store::AppendOutput{model::OutputChunk{id, stream, offset, data}});
    ASSERT_TRUE(r.status.ok()) << r.status;
  }

  size_t commandCount() {
    Reply r = call("GET", "/api/v1/commands?limit=1000");
    EXPECT_EQ(r.status, 200);
    return r.json.as_object().at("commands").as_array().size();
  }

  std::string dir_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<common::WorkerPool> slow_path_;
  std::unique_ptr<common::WorkerPool> blocking_;
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<HttpServer> server_;
  std::string base_;
};

// A follower of an event stream on its own thread, readable while it runs.
class SseClient {
 public:
  SseClient(const std::string& url) : url_(url) {
    thread_ = std::thread([this] { run(); });
  }
  ~SseClient() {
    stop_ = true;
    thread_.join();
  }
  bool headersSeen() const { return headers_done_; }
  bool finished() const { return finished_; }
  std::string text() {
    std::lock_guard lock(mu_);
    return body_;
  }
  long status() const { return status_; }

 private:
  static size_t onBody(char* data, size_t size, size_t n, void* user) {
    auto* self = static_cast<SseClient*>(user);
    std::lock_guard lock(self->mu_);
    self->body_.append(data, size * n);
    return size * n;
  }
  static size_t onHeader(char* data, size_t size, size_t n, void* user) {
    auto* self = static_cast<SseClient*>(user);
    if (size * n == 2 && data[0] == '\r') self->headers_done_ = true;
    return size * n;
  }
  static int onProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<SseClient*>(user)->stop_ ? 1 : 0;
  }
  void run() {
    CURL* curl = curl_easy_init();
    curl_slist* list = curl_slist_append(nullptr, (std::string("Authorization: Bearer ") + kToken).c_str());
    list = curl_slist_append(list, "Accept: text/event-stream");
    curl_easy_setopt(curl, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, onBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, onHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, this);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    status_ = status;
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    finished_ = true;
  }

  std::string url_;
  std::thread thread_;
  std::mutex mu_;
  std::string body_;
  std::atomic<bool> headers_done_{false};
  std::atomic<bool> finished_{false};
  std::atomic<bool> stop_{false};
  std::atomic<long> status_{0};
};

TEST_F(HttpApiTest, HealthEndpointsAnswerWithoutToken) {
  Reply health = call("GET", "/healthz", "", {}, false);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(str(health.json, "status"), "ok");
  Reply ready = call("GET", "/readyz", "", {}, false);
  EXPECT_EQ(ready.status, 200) << ready.body;
}

TEST_F(HttpApiTest, ApiRejectsMissingOrWrongToken) {
  Reply missing = call("GET", "/api/v1/hosts", "", {}, false);
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(errorCode(missing), "unauthenticated");
  EXPECT_NE(missing.header_blob.find("WWW-Authenticate: Bearer"), std::string::npos);
  Reply wrong = call("GET", "/api/v1/hosts", "", {"Authorization: Bearer nope"}, false);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(errorCode(wrong), "unauthenticated");
  Reply scheme = call("GET", "/api/v1/hosts", "", {"Authorization: Basic Zm9vOmJhcg=="}, false);
  EXPECT_EQ(scheme.status, 401);
}

TEST_F(HttpApiTest, UnknownResourcesAre404Json) {
  for (const char* path : {"/api/v1/hosts/nope", "/api/v1/commands/01HZZZZZZZZZZZZZZZZZZZZZZZ",
                           "/api/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ", "/api/v1/nothing",
                           "/nothing", "/api/v1/commands/01HZZZZZZZZZZZZZZZZZZZZZZZ/output"}) {
    Reply r = call("GET", path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    EXPECT_EQ(errorCode(r), "not_found") << path;
  }
  Reply cancel = call("POST", "/api/v1/runs/nope/cancel");
  EXPECT_EQ(cancel.status, 404);
  Reply method = call("DELETE", "/api/v1/hosts");
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(errorCode(method), "method_not_allowed");
}

TEST_F(HttpApiTest, BadRequestBodiesAre400AndPersistNothing) {
  enrollHost("web-1");
  struct Case {
    const char* body;
    const char* why;
  } cases[] = {
      {"{not json", "malformed"},
      {"[1,2]", "not an object"},
      {R"({"hosts":"web-1","argv":["true"]})", "hosts not a list"},
      {R"({"hosts":["web-1"],"argv":"true"})", "argv not a list"},
      {R"({"hosts":["web-1"],"argv":[1]})", "argv item not a string"},
      {R"({"hosts":["web-1"],"argv":["true"],"timout":"5s"})", "unknown field"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout":5})", "timeout as a number"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout":"5 parsecs"})", "bad duration"},
      {R"({"hosts":["web-1"],"argv":["true"],"script":"true"})", "argv and script"},
      {R"({"hosts":["web-1"]})", "nothing to run"},
      {R"({"argv":["true"]})", "no hosts"},
      {R"({"selector":"env=prod","argv":["true"]})", "selectors come later"},
      {R"({"hosts":["web-1"],"argv":["true"],"env":{"A":1}})", "env value not a string"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout_ms":1.5})", "fractional ms"},
  };
  for (const auto& c : cases) {
    Reply r = call("POST", "/api/v1/commands", c.body);
    EXPECT_EQ(r.status, 400) << c.why << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << c.why;
  }
  Reply unknown_host = call("POST", "/api/v1/commands", R"({"hosts":["ghost"],"argv":["true"]})");
  EXPECT_EQ(unknown_host.status, 404) << unknown_host.body;
  Reply bad_state = call("GET", "/api/v1/commands?state=sleeping");
  EXPECT_EQ(bad_state.status, 400);
  Reply bad_limit = call("GET", "/api/v1/commands?limit=0");
  EXPECT_EQ(bad_limit.status, 400);
  Reply bad_token = call("POST", "/api/v1/tokens", R"({"kind":"api","role":"admin"})");
  EXPECT_EQ(bad_token.status, 400);
  EXPECT_EQ(commandCount(), 0u);
}

TEST_F(HttpApiTest, OversizedBodyIs413AndServerKeepsServing) {
  enrollHost("web-1");
  std::string big = R"({"hosts":["web-1"],"argv":["echo",")" + std::string(2 << 20, 'x') + "\"]}";
  Reply r = call("POST", "/api/v1/commands", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(errorCode(r), "payload_too_large");
  // With 100-continue the client never sends the body.
  Reply expect = call("POST", "/api/v1/commands", big, {"Expect: 100-continue"});
  EXPECT_EQ(expect.status, 413);
  EXPECT_EQ(commandCount(), 0u);
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(HttpApiTest, QueuedCommandForOfflineHostCanBeCreatedReadListedAndCancelled) {
  enrollHost("web-1");
  Reply hosts = call("GET", "/api/v1/hosts");
  ASSERT_EQ(hosts.status, 200);
  auto& host_list = hosts.json.as_object().at("hosts").as_array();
  ASSERT_EQ(host_list.size(), 1u);
  EXPECT_EQ(str(host_list[0], "id"), "web-1");
  EXPECT_EQ(str(host_list[0], "status"), "offline");
  EXPECT_TRUE(hosts.json.as_object().at("next_cursor").is_null());
  EXPECT_EQ(call("GET", "/api/v1/hosts?status=online").json.as_object().at("hosts").as_array().size(), 0u);
  EXPECT_EQ(call("GET", "/api/v1/hosts/web-1").status, 200);

  json::object created = createCommand("web-1", R"(,"timeout":"30s","expire":"1h","env":{"A":"b"})");
  std::string run_id = str(created, "run_id");
  ASSERT_FALSE(run_id.empty());
  auto& commands = created.at("commands").as_array();
  ASSERT_EQ(commands.size(), 1u);
  std::string id = str(commands[0], "id");
  EXPECT_EQ(str(commands[0], "state"), "queued");
  EXPECT_EQ(str(commands[0], "host_id"), "web-1");
  EXPECT_EQ(commands[0].as_object().at("timeout_ms").as_int64(), 30000);
  EXPECT_TRUE(commands[0].as_object().at("exit_code").is_null());
  EXPECT_TRUE(commands[0].as_object().at("finished_at").is_null());
  EXPECT_EQ(str(commands[0], "created_by"), "tester");

  Reply got = call("GET", "/api/v1/commands/" + id);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(str(got.json, "state"), "queued");
  EXPECT_EQ(str(got.json, "run_id"), run_id);
  EXPECT_EQ(str(got.json.as_object().at("env"), "A"), "b");

  Reply listed = call("GET", "/api/v1/commands?host=web-1&state=queued");
  ASSERT_EQ(listed.status, 200);
  ASSERT_EQ(listed.json.as_object().at("commands").as_array().size(), 1u);
  EXPECT_TRUE(listed.json.as_object().at("next_cursor").is_null());

  Reply run = call("GET", "/api/v1/runs/" + run_id);
  ASSERT_EQ(run.status, 200);
  auto& summary = run.json.as_object().at("summary").as_object();
  EXPECT_EQ(summary.at("queued").as_int64(), 1);
  EXPECT_EQ(summary.at("total").as_int64(), 1);

  Reply cancelled = call("POST", "/api/v1/commands/" + id + "/cancel");
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(str(cancelled.json, "state"), "cancelled");
  EXPECT_FALSE(cancelled.json.as_object().at("finished_at").is_null());
  Reply again = call("POST", "/api/v1/commands/" + id + "/cancel");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(errorCode(again), "failed_precondition");

  Reply after = call("GET", "/api/v1/runs/" + run_id);
  EXPECT_EQ(after.json.as_object().at("summary").as_object().at("cancelled").as_int64(), 1);
  Reply stored = call("GET", "/api/v1/commands/" + id);
  EXPECT_EQ(str(stored.json, "state"), "cancelled");
}

TEST_F(HttpApiTest, CancelRunCancelsItsOpenCommands) {
  enrollHost("web-1");
  enrollHost("web-2");
  Reply created =
      call("POST", "/api/v1/commands", R"({"hosts":["web-1","web-2"],"script":"sleep 1"})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string run_id = str(created.json, "run_id");
  Reply cancelled = call("POST", "/api/v1/runs/" + run_id + "/cancel");
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(cancelled.json.as_object().at("commands").as_array().size(), 2u);
  Reply run = call("GET", "/api/v1/runs/" + run_id);
  EXPECT_EQ(run.json.as_object().at("summary").as_object().at("cancelled").as_int64(), 2);
}

TEST_F(HttpApiTest, IdempotencyKeyReplaysAndConflicts) {
  enrollHost("web-1");
  std::string body = R"({"hosts":["web-1"],"argv":["uptime"],"idempotency_key":"deploy-42"})";
  Reply first = call("POST", "/api/v1/commands", body);
  ASSERT_EQ(first.status, 201) << first.body;
  Reply replay = call("POST", "/api/v1/commands", body);
  ASSERT_EQ(replay.status, 200) << replay.body;
  EXPECT_EQ(str(replay.json, "run_id"), str(first.json, "run_id"));
  EXPECT_TRUE(replay.json.as_object().at("replayed").as_bool());

  Reply header = call("POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["uptime"]})",
                      {"Idempotency-Key: deploy-42"});
  EXPECT_EQ(header.status, 200) << header.body;
  EXPECT_EQ(str(header.json, "run_id"), str(first.json, "run_id"));

  Reply conflict =
      call("POST", "/api/v1/commands",
           R"({"hosts":["web-1"],"argv":["reboot"],"idempotency_key":"deploy-42"})");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(errorCode(conflict), "already_exists");
  Reply mismatch = call("POST", "/api/v1/commands", body, {"Idempotency-Key: other"});
  EXPECT_EQ(mismatch.status, 400);
  EXPECT_EQ(commandCount(), 1u);
}

TEST_F(HttpApiTest, CommandListPagesNewestFirst) {
  enrollHost("web-1");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(str(createCommand("web-1").at("commands").as_array()[0], "id"));
  }
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    Reply page = call("GET", "/api/v1/commands?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    for (const auto& c : page.json.as_object().at("commands").as_array()) {
      seen.push_back(str(c, "id"));
    }
    const auto& next = page.json.as_object().at("next_cursor");
    cursor = next.is_string() ? std::string(next.as_string()) : "";
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> expected(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, expected);
}

TEST_F(HttpApiTest, HostListPagesById) {
  for (const char* id : {"c-host", "a-host", "b-host"}) enrollHost(id);
  Reply first = call("GET", "/api/v1/hosts?limit=2");
  ASSERT_EQ(first.status, 200);
  auto& hosts = first.json.as_object().at("hosts").as_array();
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(str(hosts[0], "id"), "a-host");
  EXPECT_EQ(str(hosts[1], "id"), "b-host");
  std::string cursor(first.json.as_object().at("next_cursor").as_string());
  Reply second = call("GET", "/api/v1/hosts?limit=2&cursor=" + cursor);
  auto& rest = second.json.as_object().at("hosts").as_array();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(str(rest[0], "id"), "c-host");
  EXPECT_TRUE(second.json.as_object().at("next_cursor").is_null());
}

TEST_F(HttpApiTest, OutputIsReassembledWithOverlapsDroppedAndGapsMarked) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  putOutput(id, model::OutputStream::kStdout, 0, "hello ");
  putOutput(id, model::OutputStream::kStdout, 6, "world\n");
  putOutput(id, model::OutputStream::kStdout, 3, "lo world\nXX");  // resend, overlapping
  putOutput(id, model::OutputStream::kStdout, 100, "tail\n");      // the agent dropped 89 bytes
  putOutput(id, model::OutputStream::kStderr, 0, "oops \xff\n");   // not UTF-8

  Reply both = call("GET", "/api/v1/commands/" + id + "/output");
  ASSERT_EQ(both.status, 200) << both.body;
  EXPECT_EQ(str(both.json, "stdout"), "hello world\nXX\n[... 89 bytes truncated ...]\ntail\n");
  EXPECT_EQ(str(both.json, "stderr"), "oops \xEF\xBF\xBD\n");
  EXPECT_TRUE(both.json.as_object().at("truncated").as_bool());

  Reply err_only = call("GET", "/api/v1/commands/" + id + "/output?stream=stderr");
  ASSERT_EQ(err_only.status, 200);
  EXPECT_FALSE(err_only.json.as_object().contains("stdout"));
  EXPECT_EQ(call("GET", "/api/v1/commands/" + id + "/output?stream=video").status, 400);
}

TEST_F(HttpApiTest, FollowOfFinishedCommandSendsStoredOutputThenEnd) {
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

TEST_F(HttpApiTest, FollowStreamsLiveChunksDedupedWithGapsMarked) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  putOutput(id, model::OutputStream::kStdout, 0, "stored\n");
  SseClient follower(base_ + "/api/v1/commands/" + id + "/output");
  ASSERT_TRUE(waitFor([&] { return follower.text().find("stored") != std::string::npos; }));

  auto publish = [&](model::OutputStream s, uint64_t offset, std::string data) {
    plane_->bus().publishChunk(model::OutputChunk{id, s, offset, std::move(data)});
  };
  publish(model::OutputStream::kStdout, 0, "stored\n");    // already sent: dropped
  publish(model::OutputStream::kStdout, 7, "live \xC3");   // a character split across chunks
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

TEST_F(HttpApiTest, FollowFillsChunksStoredButNotPublishedToIt) {
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

TEST_F(HttpApiTest, ShutdownEndsEventStreamsAndReturnsPromptly) {
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

TEST_F(HttpApiTest, EnrollTokenCanBeCreatedAndUsed) {
  Reply r = call("POST", "/api/v1/tokens",
                 R"({"kind":"enroll","uses":2,"ttl":"1h","labels":{"env":"prod"}})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::string secret = str(r.json, "token");
  EXPECT_EQ(secret.rfind("mst_enroll_", 0), 0u);
  EXPECT_FALSE(str(r.json, "expires_at").empty());
  EXPECT_EQ(r.json.as_object().at("uses").as_int64(), 2);
  auto credential = plane_->enrollment().enroll(EnrollRequest{secret, "db-1", {}, {}});
  ASSERT_TRUE(credential.ok()) << credential.status();
  Reply host = call("GET", "/api/v1/hosts/db-1");
  ASSERT_EQ(host.status, 200);
  EXPECT_EQ(str(host.json.as_object().at("labels"), "env"), "prod");
  EXPECT_EQ(call("POST", "/api/v1/tokens", R"({"kind":"enroll","uses":"two"})").status, 400);
}

TEST_F(HttpApiTest, RequestsAreCountedByRouteAndStatus) {
  call("GET", "/api/v1/hosts", "", {}, false);
  call("GET", "/api/v1/hosts");
  call("GET", "/api/v1/hosts");
  std::map<std::pair<std::string, int>, uint64_t> counts;
  for (const auto& c : server_->requestCounts()) counts[{c.route, c.status}] = c.count;
  EXPECT_EQ((counts[{"GET /api/v1/hosts", 200}]), 2u);
  EXPECT_EQ((counts[{"GET /api/v1/hosts", 401}]), 1u);
}

}  // namespace
}  // namespace muster::server::http
