// HttpClient, SseParser and EventFollower on libcurl.
#include "cli/http_client.h"

#include <curl/curl.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <cstdio>
#include <memory>
#include <mutex>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace muster::cli {
namespace json = boost::json;
namespace {

constexpr long kConnectTimeoutSecs = 10;
constexpr long kRequestTimeoutSecs = 120;
// Event streams carry a keep-alive comment every 15 s; a minute of silence means trouble.
constexpr long kStreamSilenceSecs = 60;

void globalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t appendToString(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() { curl_slist_free_all(list); }
  void add(const std::string& header) { list = curl_slist_append(list, header.c_str()); }
};

absl::Status statusForHttp(long http_status, std::string message, std::string_view code = "") {
  if (code == "failed_precondition") return absl::FailedPreconditionError(message);
  switch (http_status) {
    case 400:
    case 422: return absl::InvalidArgumentError(message);
    case 401: return absl::UnauthenticatedError(message);
    case 403: return absl::PermissionDeniedError(message);
    case 404: return absl::NotFoundError(message);
    case 409: return absl::AlreadyExistsError(message);
    case 413:
    case 429: return absl::ResourceExhaustedError(message);
    case 503: return absl::UnavailableError(message);
    case 504: return absl::DeadlineExceededError(message);
    default: return absl::InternalError(message);
  }
}

}  // namespace

std::string urlEscape(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

absl::Status transportError(int curl_code, const std::string& url, const std::string& detail) {
  std::string what = detail.empty() ? curl_easy_strerror(static_cast<CURLcode>(curl_code)) : detail;
  switch (curl_code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", url, ": ", what,
                       ". Is musterd running there? Check --server or MUSTER_SERVER"));
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      return absl::UnavailableError(absl::StrCat(
          "cannot trust ", url, ": ", what,
          ". Give the CA that signed musterd's certificate: --ca FILE, MUSTER_CA or ca = \"...\" "
          "in the config file (musterd's own is DATA/tls/ca.crt); and use a name the "
          "certificate carries (musterd --advertise NAME)"));
    case CURLE_SSL_CONNECT_ERROR:
      return absl::UnavailableError(absl::StrCat(
          "TLS with ", url, " failed: ", what,
          ". If musterd runs with --insecure-plaintext, use http:// and --insecure-plaintext"));
    case CURLE_GOT_NOTHING:
      return absl::UnavailableError(absl::StrCat(
          "no answer from ", url, ": ", what,
          ". musterd serves HTTPS unless started with --insecure-plaintext: use https://"));
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat("no answer from ", url, " in time: ", what));
    default: return absl::UnavailableError(absl::StrCat("request to ", url, " failed: ", what));
  }
}

absl::Status httpError(long http_status, const std::string& body) {
  boost::system::error_code ec;
  json::value parsed = json::parse(body, ec);
  if (!ec && parsed.is_object()) {
    const auto* error = parsed.as_object().if_contains("error");
    if (error && error->is_object()) {
      const auto* message = error->as_object().if_contains("message");
      if (message && message->is_string()) {
        const auto* code_value = error->as_object().if_contains("code");
        std::string code = code_value && code_value->is_string()
                               ? std::string(code_value->get_string())
                               : std::string();
        absl::Status st = statusForHttp(http_status, std::string(message->get_string()), code);
        if (!code.empty()) st.SetPayload(kErrorCodePayload, absl::Cord(code));
        return st;
      }
    }
  }
  std::string excerpt = body.substr(0, 200);
  return statusForHttp(
      http_status, absl::StrCat("server answered HTTP ", http_status, excerpt.empty() ? "" : ": ",
                                excerpt, " (is --server pointing at musterd?)"));
}

std::string serverErrorCode(const absl::Status& status) {
  auto code = status.GetPayload(kErrorCodePayload);
  return code ? std::string(*code) : std::string();
}

// --- HttpClient ----------------------------------------------------------------------------

HttpClient::HttpClient(ClientConfig config) : config_(std::move(config)) {
  globalInit();
  while (!config_.server.empty() && config_.server.back() == '/') config_.server.pop_back();
  curl_ = curl_easy_init();
}

HttpClient::~HttpClient() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

absl::StatusOr<json::value> HttpClient::get(const std::string& path, long* http_status) {
  return request("GET", path, nullptr, http_status);
}

absl::StatusOr<json::value> HttpClient::post(const std::string& path, const json::value& body,
                                             long* http_status) {
  std::string text = json::serialize(body);
  return request("POST", path, &text, http_status);
}

absl::StatusOr<json::value> HttpClient::patch(const std::string& path, const json::value& body,
                                              long* http_status) {
  std::string text = json::serialize(body);
  return request("PATCH", path, &text, http_status);
}

absl::StatusOr<json::value> HttpClient::del(const std::string& path, long* http_status) {
  return request("DELETE", path, nullptr, http_status);
}

absl::StatusOr<json::value> HttpClient::request(const char* method, const std::string& path,
                                                const std::string* body, long* http_status) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (!curl) return absl::InternalError("cannot initialise libcurl");
  curl_easy_reset(curl);
  std::string url = config_.server + path;
  std::string response;
  char error_buffer[CURL_ERROR_SIZE] = {0};
  HeaderList headers;
  headers.add("Accept: application/json");
  if (!config_.token.empty()) headers.add("Authorization: Bearer " + config_.token);
  if (body) headers.add("Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.list);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "muster-cli/0.1");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSecs);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, kRequestTimeoutSecs);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, appendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  if (!config_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, config_.ca_file.c_str());
  if (body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) return transportError(rc, config_.server, error_buffer);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (http_status) *http_status = status;
  if (status < 200 || status >= 300) return httpError(status, response);
  boost::system::error_code ec;
  json::value parsed = json::parse(response, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("the server at ", config_.server,
                                            " sent a reply that is not JSON (", ec.message(),
                                            "); is --server pointing at musterd?"));
  }
  return parsed;
}

