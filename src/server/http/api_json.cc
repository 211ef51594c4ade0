// JSON encoding of hosts and commands, error replies, strict request-body readers.
#include "server/http/api_json.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <ctime>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/duration.h"
#include "server/core/command_service.h"
#include "server/core/output_text.h"

namespace muster::server::http {
namespace json = boost::json;

std::string rfc3339Ms(int64_t unix_ms) {
  if (unix_ms == 0) return "";
  int64_t secs = unix_ms / 1000;
  int64_t millis = unix_ms % 1000;
  if (millis < 0) {
    millis += 1000;
    --secs;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

namespace {

json::value timeValue(int64_t ms) {
  if (ms == 0) return nullptr;
  return json::value(rfc3339Ms(ms));
}

json::object mapJson(const model::StringMap& map) {
  json::object out;
  for (const auto& [k, v] : map) out[k] = v;
  return out;
}

}  // namespace

json::object hostJson(const model::Host& h) {
  json::object o;
  o["id"] = h.id;
  o["status"] = std::string(model::toString(h.status));
  o["version"] = h.version;
  o["facts"] = mapJson(h.facts);
  o["labels"] = mapJson(h.labels);
  json::object m;
  m["load1"] = h.metrics.load1;
  m["load5"] = h.metrics.load5;
  m["load15"] = h.metrics.load15;
  m["mem_total_bytes"] = h.metrics.mem_total_bytes;
  m["mem_available_bytes"] = h.metrics.mem_available_bytes;
  m["disk_total_bytes"] = h.metrics.disk_total_bytes;
  m["disk_free_bytes"] = h.metrics.disk_free_bytes;
  m["uptime_seconds"] = h.metrics.uptime_seconds;
  o["metrics"] = std::move(m);
  o["enrolled_at"] = timeValue(h.enrolled_at_ms);
  o["last_seen"] = timeValue(h.last_seen_ms);
  o["status_changed_at"] = timeValue(h.status_changed_at_ms);
  o["enrolled_at_ms"] = h.enrolled_at_ms;
  o["last_seen_ms"] = h.last_seen_ms;
  o["status_changed_at_ms"] = h.status_changed_at_ms;
  // mTLS: the client certificate musterd issued to the host (null: none).
  if (h.client_cert_sha256.empty()) {
    o["client_cert"] = nullptr;
  } else {
    json::object cert;
    cert["sha256"] = h.client_cert_sha256;
    cert["not_after"] = timeValue(h.client_cert_not_after_ms);
    cert["not_after_ms"] = h.client_cert_not_after_ms;
    o["client_cert"] = std::move(cert);
  }
  return o;
}

json::object commandJson(const model::Command& c) {
  json::object o;
  o["id"] = c.id;
  o["run_id"] = c.run_id;
  o["host_id"] = c.host_id;
  o["state"] = std::string(model::toString(c.state));
  if (!c.exec.argv.empty()) {
    json::array argv;
    for (const auto& a : c.exec.argv) argv.emplace_back(a);
    o["argv"] = std::move(argv);
  } else {
    o["script"] = c.exec.script;
  }
  o["env"] = mapJson(c.exec.env);
  // Names only: secret values never leave the server except to the agent.
  json::array secret_names;
  for (const auto& [k, v] : c.exec.secret_env) secret_names.emplace_back(k);
  o["secret_env"] = std::move(secret_names);
  o["cwd"] = c.exec.cwd;
  o["timeout_ms"] = c.exec.timeout_ms;
  o["created_by"] = c.created_by;
  o["created_at"] = timeValue(c.created_at_ms);
  o["dispatched_at"] = timeValue(c.dispatched_at_ms);
  o["started_at"] = timeValue(c.started_at_ms);
  o["finished_at"] = timeValue(c.finished_at_ms);
  o["expires_at"] = timeValue(c.expires_at_ms);
  if (c.exit_code) {
    o["exit_code"] = *c.exit_code;
  } else {
    o["exit_code"] = nullptr;
  }
  o["signal"] = c.signal;
  o["error"] = c.error;
  o["output_truncated"] = c.output_truncated;
  o["stdout_bytes"] = c.stdout_bytes;
  o["stderr_bytes"] = c.stderr_bytes;
  o["cancel_requested"] = c.cancel_requested;
  if (!c.artifacts.empty()) {
    json::array artifacts;
    for (const auto& e : c.artifacts) artifacts.emplace_back(expectationJson(e));
    o["artifacts"] = std::move(artifacts);
  }
  return o;
}

json::object expectationJson(const model::ArtifactExpectation& e) {
  json::object o;
  o["direction"] = std::string(model::toString(e.direction));
  o["purpose"] = std::string(model::toString(e.purpose));
  if (!e.artifact_id.empty()) o["artifact_id"] = e.artifact_id;
  if (!e.device.empty()) o["device"] = e.device;
  if (e.max_bytes != 0) o["max_bytes"] = e.max_bytes;
  if (!e.sha256.empty()) o["sha256"] = e.sha256;
  if (e.size != 0) o["size"] = e.size;
  return o;
}

json::object artifactJson(const model::Artifact& a) {
  json::object o;
  o["id"] = a.id;
  o["name"] = a.name;
  o["size"] = a.size;
  o["sha256"] = a.sha256;
  o["purpose"] = std::string(model::toString(a.purpose));
  o["host_id"] = a.host_id;
  o["command_id"] = a.command_id;
  o["created_by"] = a.created_by;
  o["created_at"] = timeValue(a.created_at_ms);
  o["pinned"] = a.pinned;
  return o;
}

absl::StatusOr<std::vector<model::ArtifactExpectation>> parseExpectations(const json::value& v) {
  std::vector<model::ArtifactExpectation> out;
  if (!v.is_array()) {
    return absl::InvalidArgumentError(
        "command request: field \"artifacts\" must be a list of objects like "
        "{\"direction\": \"upload\", \"purpose\": \"logs\"}");
  }
  for (const auto& item : v.as_array()) {
    if (!item.is_object()) {
      return absl::InvalidArgumentError("command request: each of \"artifacts\" must be an object");
    }
    FieldReader fields(item.as_object(), "artifact expectation");
    model::ArtifactExpectation e;
    std::string direction, purpose;
    int64_t max_bytes = 0;
    absl::Status st;
    if (st = fields.optString("direction", &direction); !st.ok()) return st;
    if (st = fields.optString("purpose", &purpose); !st.ok()) return st;
    if (st = fields.optString("artifact_id", &e.artifact_id); !st.ok()) return st;
    if (st = fields.optString("device", &e.device); !st.ok()) return st;
    if (st = fields.optInt("max_bytes", &max_bytes); !st.ok()) return st;
    if (st = fields.finish(); !st.ok()) return st;
    if (!model::parseTransferDirection(direction, &e.direction)) {
      return absl::InvalidArgumentError(
          "artifact expectation: \"direction\" must be \"upload\" or \"download\"");
    }
    if (!model::parseArtifactPurpose(purpose, &e.purpose)) {
      return absl::InvalidArgumentError(
          "artifact expectation: \"purpose\" must be logs, bundle, file, package or shipment");
    }
    if (max_bytes < 0) {
      return absl::InvalidArgumentError("artifact expectation: \"max_bytes\" must be >= 0");
    }
    e.max_bytes = static_cast<uint64_t>(max_bytes);
    out.push_back(std::move(e));
  }
  return out;
}

json::object apiTokenJson(const ApiTokenView& t, int64_t now_ms) {
  json::object o;
  o["id"] = t.id;
  o["kind"] = "api";
  o["role"] = t.role;
  o["name"] = t.name;
  o["created_by"] = t.created_by;
  o["created_at"] = timeValue(t.created_at_ms);
  o["expires_at"] = timeValue(t.expires_at_ms);
  o["revoked"] = t.revoked;
  bool expired = t.expires_at_ms > 0 && now_ms >= t.expires_at_ms;
  o["state"] = t.revoked ? "revoked" : expired ? "expired" : "active";
  return o;
}

json::object enrollTokenJson(const EnrollTokenView& t, int64_t now_ms) {
  json::object o;
  o["id"] = t.id;
  o["kind"] = "enroll";
  o["uses_left"] = t.uses_left;
  o["labels"] = mapJson(t.labels);
  o["created_by"] = t.created_by;
  o["created_at"] = timeValue(t.created_at_ms);
  o["expires_at"] = timeValue(t.expires_at_ms);
  o["revoked"] = t.revoked;
  if (t.host_id.empty()) {
    o["host"] = nullptr;
  } else {
    o["host"] = t.host_id;
  }
  bool expired = t.expires_at_ms > 0 && now_ms >= t.expires_at_ms;
  o["state"] = t.revoked          ? "revoked"
               : expired          ? "expired"
               : t.uses_left == 0 ? "used_up"
                                  : "active";
  return o;
}

int httpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    case absl::StatusCode::kUnimplemented: return 501;
    default: return 500;
  }
}

std::string errorCodeName(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

ApiReply jsonReply(int status, const json::value& body) {
  ApiReply reply;
  reply.status = status;
  reply.body = json::serialize(body);
  return reply;
}

ApiReply errorReply(int http_status, std::string_view code, std::string_view message) {
  json::object error;
  error["code"] = code;
  // Messages quote what the client sent (ids from the URL, field names cut at 64 bytes): made
  // valid UTF-8 here, or the reply would not be JSON any client can parse.
  error["message"] = sanitizeUtf8(message);
  json::object body;
  body["error"] = std::move(error);
  ApiReply reply = jsonReply(http_status, body);
  if (http_status == 401) reply.headers.emplace_back("WWW-Authenticate", "Bearer");
  return reply;
}

absl::Status fieldRangeError(std::string message, std::string_view field, int64_t min,
                             int64_t max) {
  absl::Status status = absl::InvalidArgumentError(message);
  json::object details;
  details["field"] = field;
  details["min"] = min;
  details["max"] = max;
  status.SetPayload(kFieldRangePayload, absl::Cord(json::serialize(details)));
  return status;
}

ApiReply errorReply(const absl::Status& status) {
  if (status.GetPayload(kInvalidSelectorPayload).has_value()) {
    return errorReply(422, "invalid_selector", toStd(status.message()));
  }
  if (auto range = status.GetPayload(kFieldRangePayload)) {
    boost::system::error_code ec;
    json::value details = json::parse(std::string(*range), ec);
    if (!ec && details.is_object()) {
      json::object error = std::move(details.as_object());
      error["code"] = errorCodeName(status.code());
      error["message"] = sanitizeUtf8(toStd(status.message()));
      json::object body;
      body["error"] = std::move(error);
      return jsonReply(httpStatusFor(status), body);
    }
  }
  return errorReply(httpStatusFor(status), errorCodeName(status.code()), toStd(status.message()));
}

absl::StatusOr<json::object> parseJsonObject(std::string_view body) {
  if (body.empty()) {
    return absl::InvalidArgumentError("request body is empty: send a JSON object");
  }
  json::parse_options options;
  options.max_depth = 32;
  boost::system::error_code ec;
  json::value value = json::parse(body, ec, {}, options);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("request body is not valid JSON (", ec.message(), ")"));
  }
  if (!value.is_object()) {
    return absl::InvalidArgumentError("request body must be a JSON object");
  }
  return std::move(value.as_object());
}

