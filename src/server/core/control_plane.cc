// ControlPlane: wiring of the core services and agent link events.
#include "server/core/control_plane.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"

namespace muster::server {

ControlPlane::ControlPlane(store::Store& store, common::Executor& slow_path,
                           const common::Clock& clock, CoreConfig config)
    : clock_(clock),
      config_(config),
      audit_(store, clock, config_.max_store_backlog),
      janitor_(clock),
      hosts_(store, clock, config_),
      commands_(store, hosts_, bus_, slow_path, clock, config_),
      enrollment_(store, hosts_, clock, audit_),
      auth_(store, clock),
      queries_(store, commands_) {
  janitor_.add(SweepTask{
      .name = "events",
      .retention_ms = config_.events_retention_ms,
      .sweep_batch = [&store](int64_t cutoff_ms, int64_t max_rows) -> absl::StatusOr<int64_t> {
        auto r = store.writeAndWait(
            store::DeleteEventsBefore{.before_ms = cutoff_ms, .max_rows = max_rows});
        if (!r.status.ok()) return r.status;
        return r.rows;
      },
      .batch_rows = 1000});
}

absl::StatusOr<model::Host> ControlPlane::decommission(const std::string& host_id,
                                                       const Actor& by) {
  auto host = hosts_.revoke(host_id);
  if (!host.ok()) return host.status();
  audit_.record(AuditRecord{.kind = event_kind::kLinkRevoked,
                            .actor = by,
                            .target = host_id,
                            .host_id = host_id,
                            .result = kResultOk,
                            .detail = {}});
  commands_.cancelAllForHost(host_id, "host decommissioned");
  return host;
}

absl::Status ControlPlane::start() {
  if (auto st = hosts_.load(); !st.ok()) return st;
  return commands_.load();
}

absl::Status ControlPlane::authenticate(const std::string& agent_id,
                                        const std::string& credential) const {
  if (!common::isValidAgentId(agent_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid agent id '", agent_id.substr(0, 140),
                                                   "': ids match [A-Za-z0-9._-]{1,128}"));
  }
  return hosts_.authenticate(agent_id, credential);
}

absl::Status ControlPlane::openStream(const std::shared_ptr<Session>& session,
                                      const std::string& credential,
                                      const std::string& client_cert_sha256) {
  if (!accepting_) return absl::UnavailableError("server is shutting down; reconnect later");
  commands_.metrics().streams_opened.fetch_add(1, std::memory_order_relaxed);
  if (!common::isValidAgentId(session->agentId())) {
    return absl::InvalidArgumentError(absl::StrCat("invalid agent id '",
                                                   session->agentId().substr(0, 140),
                                                   "': ids match [A-Za-z0-9._-]{1,128}"));
  }
  absl::Status st = hosts_.openStream(session, credential, client_cert_sha256);
  if (absl::IsUnauthenticated(st) || absl::IsPermissionDenied(st)) {
    // A revoked agent retries every 5 minutes, a wrong one may loop: rate-limited per id.
    audit_.recordLimited(
        absl::StrCat("stream:", session->agentId()),
        AuditRecord{.kind = event_kind::kLinkRefused,
                    .actor = Actor{.name = session->agentId(), .id = "", .source = ""},
                    .target = session->agentId(),
                    .host_id = session->agentId(),
                    .result = absl::IsUnauthenticated(st) ? "unauthenticated" : "permission_denied",
                    .detail = {{"stage", "stream"}, {"message", std::string(st.message())}}});
  }
  return st;
}