// --- SseParser -----------------------------------------------------------------------------

absl::Status SseParser::feed(std::string_view bytes,
                             const std::function<void(const SseEvent&)>& on_event) {
  auto tooLarge = [this] {
    failed_ = true;
    pending_.clear();
    current_ = SseEvent{};
    return absl::ResourceExhaustedError(
        absl::StrCat("the server sent an event larger than ", max_bytes_,
                     " bytes; is --server pointing at musterd? (output is also readable with "
                     "`muster command show ID`)"));
  };
  if (failed_) return tooLarge();
  pending_.append(bytes);
  size_t start = 0;
  while (true) {
    size_t nl = pending_.find('\n', start);
    if (nl == std::string::npos) break;
    if (nl - start > max_bytes_) return tooLarge();
    std::string_view text(pending_.data() + start, nl - start);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    line(text, on_event);
    if (current_.data.size() > max_bytes_) return tooLarge();
    start = nl + 1;
  }
  pending_.erase(0, start);
  if (pending_.size() > max_bytes_) return tooLarge();
  return absl::OkStatus();
}

void SseParser::line(std::string_view text, const std::function<void(const SseEvent&)>& on_event) {
  if (text.empty()) {  // blank line: dispatch
    if (has_data_) on_event(current_);
    current_ = SseEvent{};
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // comment (keep-alive)
  size_t colon = text.find(':');
  std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "event") {
    current_.event = std::string(value);
  } else if (field == "data") {
    if (has_data_) current_.data += '\n';
    current_.data.append(value);
    has_data_ = true;
  }
}

// --- EventFollower -------------------------------------------------------------------------

namespace {

struct Transfer {
  size_t index = 0;
  CURL* easy = nullptr;
  HeaderList headers;
  SseParser parser;
  std::string error_body;
  absl::Status parse_error;  // the event stream broke a bound (the transfer is aborted)
  std::string url;
  char error_buffer[CURL_ERROR_SIZE] = {0};
  const EventFollower::OnEvent* on_event = nullptr;
};

size_t onStreamData(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  std::string_view bytes(data, size * count);
  if (status != 200) {
    if (t->error_body.size() < 64 * 1024) t->error_body.append(bytes);
    return size * count;
  }
  t->parse_error = t->parser.feed(bytes, [t](const SseEvent& e) { (*t->on_event)(t->index, e); });
  if (!t->parse_error.ok()) return 0;  // curl aborts the transfer (CURLE_WRITE_ERROR)
  return size * count;
}

}  // namespace

std::vector<absl::Status> EventFollower::run(const std::vector<std::string>& paths,
                                             const OnEvent& on_event,
                                             const std::atomic<bool>& stop) {
  globalInit();
  std::string base = config_.server;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::vector<absl::Status> results(paths.size(), absl::OkStatus());
  std::vector<bool> done(paths.size(), false);
  CURLM* multi = curl_multi_init();
  std::vector<std::unique_ptr<Transfer>> transfers;
  for (size_t i = 0; i < paths.size(); ++i) {
    auto t = std::make_unique<Transfer>();
    t->index = i;
    t->on_event = &on_event;
    t->url = base + paths[i];
    t->easy = curl_easy_init();
    t->headers.add("Accept: text/event-stream");
    if (!config_.token.empty()) t->headers.add("Authorization: Bearer " + config_.token);
    curl_easy_setopt(t->easy, CURLOPT_URL, t->url.c_str());
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers.list);
    curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "muster-cli/0.1");
    curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSecs);
    curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_TIME, kStreamSilenceSecs);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    if (!config_.ca_file.empty()) {
      curl_easy_setopt(t->easy, CURLOPT_CAINFO, config_.ca_file.c_str());
    }
    curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->error_buffer);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, onStreamData);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t.get());
    curl_multi_add_handle(multi, t->easy);
    transfers.push_back(std::move(t));
  }
  int running = static_cast<int>(transfers.size());
  while (running > 0 && !stop.load()) {
    CURLMcode mc = curl_multi_perform(multi, &running);
    if (mc == CURLM_OK) mc = curl_multi_poll(multi, nullptr, 0, 200, nullptr);
    if (mc != CURLM_OK) {
      for (auto& r : results) {
        if (r.ok()) r = absl::InternalError(curl_multi_strerror(mc));
      }
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      done[t->index] = true;
      if (!t->parse_error.ok()) {
        results[t->index] = t->parse_error;
      } else if (msg->data.result != CURLE_OK) {
        results[t->index] = transportError(msg->data.result, base, t->error_buffer);
      } else if (status != 200) {
        results[t->index] = httpError(status, t->error_body);
      }
    }
  }
  for (size_t i = 0; i < results.size(); ++i) {
    if (!done[i] && results[i].ok()) results[i] = absl::CancelledError("interrupted");
  }
  for (auto& t : transfers) {
    curl_multi_remove_handle(multi, t->easy);
    curl_easy_cleanup(t->easy);
  }
  curl_multi_cleanup(multi);
  return results;
}

}  // namespace muster::cli