FieldReader::FieldReader(const json::object& object, std::string what)
    : object_(object), what_(std::move(what)) {}

bool FieldReader::has(std::string_view key) const { return object_.contains(key); }

const json::value* FieldReader::find(std::string_view key) {
  seen_.emplace(key);
  auto it = object_.find(key);
  if (it == object_.end() || it->value().is_null()) return nullptr;
  return &it->value();
}

absl::Status FieldReader::wrongType(std::string_view key, std::string_view expected) const {
  return absl::InvalidArgumentError(
      absl::StrCat(what_, ": field \"", toAbsl(key), "\" must be ", toAbsl(expected)));
}

void FieldReader::allow(std::string_view key) { seen_.emplace(key); }

absl::Status FieldReader::optString(std::string_view key, std::string* out) {
  const json::value* v = find(key);
  if (!v) return absl::OkStatus();
  if (!v->is_string()) return wrongType(key, "a string");
  *out = std::string(v->get_string());
  return absl::OkStatus();
}

absl::Status FieldReader::optInt(std::string_view key, int64_t* out) {
  const json::value* v = find(key);
  if (!v) return absl::OkStatus();
  if (v->is_int64()) {
    *out = v->get_int64();
  } else if (v->is_uint64()) {
    if (v->get_uint64() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return wrongType(key, "an integer in range");
    }
    *out = static_cast<int64_t>(v->get_uint64());
  } else if (v->is_double()) {
    double d = v->get_double();
    // The range first: converting a double outside int64 (1e300) is undefined behaviour.
    if (!(d >= -9e18 && d <= 9e18) || d != static_cast<double>(static_cast<int64_t>(d))) {
      return wrongType(key, "an integer");
    }
    *out = static_cast<int64_t>(d);
  } else {
    return wrongType(key, "an integer");
  }
  return absl::OkStatus();
}

