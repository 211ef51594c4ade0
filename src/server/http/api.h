// The REST API as plain functions: request in, reply out. Runs on worker threads (it may
// block on the store); knows nothing of sockets, Beast or Asio.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/event.h"
#include "server/core/control_plane.h"

namespace muster::server::http {

enum class Route {
  kUnknown = 0,
  kHealthz,
  kReadyz,
  kListHosts,
  kGetHost,
  kCreateCommands,
  kListCommands,
  kGetCommand,
  kCancelCommand,
  kCommandOutput,
  kFollowOutput,
  kGetRun,
  kCancelRun,
  kSetHostLabels,
  kDeleteHost,
  kCreateToken,
  kListTokens,
  kRevokeToken,
  kMetrics,
  kListEvents,
  kFollowEvents,
  kInstallScript,
  kInstallAgent,
  kListArtifacts,
  kGetArtifact,
  kDeleteArtifact,
  kPinArtifact,
  kUnpinArtifact,
  kArtifactContent,
  kCount,  // number of routes, not a route
};
std::string_view routeName(Route route);

struct ApiRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // origin-form request target: path and query
  std::string authorization;
  std::string idempotency_key;
  std::string accept;
  std::string last_event_id;  // an event stream resuming (output: "STDOUT,STDERR"; events: an id)
  std::string body;
  std::string peer;   // the client's address ("127.0.0.1:53412"), for the audit log
  std::string host;   // the Host header (the install one-liner names musterd as reached)
  std::string range;  // the Range header
};

// Switches the connection to a Server-Sent Events stream of a command's output.
struct FollowSpec {
  model::Command command;  // as read when the request was answered
  bool want_stdout = true;
  bool want_stderr = true;
  // Resuming: bytes of each stream the client already has (nothing before them is sent).
  uint64_t stdout_offset = 0;
  uint64_t stderr_offset = 0;
};

// Switches the connection to a Server-Sent Events stream of the audit log: the stored events
// after `query.after_id` (if any), then live ones, each matching the query's filters.
struct EventFollowSpec {
  model::EventQuery query;
};

struct ApiReply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<FollowSpec> follow;
  std::optional<EventFollowSpec> follow_events;
  // Sent as the body instead of `body` (a file too large to hold in memory: the agent binary).
  std::string file_path;
  // A part of file_path only (a Range request): from this offset, this many bytes.
  uint64_t file_offset = 0;
  std::optional<uint64_t> file_length;
  // For the audit event of a mutating call, where the path does not say it all: what was
  // created (a run, a token), the host concerned, and a little detail.
  std::string audit_target;
  std::string audit_host;
  model::StringMap audit_detail;
};

class RequestStats;
class AgentInstall;

// Every POST, PUT, PATCH and DELETE under /api/v1 is recorded in the audit log once answered
// (refusals too: 401, 403, 404, 4xx, with the status as the result).
// Every /api/v1 request is authenticated with an operator token (ControlPlane::auth()) and
// checked against the role its route needs: viewer reads, operator also runs and cancels
// commands, admin also manages tokens and hosts. /healthz, /readyz and /metrics need none.
class Api {
 public:
  // `stats` (may be null) feeds the request counters of /metrics. `install` (may be null):
  // what GET /install/agent.sh and /install/muster-agent serve.
  Api(ControlPlane& plane, const RequestStats* stats,
      std::shared_ptr<const AgentInstall> install = nullptr);

  // Routes that never block (liveness); std::nullopt when the request needs a worker.
  std::optional<ApiReply> tryInline(const ApiRequest& request, Route* route) const;
  // Everything else. May block: call on a worker thread. Never throws.
  ApiReply handle(const ApiRequest& request, Route* route);

  ControlPlane& plane() { return plane_; }

 private:
  struct Caller;  // who called, as far as dispatch found out
  ApiReply dispatch(const ApiRequest& request, Route* route, Caller* caller);
  void recordAudit(const ApiRequest& request, Route route, const Caller& caller,
                   const ApiReply& reply);

  ApiReply serveInstall(const ApiRequest& request, Route route) const;

  ControlPlane& plane_;
  const RequestStats* stats_;
  std::shared_ptr<const AgentInstall> install_;
};

}  // namespace muster::server::http
