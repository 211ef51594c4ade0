// The CLI's HTTP client (libcurl): JSON requests to the REST API with the server's error
// messages turned into Status, and Server-Sent Events followers for live output.
#pragma once

#include <atomic>
#include <boost/json/value.hpp>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace muster::cli {

struct ClientConfig {
  std::string server;   // base URL, like https://127.0.0.1:7080
  std::string token;    // bearer token
  std::string ca_file;  // CA that signed musterd's certificate; empty: the system's CAs
};

class HttpClient {
 public:
  explicit HttpClient(ClientConfig config);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `path` starts with '/', query included. A non-2xx answer becomes a Status with the
  // server's message; `http_status` (optional) receives the status code.
  absl::StatusOr<boost::json::value> get(const std::string& path, long* http_status = nullptr);
  absl::StatusOr<boost::json::value> post(const std::string& path, const boost::json::value& body,
                                          long* http_status = nullptr);
  absl::StatusOr<boost::json::value> patch(const std::string& path, const boost::json::value& body,
                                           long* http_status = nullptr);
  absl::StatusOr<boost::json::value> del(const std::string& path, long* http_status = nullptr);

  const ClientConfig& config() const { return config_; }

 private:
  absl::StatusOr<boost::json::value> request(const char* method, const std::string& path,
                                             const std::string* body, long* http_status);

  ClientConfig config_;
  void* curl_;  // CURL*, reused so connections are kept alive
};

// Percent-encodes one path segment or query value.
std::string urlEscape(std::string_view text);

// One Server-Sent Event.
struct SseEvent {
  std::string event = "message";
  std::string data;
};

// Splits a text/event-stream byte stream into events (comments and unknown fields ignored).
// A line or an event larger than `max_bytes` (musterd's largest is an output chunk of at
// most 1 MiB, JSON-escaped) is refused: the stream is not kept in memory without a bound.
class SseParser {
 public:
  static constexpr size_t kMaxEventBytes = 16u << 20;
  explicit SseParser(size_t max_bytes = kMaxEventBytes) : max_bytes_(max_bytes) {}
  // An error (RESOURCE_EXHAUSTED) once a line or an event is too large; the parser then
  // takes nothing more.
  absl::Status feed(std::string_view bytes, const std::function<void(const SseEvent&)>& on_event);

 private:
  void line(std::string_view text, const std::function<void(const SseEvent&)>& on_event);

  size_t max_bytes_;
  std::string pending_;
  SseEvent current_;
  bool has_data_ = false;
  bool failed_ = false;
};

// Follows several event streams at once on one thread (curl multi).
class EventFollower {
 public:
  using OnEvent = std::function<void(size_t index, const SseEvent& event)>;

  explicit EventFollower(ClientConfig config) : config_(std::move(config)) {}

  // Streams `paths` until each one ends or `stop` becomes true. One status per path: OK when
  // the server ended the stream, otherwise why it broke off.
  std::vector<absl::Status> run(const std::vector<std::string>& paths, const OnEvent& on_event,
                                const std::atomic<bool>& stop);

 private:
  ClientConfig config_;
};

// The Status for a failed transfer to `url` (connection refused, timeouts, TLS).
absl::Status transportError(int curl_code, const std::string& url, const std::string& detail);
// The Status for a non-2xx answer: the server's {"error":{...}} message when there is one,
// with its code ("invalid_selector", ...) as payload kErrorCodePayload.
absl::Status httpError(long http_status, const std::string& body);
inline constexpr char kErrorCodePayload[] = "type.muster.dev/http-error-code";
// The server's error code of a status made by httpError ("" when there is none).
std::string serverErrorCode(const absl::Status& status);

}  // namespace muster::cli