absl::Status FieldReader::optBool(std::string_view key, bool* out) {
  const json::value* v = find(key);
  if (!v) return absl::OkStatus();
  if (!v->is_bool()) return wrongType(key, "true or false");
  *out = v->get_bool();
  return absl::OkStatus();
}

absl::Status FieldReader::optStringList(std::string_view key, std::vector<std::string>* out) {
  const json::value* v = find(key);
  if (!v) return absl::OkStatus();
  if (!v->is_array()) return wrongType(key, "an array of strings");
  std::vector<std::string> list;
  list.reserve(v->get_array().size());
  for (const auto& item : v->get_array()) {
    if (!item.is_string()) return wrongType(key, "an array of strings");
    list.emplace_back(item.get_string());
  }
  *out = std::move(list);
  return absl::OkStatus();
}

absl::Status FieldReader::optStringMap(std::string_view key, model::StringMap* out) {
  const json::value* v = find(key);
  if (!v) return absl::OkStatus();
  if (!v->is_object()) return wrongType(key, "an object of string values");
  model::StringMap map;
  for (const auto& kv : v->get_object()) {
    if (!kv.value().is_string()) return wrongType(key, "an object of string values");
    map[std::string(kv.key())] = std::string(kv.value().get_string());
  }
  *out = std::move(map);
  return absl::OkStatus();
}

