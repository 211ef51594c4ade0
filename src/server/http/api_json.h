// JSON of the REST API: model types to JSON, error replies, and strict readers for request
// bodies (wrong types and unknown fields are answered, never guessed).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/command.h"
#include "model/host.h"
#include "server/http/api.h"
#include "store/store.h"

namespace muster::server::http {

// Debian's Abseil is built with its own string_view (not an alias of std::string_view).
inline std::string_view toStd(absl::string_view s) { return {s.data(), s.size()}; }
inline absl::string_view toAbsl(std::string_view s) { return {s.data(), s.size()}; }

// "2024-05-01T12:00:00.123Z"; empty for 0.
std::string rfc3339Ms(int64_t unix_ms);

boost::json::object hostJson(const model::Host& host);
boost::json::object commandJson(const model::Command& command);
// Token records without their hashes; `state` is active, revoked, expired (or used_up).
boost::json::object apiTokenJson(const store::ApiToken& token, int64_t now_ms);
boost::json::object enrollTokenJson(const store::EnrollToken& token, int64_t now_ms);

int httpStatusFor(const absl::Status& status);
// "invalid_argument", "not_found", ...
std::string errorCodeName(absl::StatusCode code);

ApiReply jsonReply(int status, const boost::json::value& body);
// 422 invalid_selector for statuses carrying kInvalidSelectorPayload.
ApiReply errorReply(const absl::Status& status);
ApiReply errorReply(int http_status, std::string_view code, std::string_view message);

// Parses a request body that must be one JSON object.
absl::StatusOr<boost::json::object> parseJsonObject(std::string_view body);

// Reads fields of a request object, each with its expected type. Every accessor returns an
// error naming the field; `finish()` rejects fields nobody asked for (typos like "timout").
class FieldReader {
 public:
  FieldReader(const boost::json::object& object, std::string what);

  bool has(std::string_view key) const;
  absl::Status optString(std::string_view key, std::string* out);
  absl::Status optInt(std::string_view key, int64_t* out);
  absl::Status optBool(std::string_view key, bool* out);
  absl::Status optStringList(std::string_view key, std::vector<std::string>* out);
  absl::Status optStringMap(std::string_view key, model::StringMap* out);
  // A duration given either as "30s" under `key` or as milliseconds under `key_ms`.
  absl::Status optDuration(std::string_view key, std::string_view key_ms, int64_t* out_ms);
  // Marks a field as known without reading it.
  void allow(std::string_view key);
  absl::Status finish() const;

 private:
  const boost::json::value* find(std::string_view key);
  absl::Status wrongType(std::string_view key, std::string_view expected) const;

  const boost::json::object& object_;
  std::string what_;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace muster::server::http
