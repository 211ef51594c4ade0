// Api: URL parsing, authentication and the route table.
#include "server/http/api.h"

#include <spdlog/spdlog.h>

#include <boost/json/parse.hpp>
#include <boost/url/parse.hpp>
#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"
#include "server/http/install.h"

namespace muster::server::http {
namespace {

ApiReply methodNotAllowed(const ApiRequest& request, std::string_view allow) {
  ApiReply reply = errorReply(
      405, "method_not_allowed",
      absl::StrCat(request.method, " is not supported on this path; use ", toAbsl(allow)));
  reply.headers.emplace_back("Allow", std::string(allow));
  return reply;
}

ApiReply notFound(const std::vector<std::string>& segments) {
  std::string path;
  for (const auto& s : segments) absl::StrAppend(&path, "/", s.substr(0, 64));
  return errorReply(404, "not_found",
                    absl::StrCat("no such endpoint: ", path.substr(0, 200),
                                 " (the API lives under /api/v1; see docs/api.md)"));
}

struct RouteMatch {
  Route route = Route::kUnknown;
  const char* allow = "";  // methods the path supports
  bool method_ok = false;
};

// `s`: path segments after /api/v1.
RouteMatch matchRoute(const std::vector<std::string>& s, const std::string& method) {
  bool get = method == "GET" || method == "HEAD";
  bool post = method == "POST";
  bool del = method == "DELETE";
  bool put = method == "PUT" || method == "PATCH";
  auto is = [&s](size_t n, const char* first, const char* third = nullptr) {
    return s.size() == n && s[0] == first && (!third || s[2] == third);
  };
  if (is(1, "hosts")) return {Route::kListHosts, "GET", get};
  if (is(2, "hosts")) {
    return {del ? Route::kDeleteHost : Route::kGetHost, "GET, DELETE", get || del};
  }
  if (is(3, "hosts", "labels")) return {Route::kSetHostLabels, "PUT, PATCH", put};
  if (is(1, "commands")) {
    return {post ? Route::kCreateCommands : Route::kListCommands, "GET, POST", get || post};
  }
  if (is(2, "commands")) return {Route::kGetCommand, "GET", get};
  if (is(3, "commands", "cancel")) return {Route::kCancelCommand, "POST", post};
  if (is(3, "commands", "output")) return {Route::kCommandOutput, "GET", get};
  if (is(2, "runs")) return {Route::kGetRun, "GET", get};
  if (is(3, "runs", "cancel")) return {Route::kCancelRun, "POST", post};
  if (is(1, "tokens")) {
    return {post ? Route::kCreateToken : Route::kListTokens, "GET, POST", get || post};
  }
  if (is(2, "tokens")) return {Route::kRevokeToken, "DELETE", del};
  if (is(1, "events")) return {Route::kListEvents, "GET", get};
  if (is(1, "artifacts")) return {Route::kListArtifacts, "GET", get};
  if (is(2, "artifacts")) {
    return {del ? Route::kDeleteArtifact : Route::kGetArtifact, "GET, DELETE", get || del};
  }
  if (is(3, "artifacts", "pin")) return {Route::kPinArtifact, "POST", post};
  if (is(3, "artifacts", "unpin")) return {Route::kUnpinArtifact, "POST", post};
  if (is(3, "artifacts", "content")) return {Route::kArtifactContent, "GET", get};
  return {};
}

// The least role a route needs, and what it does (for the 403 message).
Role requiredRole(Route route, std::string_view* action) {
  switch (route) {
    case Route::kCreateCommands: *action = "running commands"; return Role::kOperator;
    case Route::kCancelCommand:
    case Route::kCancelRun: *action = "cancelling commands"; return Role::kOperator;
    case Route::kSetHostLabels: *action = "changing host labels"; return Role::kAdmin;
    case Route::kDeleteHost: *action = "removing hosts"; return Role::kAdmin;
    case Route::kCreateToken: *action = "creating tokens"; return Role::kAdmin;
    case Route::kListTokens: *action = "listing tokens"; return Role::kAdmin;
    case Route::kRevokeToken: *action = "revoking tokens"; return Role::kAdmin;
    // Who did what from where, token names, refused enrollments: as sensitive as the tokens.
    case Route::kListEvents: *action = "reading the audit log"; return Role::kAdmin;
    case Route::kDeleteArtifact: *action = "deleting artifacts"; return Role::kOperator;
    // Log bundles and packages may hold what a viewer may not see.
    case Route::kArtifactContent: *action = "downloading artifacts"; return Role::kOperator;
    case Route::kPinArtifact:
    case Route::kUnpinArtifact: *action = "pinning artifacts"; return Role::kOperator;
    default: *action = "reading"; return Role::kViewer;
  }
}

// What the id in the path of `route` names; nullptr for routes without one.
const char* pathIdKind(Route route) {
  switch (route) {
    case Route::kGetHost:
    case Route::kSetHostLabels:
    case Route::kDeleteHost: return "host";
    case Route::kGetCommand:
    case Route::kCancelCommand:
    case Route::kCommandOutput: return "command";
    case Route::kGetRun:
    case Route::kCancelRun: return "run";
    case Route::kRevokeToken: return "token";
    case Route::kGetArtifact:
    case Route::kDeleteArtifact:
    case Route::kPinArtifact:
    case Route::kUnpinArtifact:
    case Route::kArtifactContent: return "artifact";
    default: return nullptr;
  }
}

bool isMutating(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

// The audit kind of a mutating route; api.unknown for one that matched none (404, 405).
const char* auditKind(Route route) {
  switch (route) {
    case Route::kCreateCommands: return event_kind::kCommandCreate;
    case Route::kCancelCommand: return event_kind::kCommandCancel;
    case Route::kCancelRun: return event_kind::kRunCancel;
    case Route::kSetHostLabels: return event_kind::kHostLabels;
    case Route::kDeleteHost: return event_kind::kHostDelete;
    case Route::kCreateToken: return event_kind::kTokenCreate;
    case Route::kRevokeToken: return event_kind::kTokenDelete;
    case Route::kDeleteArtifact: return event_kind::kArtifactDelete;
    case Route::kPinArtifact: return event_kind::kArtifactPin;
    case Route::kUnpinArtifact: return event_kind::kArtifactUnpin;
    default: return event_kind::kApiUnknown;
  }
}

bool wantsFollow(const Context& ctx) {
  if (const std::string* f = ctx.param("follow")) {
    return *f == "1" || *f == "true" || *f == "yes";
  }
  return absl::StrContains(absl::AsciiStrToLower(ctx.request.accept), "text/event-stream");
}

}  // namespace

absl::Status checkId(std::string_view kind, std::string_view id) {
  if (common::isValidAgentId(id)) return absl::OkStatus();
  std::string shown = absl::CHexEscape(toAbsl(id.substr(0, 140)));
  return absl::InvalidArgumentError(
      absl::StrCat("invalid ", toAbsl(kind), " id '", shown,
                   "': ids are 1 to 128 of A-Z a-z 0-9 . _ - and not \".\" or \"..\"",
                   kind == "host" ? " (`muster hosts` lists them)" : ""));
}

std::string_view routeName(Route route) {
  switch (route) {
    case Route::kUnknown: return "unknown";
    case Route::kHealthz: return "GET /healthz";
    case Route::kReadyz: return "GET /readyz";
    case Route::kListHosts: return "GET /api/v1/hosts";
    case Route::kGetHost: return "GET /api/v1/hosts/{id}";
    case Route::kCreateCommands: return "POST /api/v1/commands";
    case Route::kListCommands: return "GET /api/v1/commands";
    case Route::kGetCommand: return "GET /api/v1/commands/{id}";
    case Route::kCancelCommand: return "POST /api/v1/commands/{id}/cancel";
    case Route::kCommandOutput: return "GET /api/v1/commands/{id}/output";
    case Route::kFollowOutput: return "GET /api/v1/commands/{id}/output (follow)";
    case Route::kGetRun: return "GET /api/v1/runs/{id}";
    case Route::kCancelRun: return "POST /api/v1/runs/{id}/cancel";
    case Route::kSetHostLabels: return "PUT /api/v1/hosts/{id}/labels";
    case Route::kDeleteHost: return "DELETE /api/v1/hosts/{id}";
    case Route::kCreateToken: return "POST /api/v1/tokens";
    case Route::kListTokens: return "GET /api/v1/tokens";
    case Route::kRevokeToken: return "DELETE /api/v1/tokens/{id}";
    case Route::kMetrics: return "GET /metrics";
    case Route::kListEvents: return "GET /api/v1/events";
    case Route::kFollowEvents: return "GET /api/v1/events (follow)";
    case Route::kInstallScript: return "GET /install/agent.sh";
    case Route::kInstallAgent: return "GET /install/muster-agent";
    case Route::kListArtifacts: return "GET /api/v1/artifacts";
    case Route::kGetArtifact: return "GET /api/v1/artifacts/{id}";
    case Route::kDeleteArtifact: return "DELETE /api/v1/artifacts/{id}";
    case Route::kPinArtifact: return "POST /api/v1/artifacts/{id}/pin";
    case Route::kUnpinArtifact: return "POST /api/v1/artifacts/{id}/unpin";
    case Route::kArtifactContent: return "GET /api/v1/artifacts/{id}/content";
    case Route::kCount: break;
  }
  return "unknown";
}

Api::Api(ControlPlane& plane, const RequestStats* stats,
         std::shared_ptr<const AgentInstall> install)
    : plane_(plane), stats_(stats), install_(std::move(install)) {}

ApiReply Api::serveInstall(const ApiRequest& request, Route route) const {
  if (request.method != "GET" && request.method != "HEAD") return methodNotAllowed(request, "GET");
  const std::string none = "musterd serves no agent installer: start it with --agent-binary PATH";
  if (!install_ || !install_->available()) return errorReply(404, "not_found", none);
  if (route == Route::kInstallScript) {
    auto script = install_->script(request.host);
    if (!script.ok()) return errorReply(404, "not_found", std::string(script.status().message()));
    ApiReply reply;
    reply.body = *std::move(script);
    reply.content_type = "text/x-shellscript; charset=utf-8";
    return reply;
  }
  auto binary = install_->fingerprint();
  if (!binary.ok()) return errorReply(404, "not_found", std::string(binary.status().message()));
  ApiReply reply;
  reply.file_path = install_->binary_path;
  reply.content_type = "application/octet-stream";
  reply.headers.emplace_back("X-Muster-Sha256", binary->sha256);
  return reply;
}

std::optional<ApiReply> Api::tryInline(const ApiRequest& request, Route* route) const {
  std::string_view path = request.target;
  path = path.substr(0, path.find('?'));
  if (path == "/healthz") {
    *route = Route::kHealthz;
    if (request.method != "GET" && request.method != "HEAD") {
      return methodNotAllowed(request, "GET");
    }
    return jsonReply(200, boost::json::object{{"status", "ok"}});
  }
  return std::nullopt;
}

struct Api::Caller {
  bool api_path = false;  // under /api/v1
  std::optional<Principal> principal;
  std::string path_id;  // the id segment of the route, when it has one
  std::string path;     // for api.unknown
};

ApiReply Api::handle(const ApiRequest& request, Route* route) {
  *route = Route::kUnknown;
  Caller caller;
  ApiReply reply;
  try {
    reply = dispatch(request, route, &caller);
  } catch (const std::exception& e) {
    spdlog::error("http: {} {} failed with an exception: {}", request.method,
                  request.target.substr(0, 200), e.what());
    reply = errorReply(500, "internal",
                       "internal error while handling the request; see the server log");
  }
  if (caller.api_path && isMutating(request.method)) {
    try {
      recordAudit(request, *route, caller, reply);
    } catch (const std::exception& e) {
      spdlog::error("http: recording the audit event of {} {} failed: {}", request.method,
                    request.target.substr(0, 200), e.what());
    }
  }
  return reply;
}

void Api::recordAudit(const ApiRequest& request, Route route, const Caller& caller,
                      const ApiReply& reply) {
  AuditRecord r;
  r.kind = auditKind(route);
  if (caller.principal) {
    r.actor.name = caller.principal->name;
    r.actor.id = caller.principal->token_id;
  }
  r.actor.source = request.peer;
  r.target = reply.audit_target.empty() ? caller.path_id : reply.audit_target;
  r.host_id = reply.audit_host;
  if (r.host_id.empty() && (route == Route::kSetHostLabels || route == Route::kDeleteHost)) {
    r.host_id = caller.path_id;
  }
  r.result = absl::StrCat(reply.status);
  r.detail = reply.audit_detail;
  if (r.kind == std::string_view(event_kind::kApiUnknown)) {
    r.detail["method"] = request.method.substr(0, 16);
    r.detail["path"] = caller.path.substr(0, 200);
  }
  if (reply.status >= 400) {
    boost::system::error_code ec;
    boost::json::value body = boost::json::parse(reply.body, ec);
    if (!ec && body.is_object()) {
      if (const auto* error = body.as_object().if_contains("error"); error && error->is_object()) {
        if (const auto* m = error->as_object().if_contains("message"); m && m->is_string()) {
          r.detail["error"] = std::string(m->as_string());
        }
      }
    }
  }
  plane_.audit().record(std::move(r));
}

ApiReply Api::dispatch(const ApiRequest& request, Route* route, Caller* caller) {
  auto url = boost::urls::parse_origin_form(request.target);
  if (!url) {
    return errorReply(400, "invalid_argument", "malformed request target");
  }
  std::vector<std::string> segments;
  for (auto seg : url->segments()) segments.emplace_back(seg);
  std::map<std::string, std::string> query;
  for (auto param : url->params()) query[param.key] = param.value;

  if (segments.size() == 1 && segments[0] == "readyz") {
    *route = Route::kReadyz;
    if (request.method != "GET" && request.method != "HEAD")
      return methodNotAllowed(request, "GET");
    absl::Status ping = plane_.queries().ready();
    if (!ping.ok()) {
      return errorReply(503, "unavailable", absl::StrCat("store not ready: ", ping.message()));
    }
    return jsonReply(200, boost::json::object{{"status", "ready"}});
  }
  if (segments.size() == 1 && segments[0] == "metrics") {
    *route = Route::kMetrics;
    if (request.method != "GET" && request.method != "HEAD")
      return methodNotAllowed(request, "GET");
    return metricsReply(plane_, stats_);
  }
  // The installer needs no token: a host being installed has none yet, and neither the
  // binary nor the script holds a secret (the enrollment token is the installer's input).
  if (segments.size() == 2 && segments[0] == "install" &&
      (segments[1] == "agent.sh" || segments[1] == "muster-agent")) {
    *route = segments[1] == "agent.sh" ? Route::kInstallScript : Route::kInstallAgent;
    return serveInstall(request, *route);
  }
  if (segments.size() < 2 || segments[0] != "api" || segments[1] != "v1") {
    return notFound(segments);
  }

  segments.erase(segments.begin(), segments.begin() + 2);
  caller->api_path = true;
  for (const auto& seg : segments) absl::StrAppend(&caller->path, "/", seg.substr(0, 64));
  // The route is known before authentication (for the counters), but answered only after
  // it, so without a valid token nothing about the API is revealed.
  RouteMatch match = matchRoute(segments, request.method);
  *route = match.route;
  if (const char* kind = pathIdKind(match.route); kind && checkId(kind, segments[1]).ok()) {
    caller->path_id = segments[1];
  }

  absl::string_view auth = request.authorization;
  if (auth.size() < 7 || !absl::EqualsIgnoreCase(auth.substr(0, 7), "bearer ")) {
    return errorReply(401, "unauthenticated",
                      "missing bearer token: pass --token or set MUSTER_TOKEN (musterd writes "
                      "the admin token to <data-dir>/admin.token)");
  }
  std::string_view bearer = toStd(absl::StripAsciiWhitespace(auth.substr(7)));
  auto principal = plane_.auth().authenticate(bearer);
  if (!principal.ok()) return errorReply(principal.status());
  caller->principal = *principal;

  if (match.route == Route::kUnknown) {
    std::vector<std::string> full = {"api", "v1"};
    full.insert(full.end(), segments.begin(), segments.end());
    return notFound(full);
  }
  if (!match.method_ok) return methodNotAllowed(request, match.allow);
  std::string_view action;
  Role needed = requiredRole(match.route, &action);
  if (auto st = OperatorAuth::require(*principal, needed, action); !st.ok()) {
    return errorReply(st);
  }

  // Segments arrive percent-decoded: "%2e%2e" is "..", "a%2Fb" is "a/b". Neither is an id.
  if (const char* kind = pathIdKind(match.route)) {
    if (auto st = checkId(kind, segments[1]); !st.ok()) return errorReply(st);
  }

  Context ctx{plane_,           request,       *std::move(principal), std::move(segments),
              std::move(query), install_.get()};
  const auto& seg = ctx.segments;
  switch (*route) {
    case Route::kListHosts: return listHosts(ctx);
    case Route::kGetHost: return getHost(ctx, seg[1]);
    case Route::kCreateCommands: return createCommands(ctx);
    case Route::kListCommands: return listCommands(ctx);
    case Route::kGetCommand: return getCommand(ctx, seg[1]);
    case Route::kCancelCommand: return cancelCommand(ctx, seg[1]);
    case Route::kCommandOutput: {
      bool follow = wantsFollow(ctx);
      if (follow) *route = Route::kFollowOutput;
      return commandOutput(ctx, seg[1], follow);
    }
    case Route::kGetRun: return getRun(ctx, seg[1]);
    case Route::kCancelRun: return cancelRun(ctx, seg[1]);
    case Route::kSetHostLabels: return setHostLabels(ctx, seg[1]);
    case Route::kDeleteHost: return deleteHost(ctx, seg[1]);
    case Route::kCreateToken: return createToken(ctx);
    case Route::kListTokens: return listTokens(ctx);
    case Route::kRevokeToken: return revokeToken(ctx, seg[1]);
    case Route::kListEvents: {
      bool follow = wantsFollow(ctx);
      if (follow) *route = Route::kFollowEvents;
      return listEvents(ctx, follow);
    }
    case Route::kListArtifacts: return listArtifacts(ctx);
    case Route::kGetArtifact: return getArtifact(ctx, seg[1]);
    case Route::kDeleteArtifact: return deleteArtifact(ctx, seg[1]);
    case Route::kPinArtifact: return pinArtifact(ctx, seg[1], true);
    case Route::kUnpinArtifact: return pinArtifact(ctx, seg[1], false);
    case Route::kArtifactContent: return artifactContent(ctx, seg[1]);
    default: return notFound(seg);
  }
}

}  // namespace muster::server::http