absl::Status FieldReader::optDuration(std::string_view key, std::string_view key_ms,
                                      int64_t* out_ms, int64_t max_ms) {
  if (has(key) && has(key_ms) && !object_.at(key).is_null() && !object_.at(key_ms).is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": give either \"", toAbsl(key),
                                                   "\" or \"", toAbsl(key_ms), "\", not both"));
  }
  auto range = [&](std::string_view field, std::string_view shown) {
    return fieldRangeError(absl::StrCat(what_, ": \"", toAbsl(field), "\" is ", toAbsl(shown),
                                        ": allowed 0 to ", common::formatDurationMs(max_ms), " (\"",
                                        toAbsl(key_ms), "\": 0..", max_ms, ")"),
                           field, 0, max_ms);
  };
  if (const json::value* v = find(key)) {
    if (!v->is_string()) {
      return wrongType(key, absl::StrCat("a duration string like \"30s\" (or use \"",
                                         toAbsl(key_ms), "\" for milliseconds)"));
    }
    std::string_view text(v->get_string());
    std::string shown =
        absl::StrCat("\"", toAbsl(text.substr(0, 64)), text.size() > 64 ? "..." : "", "\"");
    auto ms = common::parseDurationMs(text);
    if (!ms.ok()) {
      if (absl::IsOutOfRange(ms.status())) return range(key, shown);
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": \"", toAbsl(key), "\": ", ms.status().message()));
    }
    if (*ms > max_ms) return range(key, shown);
    *out_ms = *ms;
    return absl::OkStatus();
  }
  const json::value* v = find(key_ms);
  if (!v) return absl::OkStatus();
  // Every number is judged as given: 1e300 or 2^64 must not become something else first.
  if (v->is_int64()) {
    int64_t n = v->get_int64();
    if (n < 0 || n > max_ms) return range(key_ms, absl::StrCat(n));
    *out_ms = n;
  } else if (v->is_uint64()) {
    uint64_t n = v->get_uint64();
    if (n > static_cast<uint64_t>(max_ms)) return range(key_ms, absl::StrCat(n));
    *out_ms = static_cast<int64_t>(n);
  } else if (v->is_double()) {
    double d = v->get_double();
    if (!(d >= 0 && d <= static_cast<double>(max_ms))) {
      return range(key_ms, json::serialize(*v));
    }
    if (d != static_cast<double>(static_cast<int64_t>(d))) {
      return wrongType(key_ms, "a whole number of milliseconds");
    }
    *out_ms = static_cast<int64_t>(d);
  } else {
    return wrongType(key_ms, "a number of milliseconds");
  }
  return absl::OkStatus();
}

