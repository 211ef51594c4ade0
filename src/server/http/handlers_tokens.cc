// Tokens: create (enrollment tokens for agents, API tokens with roles for operators), list
// (never secrets or hashes) and revoke.
#include "absl/strings/str_cat.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {
namespace {

constexpr int64_t kDefaultEnrollTtlMs = 24 * 3600 * 1000LL;

ApiReply createEnrollToken(Context& ctx, FieldReader& fields) {
  int64_t uses = 1;
  int64_t ttl_ms = kDefaultEnrollTtlMs;
  model::StringMap labels;
  absl::Status st;
  if (st = fields.optInt("uses", &uses); !st.ok()) return errorReply(st);
  if (st = fields.optDuration("ttl", "ttl_ms", &ttl_ms); !st.ok()) return errorReply(st);
  if (st = fields.optStringMap("labels", &labels); !st.ok()) return errorReply(st);
  for (const char* key : {"role", "name"}) {
    if (fields.has(key)) {
      return errorReply(
          absl::InvalidArgumentError(absl::StrCat("token request: \"", key,
                                                  "\" applies to API tokens (\"kind\": \"api\"), "
                                                  "not to enrollment tokens")));
    }
  }
  if (st = fields.finish(); !st.ok()) return errorReply(st);
  auto token = ctx.plane.enrollment().createToken(uses, ttl_ms, labels, ctx.principal.name);
  if (!token.ok()) return errorReply(token.status());
  boost::json::object body;
  body["id"] = token->record.id;
  body["kind"] = "enroll";
  body["token"] = token->secret;
  body["uses"] = token->record.uses_left;
  if (token->record.expires_at_ms > 0) {
    body["expires_at"] = rfc3339Ms(token->record.expires_at_ms);
  } else {
    body["expires_at"] = nullptr;
  }
  boost::json::object label_json;
  for (const auto& [k, v] : token->record.labels) label_json[k] = v;
  body["labels"] = std::move(label_json);
  return jsonReply(201, body);
}

ApiReply createApiToken(Context& ctx, FieldReader& fields) {
  std::string role_text, name;
  int64_t ttl_ms = 0;  // API tokens do not expire unless asked to
  absl::Status st;
  if (st = fields.optString("role", &role_text); !st.ok()) return errorReply(st);
  if (st = fields.optString("name", &name); !st.ok()) return errorReply(st);
  if (st = fields.optDuration("ttl", "ttl_ms", &ttl_ms); !st.ok()) return errorReply(st);
  for (const char* key : {"uses", "labels"}) {
    if (fields.has(key)) {
      return errorReply(
          absl::InvalidArgumentError(absl::StrCat("token request: \"", key,
                                                  "\" applies to enrollment tokens (\"kind\": "
                                                  "\"enroll\"), not to API tokens")));
    }
  }
  if (st = fields.finish(); !st.ok()) return errorReply(st);
  Role role;
  if (!parseRole(role_text, &role)) {
    return errorReply(absl::InvalidArgumentError(absl::StrCat(
        "token request: ",
        role_text.empty() ? std::string("\"role\" is required")
                          : absl::StrCat("unknown \"role\" '", role_text.substr(0, 32), "'"),
        ": use viewer (read only), operator (also run and cancel commands) or admin (also "
        "manage tokens and hosts)")));
  }
  auto token = ctx.plane.auth().create(role, name, ttl_ms, ctx.principal.name);
  if (!token.ok()) return errorReply(token.status());
  boost::json::object body = apiTokenJson(token->record, ctx.plane.clock().nowMs());
  body["token"] = token->secret;
  return jsonReply(201, body);
}

}  // namespace

ApiReply createToken(Context& ctx) {
  auto object = parseJsonObject(ctx.request.body);
  if (!object.ok()) return errorReply(object.status());
  FieldReader fields(*object, "token request");
  std::string kind;
  if (auto st = fields.optString("kind", &kind); !st.ok()) return errorReply(st);
  if (kind == "enroll") return createEnrollToken(ctx, fields);
  if (kind == "api") return createApiToken(ctx, fields);
  return errorReply(absl::InvalidArgumentError(absl::StrCat(
      "token request: ",
      kind.empty() ? std::string("\"kind\" is required")
                   : absl::StrCat("unknown \"kind\" '", kind.substr(0, 32), "'"),
      ": \"enroll\" for an agent enrollment token, \"api\" for an operator token with a "
      "\"role\"")));
}

ApiReply listTokens(Context& ctx) {
  auto enroll = ctx.plane.enrollment().listTokens();
  if (!enroll.ok()) return errorReply(enroll.status());
  auto api = ctx.plane.auth().list();
  if (!api.ok()) return errorReply(api.status());
  int64_t now = ctx.plane.clock().nowMs();
  boost::json::array enroll_json, api_json;
  for (const auto& t : *enroll) enroll_json.push_back(enrollTokenJson(t, now));
  for (const auto& t : *api) api_json.push_back(apiTokenJson(t, now));
  boost::json::object body;
  body["enroll"] = std::move(enroll_json);
  body["api"] = std::move(api_json);
  return jsonReply(200, body);
}

ApiReply revokeToken(Context& ctx, const std::string& id) {
  // Both kinds are ULIDs in one namespace; try the API tokens first.
  std::string kind = "api";
  absl::Status st = ctx.plane.auth().revoke(id);
  if (absl::IsNotFound(st)) {
    kind = "enroll";
    st = ctx.plane.enrollment().revokeToken(id);
  }
  if (absl::IsNotFound(st)) {
    return errorReply(absl::NotFoundError(
        absl::StrCat("no token with id '", id.substr(0, 140), "': `muster token ls` lists them")));
  }
  if (!st.ok()) return errorReply(st);
  boost::json::object body;
  body["id"] = id;
  body["kind"] = kind;
  body["revoked"] = true;
  return jsonReply(200, body);
}

}  // namespace muster::server::http
