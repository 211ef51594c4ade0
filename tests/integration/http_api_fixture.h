// Test fixture of the REST API tests: a real HttpServer on 127.0.0.1:0 over an in-process
// ControlPlane with a real SqliteStore in a temporary directory, and small libcurl clients.
#pragma once

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <boost/json.hpp>
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
#include "crypto/secrets.h"
#include "http_raw_client.h"
#include "server/core/artifact_service.h"
#include "server/core/control_plane.h"
#include "server/http/http_server.h"
#include "store/fs/fs_artifact_store.h"
#include "store/sqlite/sqlite_store.h"

namespace muster::server::http {
namespace json = boost::json;
using namespace std::chrono_literals;

inline constexpr char kToken[] = "test-operator-token";

struct Reply {
  long status = 0;
  std::string body;
  json::value json;  // null when the body is not JSON
  std::string header_blob;
};

inline size_t collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// Polls `condition` every 10 ms until it holds or `timeout` passes.
inline bool waitFor(const std::function<bool()>& condition,
                    std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// Server-Sent Events as received by a client: (event, data JSON) pairs.
inline std::vector<std::pair<std::string, json::value>> parseEvents(const std::string& text) {
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
      std::string line =
          block.substr(line_start, nl == std::string::npos ? std::string::npos : nl - line_start);
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
    artifact_store_ = std::make_unique<store::fs::FsArtifactStore>(
        store::fs::FsArtifactStoreOptions{.dir = dir_ + "/artifacts", .quota_bytes = 64 << 20},
        common::SystemClock::instance());
    artifacts_ = std::make_unique<ArtifactService>(
        *artifact_store_, plane_->commands(), common::SystemClock::instance(), ArtifactConfig{});
    plane_->setArtifacts(artifacts_.get());
    ASSERT_TRUE(plane_->start().ok());
    ASSERT_TRUE(artifacts_->start().ok());
    startServer(HttpOptions{});
  }

  // An artifact stored as an operator would (no command).
  model::Artifact storeArtifact(const std::string& bytes, const std::string& name = "a.bin") {
    auto up = artifact_store_->stage({.key = "op-" + crypto::randomToken("", 8),
                                      .declared_size = bytes.size(),
                                      .declared_sha256 = crypto::sha256Hex(bytes)});
    EXPECT_TRUE(up.ok()) << up.status();
    EXPECT_TRUE((*up)->append(bytes).ok());
    model::Artifact meta;
    meta.name = name;
    meta.purpose = model::ArtifactPurpose::kFile;
    auto a = (*up)->commit(meta);
    EXPECT_TRUE(a.ok()) << a.status();
    return *a;
  }

  void startServer(HttpOptions options) {
    options.listen = "127.0.0.1:0";
    // kToken becomes the admin token (principal "admin"), as musterd's first start does.
    std::string admin_path = dir_ + "/admin.token";
    if (!std::filesystem::exists(admin_path)) {
      FILE* f = fopen(admin_path.c_str(), "w");
      ASSERT_NE(f, nullptr);
      fputs(kToken, f);
      fclose(f);
    }
    ASSERT_TRUE(plane_->auth().bootstrapAdmin(admin_path).ok());
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
    if (store_) (void)store_->flush();
    artifacts_.reset();
    plane_.reset();
    artifact_store_.reset();
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
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);  // "/hosts/.." reaches the server as sent
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

  // An API token with `role` (secret); its id goes to `id` when given.
  std::string apiToken(Role role, std::string* id = nullptr) {
    auto token = plane_->auth().create(role, std::string(toString(role)) + "-user", 0, "test");
    EXPECT_TRUE(token.ok()) << token.status();
    if (!token.ok()) return "";
    if (id) *id = token->record.id;
    return token->secret;
  }

  Reply callAs(const std::string& token, const std::string& method, const std::string& path,
               const std::string& body = "") {
    return call(method, path, body, {"Authorization: Bearer " + token}, false);
  }

  static std::string errorMessage(const Reply& r) {
    if (!r.json.is_object()) return "";
    const auto* error = r.json.as_object().if_contains("error");
    if (!error || !error->is_object()) return "";
    return std::string(error->as_object().at("message").as_string());
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
    auto credential =
        plane_->enrollment().enroll(EnrollRequest{.token = token->secret, .agent_id = id});
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
    auto r =
        store_->writeAndWait(store::AppendOutput{model::OutputChunk{id, stream, offset, data}});
    ASSERT_TRUE(r.status.ok()) << r.status;
  }

  // One sample of GET /metrics (`name` with its labels, like `x{phase="header"}`); -1 when
  // it is missing.
  double metric(const std::string& name) {
    Reply r = call("GET", "/metrics", "", {}, false);
    EXPECT_EQ(r.status, 200);
    size_t pos = 0;
    while (pos < r.body.size()) {
      size_t end = r.body.find('\n', pos);
      if (end == std::string::npos) end = r.body.size();
      std::string line = r.body.substr(pos, end - pos);
      pos = end + 1;
      if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
          line[name.size()] == ' ') {
        return std::stod(line.substr(name.size() + 1));
      }
    }
    return -1;
  }

  void restartWith(HttpOptions options) {
    server_->shutdown();
    server_.reset();
    startServer(std::move(options));
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
  std::unique_ptr<store::fs::FsArtifactStore> artifact_store_;
  std::unique_ptr<ArtifactService> artifacts_;
  std::unique_ptr<HttpServer> server_;
  std::string base_;
};

// A follower of an event stream on its own thread, readable while it runs.
class SseClient {
 public:
  explicit SseClient(const std::string& url, std::vector<std::string> headers = {})
      : url_(url), headers_(std::move(headers)) {
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
    curl_slist* list =
        curl_slist_append(nullptr, (std::string("Authorization: Bearer ") + kToken).c_str());
    list = curl_slist_append(list, "Accept: text/event-stream");
    for (const auto& h : headers_) list = curl_slist_append(list, h.c_str());
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
  std::vector<std::string> headers_;
  std::thread thread_;
  std::mutex mu_;
  std::string body_;
  std::atomic<bool> headers_done_{false};
  std::atomic<bool> finished_{false};
  std::atomic<bool> stop_{false};
  std::atomic<long> status_{0};
};

}  // namespace muster::server::http