absl::Status FieldReader::finish() const {
  for (const auto& kv : object_) {
    if (!seen_.count(std::string_view(kv.key()))) {
      std::string key(kv.key().substr(0, 64));
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": unknown field \"", key, "\" (check its spelling)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CreateRunRequest> parseCreateRunBody(std::string_view body,
                                                    std::string_view header_key,
                                                    std::string created_by) {
  auto object = parseJsonObject(body);
  if (!object.ok()) return object.status();
  FieldReader fields(*object, "command request");
  CreateRunRequest run;
  absl::Status st;
  if (st = fields.optStringList("hosts", &run.host_ids); !st.ok()) return st;
  if (st = fields.optString("selector", &run.selector); !st.ok()) return st;
  if (st = fields.optStringList("argv", &run.exec.argv); !st.ok()) return st;
  if (st = fields.optString("script", &run.exec.script); !st.ok()) return st;
  if (st = fields.optStringMap("env", &run.exec.env); !st.ok()) return st;
  if (st = fields.optStringMap("secret_env", &run.exec.secret_env); !st.ok()) return st;
  if (st = fields.optString("cwd", &run.exec.cwd); !st.ok()) return st;
  if (st = fields.optDuration("timeout", "timeout_ms", &run.exec.timeout_ms,
                              common::kMaxCommandTimeoutMs);
      !st.ok()) {
    return st;
  }
  if (st = fields.optDuration("kill_grace", "kill_grace_ms", &run.exec.kill_grace_ms,
                              common::kMaxKillGraceMs);
      !st.ok()) {
    return st;
  }
  if (st = fields.optDuration("expire", "expire_ms", &run.expire_in_ms, common::kMaxExpiryMs);
      !st.ok()) {
    return st;
  }
  if (st = fields.optString("idempotency_key", &run.idempotency_key); !st.ok()) return st;
  if (const json::value* artifacts = fields.find("artifacts")) {
    auto parsed = parseExpectations(*artifacts);
    if (!parsed.ok()) return parsed.status();
    run.artifacts = *std::move(parsed);
  }
  if (st = fields.finish(); !st.ok()) return st;

  bool by_hosts = fields.has("hosts") && !object->at("hosts").is_null();
  bool by_selector = fields.has("selector") && !object->at("selector").is_null();
  if (by_hosts == by_selector) {
    return absl::InvalidArgumentError(
        by_hosts ? "command request: give \"hosts\" or \"selector\", not both"
                 : "command request: name the targets: \"hosts\" (a list of host ids) or "
                   "\"selector\" (like \"env=prod,role in (web,db)\")");
  }
  if (by_selector && run.selector.empty()) {
    // Not "every host": an empty selector is far more likely a script's empty variable.
    absl::Status empty = absl::InvalidArgumentError(
        "command request: \"selector\" is empty; give one like \"env=prod\", or list the "
        "hosts in \"hosts\"");
    empty.SetPayload(kInvalidSelectorPayload, absl::Cord(empty.message()));
    return empty;
  }
  if (!run.exec.argv.empty() && !run.exec.script.empty()) {
    return absl::InvalidArgumentError(
        "command request: give either \"argv\" or \"script\", not both");
  }
  if (!header_key.empty()) {
    if (!run.idempotency_key.empty() && run.idempotency_key != header_key) {
      return absl::InvalidArgumentError(
          "the Idempotency-Key header and the \"idempotency_key\" field differ: send one");
    }
    run.idempotency_key = std::string(header_key);
  }
  run.created_by = std::move(created_by);
  return run;
}

absl::StatusOr<LabelChange> parseLabelBody(std::string_view body) {
  auto object = parseJsonObject(body);
  if (!object.ok()) return object.status();
  FieldReader fields(*object, "label request");
  LabelChange change;
  absl::Status st;
  if (st = fields.optStringMap("set", &change.set); !st.ok()) return st;
  if (st = fields.optStringList("remove", &change.remove); !st.ok()) return st;
  if (st = fields.finish(); !st.ok()) return st;
  if (!fields.has("set") && !fields.has("remove")) {
    return absl::InvalidArgumentError(
        R"(label request: give "set" ({"key": "value"}) and/or "remove" (["key"]))");
  }
  for (const auto& key : change.remove) {
    if (change.set.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat("label request: '", key.substr(0, 64),
                                                     "' is both in \"set\" and in \"remove\""));
    }
  }
  return change;
}

namespace {

constexpr int64_t kDefaultEnrollTtlMs = 24 * 3600 * 1000LL;

absl::Status readEnrollToken(FieldReader& fields, TokenRequest* out) {
  out->ttl_ms = kDefaultEnrollTtlMs;
  absl::Status st;
  if (st = fields.optInt("uses", &out->uses); !st.ok()) return st;
  if (st = fields.optDuration("ttl", "ttl_ms", &out->ttl_ms, common::kMaxTokenTtlMs); !st.ok()) {
    return st;
  }
  if (st = fields.optStringMap("labels", &out->labels); !st.ok()) return st;
  if (st = fields.optString("host", &out->host_id); !st.ok()) return st;
  for (const char* key : {"role", "name"}) {
    if (fields.has(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token request: \"", key,
                       "\" applies to API tokens (\"kind\": \"api\"), "
                       "not to enrollment tokens"));
    }
  }
  return fields.finish();
}

absl::Status readApiToken(FieldReader& fields, TokenRequest* out) {
  std::string role_text;
  out->ttl_ms = 0;  // API tokens do not expire unless asked to
  absl::Status st;
  if (st = fields.optString("role", &role_text); !st.ok()) return st;
  if (st = fields.optString("name", &out->name); !st.ok()) return st;
  if (st = fields.optDuration("ttl", "ttl_ms", &out->ttl_ms, common::kMaxTokenTtlMs); !st.ok()) {
    return st;
  }
  for (const char* key : {"uses", "labels", "host"}) {
    if (fields.has(key)) {
      return absl::InvalidArgumentError(absl::StrCat("token request: \"", key,
                                                     "\" applies to enrollment tokens (\"kind\": "
                                                     "\"enroll\"), not to API tokens"));
    }
  }
  if (st = fields.finish(); !st.ok()) return st;
  if (!parseRole(role_text, &out->role)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token request: ",
        role_text.empty() ? std::string("\"role\" is required")
                          : absl::StrCat("unknown \"role\" '", role_text.substr(0, 32), "'"),
        ": use viewer (read only), operator (also run and cancel commands) or admin (also "
        "manage tokens and hosts)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenRequest> parseTokenBody(std::string_view body) {
  auto object = parseJsonObject(body);
  if (!object.ok()) return object.status();
  FieldReader fields(*object, "token request");
  std::string kind;
  if (auto st = fields.optString("kind", &kind); !st.ok()) return st;
  TokenRequest request;
  absl::Status st;
  if (kind == "enroll") {
    request.kind = TokenRequest::Kind::kEnroll;
    st = readEnrollToken(fields, &request);
  } else if (kind == "api") {
    request.kind = TokenRequest::Kind::kApi;
    st = readApiToken(fields, &request);
  } else {
    st = absl::InvalidArgumentError(absl::StrCat(
        "token request: ",
        kind.empty() ? std::string("\"kind\" is required")
                     : absl::StrCat("unknown \"kind\" '", kind.substr(0, 32), "'"),
        ": \"enroll\" for an agent enrollment token, \"api\" for an operator token with a "
        "\"role\""));
  }
  if (!st.ok()) return st;
  return request;
}

}  // namespace muster::server::http
