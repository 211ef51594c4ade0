// POST /api/v1/tokens: enrollment tokens (operator tokens with roles come with issue 3).
#include "absl/strings/str_cat.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {

ApiReply createToken(Context& ctx) {
  auto object = parseJsonObject(ctx.request.body);
  if (!object.ok()) return errorReply(object.status());
  FieldReader fields(*object, "token request");
  std::string kind;
  int64_t uses = 1;
  int64_t ttl_ms = 24 * 3600 * 1000LL;
  model::StringMap labels;
  absl::Status st;
  if (st = fields.optString("kind", &kind); !st.ok()) return errorReply(st);
  if (st = fields.optInt("uses", &uses); !st.ok()) return errorReply(st);
  if (st = fields.optDuration("ttl", "ttl_ms", &ttl_ms); !st.ok()) return errorReply(st);
  if (st = fields.optStringMap("labels", &labels); !st.ok()) return errorReply(st);
  if (st = fields.finish(); !st.ok()) return errorReply(st);
  if (kind.empty()) {
    return errorReply(absl::InvalidArgumentError(
        "token request: \"kind\" is required (\"enroll\" for an agent enrollment token)"));
  }
  if (kind != "enroll") {
    // TODO(issue 3): operator API tokens with roles (viewer, operator, admin).
    return errorReply(absl::InvalidArgumentError(
        absl::StrCat("token request: unsupported \"kind\" '", kind.substr(0, 32),
                     "': only \"enroll\" tokens can be created for now")));
  }
  auto token = ctx.plane.enrollment().createToken(uses, ttl_ms, labels, ctx.principal);
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

}  // namespace muster::server::http
