// Tokens: create (enrollment tokens for agents, API tokens with roles for operators), list
// (never secrets or hashes) and revoke.
#include "absl/strings/str_cat.h"
#include "crypto/enroll_token.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"
#include "server/http/install.h"

namespace muster::server::http {
namespace {

ApiReply createEnrollToken(Context& ctx, const TokenRequest& request) {
  if (!request.host_id.empty()) {
    if (auto st = checkId("host", request.host_id); !st.ok()) return errorReply(st);
  }
  auto token = ctx.plane.enrollment().createToken(request.uses, request.ttl_ms, request.labels,
                                                  ctx.principal.name, request.host_id);
  if (!token.ok()) return errorReply(token.status());
  boost::json::object body;
  body["id"] = token->record.id;
  body["kind"] = "enroll";
  // The token carries the CA's pin: an agent holding only the token can trust the server.
  const std::string& pin = ctx.plane.config().ca_sha256;
  body["token"] = crypto::formatEnrollToken(token->secret, pin);
  // The line that installs and enrolls an agent on a host (musterd serves the binary).
  if (ctx.install != nullptr && ctx.install->available() && ctx.install->fingerprint().ok()) {
    body["install_command"] = ctx.install->command(
        ctx.request.host, crypto::formatEnrollToken(token->secret, pin), token->record.host_id);
  } else {
    body["install_command"] = nullptr;
  }
  if (pin.empty()) {
    body["ca_sha256"] = nullptr;
  } else {
    body["ca_sha256"] = pin;
  }
  body["uses"] = token->record.uses_left;
  if (token->record.expires_at_ms > 0) {
    body["expires_at"] = rfc3339Ms(token->record.expires_at_ms);
  } else {
    body["expires_at"] = nullptr;
  }
  boost::json::object label_json;
  for (const auto& [k, v] : token->record.labels) label_json[k] = v;
  body["labels"] = std::move(label_json);
  if (token->record.host_id.empty()) {
    body["host"] = nullptr;
  } else {
    body["host"] = token->record.host_id;
  }
  ApiReply reply = jsonReply(201, body);
  reply.audit_target = token->record.id;
  reply.audit_host = token->record.host_id;
  reply.audit_detail = {{"kind", "enroll"}, {"uses", absl::StrCat(token->record.uses_left)}};
  return reply;
}

ApiReply createApiToken(Context& ctx, const TokenRequest& request) {
  auto token =
      ctx.plane.auth().create(request.role, request.name, request.ttl_ms, ctx.principal.name);
  if (!token.ok()) return errorReply(token.status());
  boost::json::object body = apiTokenJson(tokenView(token->record), ctx.plane.clock().nowMs());
  body["token"] = token->secret;
  ApiReply reply = jsonReply(201, body);
  reply.audit_target = token->record.id;
  reply.audit_detail = {
      {"kind", "api"}, {"role", token->record.role}, {"name", token->record.name}};
  return reply;
}

}  // namespace

ApiReply createToken(Context& ctx) {
  auto request = parseTokenBody(ctx.request.body);
  if (!request.ok()) return errorReply(request.status());
  if (request->kind == TokenRequest::Kind::kEnroll) return createEnrollToken(ctx, *request);
  return createApiToken(ctx, *request);
}

ApiReply listTokens(Context& ctx) {
  auto enroll = ctx.plane.queries().enrollTokens();
  if (!enroll.ok()) return errorReply(enroll.status());
  auto api = ctx.plane.queries().apiTokens();
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
  ApiReply reply = jsonReply(200, body);
  reply.audit_detail["kind"] = kind;
  return reply;
}

}  // namespace muster::server::http
