// Endpoint handlers of the REST API, one function per route; called by Api on a worker
// thread after authentication.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/control_plane.h"
#include "server/http/api.h"

namespace muster::server::http {

struct Context {
  ControlPlane& plane;
  const ApiRequest& request;
  Principal principal;                       // who is calling (from the bearer token)
  std::vector<std::string> segments;         // decoded path segments after /api/v1
  std::map<std::string, std::string> query;  // decoded query parameters (last one wins)
  const AgentInstall* install = nullptr;     // the agent installer, if musterd serves one

  const std::string* param(const std::string& key) const {
    auto it = query.find(key);
    return it == query.end() ? nullptr : &it->second;
  }
};

// Ids in paths and query parameters (host ids chosen by agents, ULIDs for the rest):
// [A-Za-z0-9._-]{1,128}, never "." or ".."; an InvalidArgument naming `kind` otherwise.
absl::Status checkId(std::string_view kind, std::string_view id);

// `limit` query parameter: 1..max_limit, `fallback` when absent.
absl::StatusOr<int> limitParam(const Context& ctx, int fallback, int max_limit);

ApiReply listHosts(Context& ctx);
ApiReply getHost(Context& ctx, const std::string& id);
// PUT/PATCH /api/v1/hosts/{id}/labels: {"set": {k: v}, "remove": [k]}.
ApiReply setHostLabels(Context& ctx, const std::string& id);
// DELETE /api/v1/hosts/{id}: decommission (credential revoked, open commands cancelled).
ApiReply deleteHost(Context& ctx, const std::string& id);

ApiReply createCommands(Context& ctx);
ApiReply listCommands(Context& ctx);
ApiReply getCommand(Context& ctx, const std::string& id);
ApiReply cancelCommand(Context& ctx, const std::string& id);
ApiReply getRun(Context& ctx, const std::string& id);
ApiReply cancelRun(Context& ctx, const std::string& id);

// Whole stored output as JSON, or (follow) the hand-over to an event stream.
ApiReply commandOutput(Context& ctx, const std::string& id, bool follow);
ApiReply createToken(Context& ctx);
ApiReply listTokens(Context& ctx);
// Revokes an API token or an enrollment token, whichever has the id.
ApiReply revokeToken(Context& ctx, const std::string& id);

// GET /api/v1/events: a page of the audit log, or (follow) the hand-over to an event stream.
ApiReply listEvents(Context& ctx, bool follow);

// Artifacts (handlers_artifacts.cc): list (?host, command, purpose, since, until, before,
// limit), show, delete, pin/unpin, and the content with Range.
ApiReply listArtifacts(Context& ctx);
ApiReply getArtifact(Context& ctx, const std::string& id);
ApiReply deleteArtifact(Context& ctx, const std::string& id);
ApiReply pinArtifact(Context& ctx, const std::string& id, bool pinned);
ApiReply artifactContent(Context& ctx, const std::string& id);

// GET /metrics: Prometheus text exposition format 0.0.4.
ApiReply metricsReply(ControlPlane& plane, const RequestStats* stats);

}  // namespace muster::server::http