absl::Status ControlPlane::onHello(const std::shared_ptr<Session>& session,
                                   const HelloInfo& hello) {
  if (!accepting_) return absl::UnavailableError("server is shutting down; reconnect later");
  if (hello.agent_id != session->agentId()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hello names agent '", hello.agent_id.substr(0, 140),
                     "' but the stream authenticated as '", session->agentId(), "'"));
  }
  if (hello.version.size() > 128 || hello.facts.size() > 256 || hello.labels.size() > 256) {
    return absl::InvalidArgumentError("hello too large: at most 256 facts and 256 labels");
  }
  for (const auto& [k, v] : hello.labels) {
    if (!common::isValidLabelKey(k) || !common::isValidLabelValue(v)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label '", k.substr(0, 70), "'"));
    }
  }
  for (const auto& [k, v] : hello.facts) {
    if (k.size() > 128 || v.size() > 4096) {
      return absl::InvalidArgumentError(absl::StrCat("fact '", k.substr(0, 70), "' too large"));
    }
  }
  if (hosts_.connectedCount() >= config_.max_agents && !hosts_.sessionFor(hello.agent_id)) {
    agents_refused_++;
    int64_t now = clock_.steadyMs();
    int64_t last = last_refusal_log_ms_.load();
    if (now - last >= 10'000 && last_refusal_log_ms_.compare_exchange_strong(last, now)) {
      spdlog::warn(
          "agent limit reached ({} connected): refusing new agents ({} refused so far); "
          "raise --max-agents with the descriptor limit, or add a replica",
          config_.max_agents, agents_refused_.load());
    }
    return absl::ResourceExhaustedError(
        absl::StrCat("server at its agent limit (", config_.max_agents, "): retry later"));
  }
  // Welcome goes first (nothing may reach the agent before it); if the host was revoked or
  // re-enrolled since the stream authenticated, attach refuses and the stream ends.
  session->send(WelcomeMsg{session->sessionId(), config_.heartbeat_interval_ms, clock_.nowMs(),
                           reconnectWindowMs(hosts_.knownCount())});
  if (auto st = hosts_.attach(session, hello); !st.ok()) return st;
  spdlog::info("agent {} online (stream {}, version {}, {} in flight, {} unacked)", hello.agent_id,
               session->sessionId(), hello.version, hello.in_flight_command_ids.size(),
               hello.unacked_command_ids.size());
  session->phase_.store(Session::kLive, std::memory_order_release);
  commands_.onAgentConnected(session);
  return absl::OkStatus();
}

absl::Status ControlPlane::onAgentMessage(const std::shared_ptr<Session>& session,
                                          AgentEvent event) {
  if (auto* hello = std::get_if<HelloInfo>(&event)) {
    Session::Phase awaiting = Session::kAwaitingHello;
    if (!session->phase_.compare_exchange_strong(awaiting, Session::kHelloReceived,
                                                 std::memory_order_acq_rel)) {
      return absl::FailedPreconditionError("Hello sent twice on one stream");
    }
    return onHello(session, *hello);
  }
  switch (session->phase_.load(std::memory_order_acquire)) {
    case Session::kAwaitingHello:
      return absl::FailedPreconditionError("the first message on the link must be Hello");
    case Session::kHelloReceived:
      return absl::FailedPreconditionError(
          "the Hello on this stream was refused: open a new stream");
    case Session::kLive: break;
  }
  struct Dispatch {
    ControlPlane& plane;
    const std::shared_ptr<Session>& session;
    void operator()(HelloInfo&) {}  // handled above
    void operator()(HeartbeatMsg& m) { plane.onHeartbeat(session, m.metrics); }
    void operator()(AcceptedMsg& m) { plane.commands_.onAccepted(session, m.command_id); }
    void operator()(OutputMsg& m) { plane.commands_.onOutput(session, std::move(m.chunk)); }
    void operator()(ResultMsg& m) { plane.commands_.onResult(session, std::move(m.result)); }
  };
  std::visit(Dispatch{*this, session}, event);
  return absl::OkStatus();
}

void ControlPlane::onStreamClosed(const std::shared_ptr<Session>& session,
                                  const absl::Status& why) {
  // Never said Hello: it was never any host's live link (tick() forgets it as pending).
  // Otherwise detach() acts only if it still is the live link (not replaced, not refused).
  if (!session->helloReceived()) return;
  onDisconnect(*session, why);
}

int64_t ControlPlane::reconnectWindowMs(size_t agents) const {
  if (config_.reconnect_rate_per_s <= 0) return 0;
  constexpr int64_t kMinMs = 1'000, kMaxMs = 60'000;  // the agent's own base and cap
  int64_t ms = static_cast<int64_t>(agents) * 1000 / config_.reconnect_rate_per_s;
  return std::clamp(ms, kMinMs, kMaxMs);
}

void ControlPlane::onHeartbeat(const std::shared_ptr<Session>& session,
                               const model::Metrics& metrics) {
  hosts_.heartbeat(*session, metrics);
}

void ControlPlane::onDisconnect(const Session& session, const absl::Status& why) {
  hosts_.detach(session, why.ok() ? "stream ended" : std::string(why.message()));
}

void ControlPlane::tick() {
  janitor_.tick();
  hosts_.flushHeartbeats(config_.heartbeat_flush_ms);
  std::vector<std::shared_ptr<Session>> silent = hosts_.takeSilentPending(config_.hello_timeout_ms);
  for (const auto& s : silent) {
    s->close(absl::DeadlineExceededError(absl::StrCat("no Hello within ", config_.hello_timeout_ms,
                                                      " ms of connecting; closing the stream")));
  }
  for (const auto& s : hosts_.takeSilentSessions()) {
    s->close(absl::DeadlineExceededError(absl::StrCat(
        "no heartbeat for ", config_.missed_heartbeats_offline, " intervals; reconnect")));
  }
  commands_.tick();
}

}  // namespace muster::server
