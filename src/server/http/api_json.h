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
#include "common/duration.h"
#include "model/command.h"
#include "model/event.h"
#include "model/host.h"
#include "server/core/command_service.h"
#include "server/core/operator_auth.h"
#include "server/core/queries.h"
#include "server/http/api.h"

namespace muster::server::http {

// Debian's Abseil is built with its own string_view (not an alias of std::string_view).
inline std::string_view toStd(absl::string_view s) { return {s.data(), s.size()}; }
inline absl::string_view toAbsl(std::string_view s) { return {s.data(), s.size()}; }

// "2024-05-01T12:00:00.123Z"; empty for 0.
std::string rfc3339Ms(int64_t unix_ms);

boost::json::object hostJson(const model::Host& host);
boost::json::object commandJson(const model::Command& command);
boost::json::object expectationJson(const model::ArtifactExpectation& expectation);
boost::json::object artifactJson(const model::Artifact& artifact);
// Token records without their hashes; `state` is active, revoked, expired (or used_up).
boost::json::object apiTokenJson(const ApiTokenView& token, int64_t now_ms);
boost::json::object enrollTokenJson(const EnrollTokenView& token, int64_t now_ms);

// An audit event; empty actor, source, target and host are null (handlers_events.cc).
boost::json::object eventJson(const model::Event& event);
// RFC 3339 with a Z or a +hh:mm / -hh:mm offset, optional fraction ("2026-11-23T20:01:44Z",
// "2026-11-23T21:01:44.210+01:00") to Unix ms; InvalidArgument otherwise.
absl::StatusOr<int64_t> parseRfc3339Ms(std::string_view text);

int httpStatusFor(const absl::Status& status);
// "invalid_argument", "not_found", ...
std::string errorCodeName(absl::StatusCode code);

ApiReply jsonReply(int status, const boost::json::value& body);
// Attached to an INVALID_ARGUMENT about a value out of range: a JSON object
// {"field", "min", "max"} that errorReply adds to the error object, for scripts.
inline constexpr char kFieldRangePayload[] = "type.muster.dev/field-range";
absl::Status fieldRangeError(std::string message, std::string_view field, int64_t min, int64_t max);

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
  // A duration given either as "30s" under `key` or as milliseconds under `key_ms`, from 0
  // to `max_ms`. Out of range (huge, negative, not an integer) is an error naming the field,
  // the value and the range, never a wrapped or clamped number.
  absl::Status optDuration(std::string_view key, std::string_view key_ms, int64_t* out_ms,
                           int64_t max_ms = common::kMaxDurationMs);
  // Marks a field as known without reading it.
  void allow(std::string_view key);
  absl::Status finish() const;

  // The field's value (null when absent or JSON null), marked as seen.
  const boost::json::value* find(std::string_view key);

 private:
  absl::Status wrongType(std::string_view key, std::string_view expected) const;

  const boost::json::object& object_;
  std::string what_;
  std::set<std::string, std::less<>> seen_;
};

// --- Request bodies: each endpoint's reader, apart from the handler so tests/fuzz can feed it.

// POST /api/v1/commands. `header_key` is the Idempotency-Key header ("" when absent),
// `created_by` the caller.
absl::StatusOr<CreateRunRequest> parseCreateRunBody(std::string_view body,
                                                    std::string_view header_key,
                                                    std::string created_by);

// PUT/PATCH /api/v1/hosts/{id}/labels: {"set": {k: v}, "remove": [k]}.
struct LabelChange {
  model::StringMap set;
  std::vector<std::string> remove;
};
absl::StatusOr<LabelChange> parseLabelBody(std::string_view body);

// POST /api/v1/tokens: an agent enrollment token or an operator API token.
struct TokenRequest {
  enum class Kind { kEnroll, kApi };
  Kind kind = Kind::kEnroll;
  int64_t ttl_ms = 0;         // enroll: 24 h unless given; api: 0 (never expires) unless given
  int64_t uses = 1;           // enroll only
  model::StringMap labels;    // enroll only
  std::string host_id;        // enroll only: the one host it may enroll (or re-enroll)
  Role role = Role::kViewer;  // api only
  std::string name;           // api only
};
absl::StatusOr<TokenRequest> parseTokenBody(std::string_view body);

}  // namespace muster::server::http
