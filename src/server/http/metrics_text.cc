// GET /metrics: the core's gauges, counters and histograms plus the HTTP request counters in
// the Prometheus text exposition format (version 0.0.4).
#include <array>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/core/artifact_service.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"
#include "server/http/request_stats.h"

namespace muster::server::http {
namespace {

constexpr int kCommandStates = static_cast<int>(model::CommandState::kExpired) + 1;

// Label values: backslash, double quote and newline escaped.
std::string labelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    absl::StrAppend(&text_, "# HELP ", toAbslView(name), " ", toAbslView(help), "\n# TYPE ",
                    toAbslView(name), " ", toAbslView(type), "\n");
  }
  // `labels`: already rendered, like `state="queued"`; empty for none.
  template <typename T>
  void sample(std::string_view name, std::string_view labels, T value) {
    absl::StrAppend(&text_, toAbslView(name));
    if (!labels.empty()) absl::StrAppend(&text_, "{", toAbslView(labels), "}");
    absl::StrAppend(&text_, " ", value, "\n");
  }
  std::string take() { return std::move(text_); }

 private:
  static absl::string_view toAbslView(std::string_view s) { return {s.data(), s.size()}; }
  std::string text_;
};

}  // namespace

ApiReply metricsReply(ControlPlane& plane, const RequestStats* stats) {
  Exposition out;

  out.family("muster_agents_connected", "gauge", "Agents with a live stream to this server.");
  out.sample("muster_agents_connected", "", plane.hosts().connectedCount());
  out.family("muster_agents_refused_total", "counter",
             "Agent links refused: at --max-agents (Hello answered RESOURCE_EXHAUSTED) or at "
             "the descriptor ceiling (connection closed at once).");
  out.sample("muster_agents_refused_total", "", plane.agentsRefused());

  const std::array<size_t, 3> by_status = plane.hosts().countByStatus();
  out.family("muster_hosts", "gauge", "Enrolled hosts by status.");
  for (auto status :
       {model::HostStatus::kOffline, model::HostStatus::kOnline, model::HostStatus::kRevoked}) {
    out.sample("muster_hosts",
               absl::StrCat("status=\"", std::string(model::toString(status)), "\""),
               by_status[static_cast<size_t>(status) % by_status.size()]);
  }

  CommandService& commands = plane.commands();
  std::array<uint64_t, 8> open = commands.openByState();
  out.family("muster_commands_open", "gauge", "Commands not finished yet, by state.");
  for (int s = 0; s < kCommandStates; ++s) {
    auto state = static_cast<model::CommandState>(s);
    if (model::isTerminal(state)) continue;
    out.sample("muster_commands_open",
               absl::StrCat("state=\"", std::string(model::toString(state)), "\""), open[s]);
  }

  CoreMetrics& core = commands.metrics();
  out.family("muster_command_results_total", "counter",
             "Commands that ended since the server started, by final state.");
  for (int s = 0; s < kCommandStates; ++s) {
    auto state = static_cast<model::CommandState>(s);
    if (!model::isTerminal(state)) continue;
    out.sample("muster_command_results_total",
               absl::StrCat("state=\"", std::string(model::toString(state)), "\""),
               core.results_by_state[s].load(std::memory_order_relaxed));
  }
  out.family("muster_agent_tls_streams_total", "counter",
             "Agent streams opened over TLS, by whether the connection resumed a TLS session "
             "(abbreviated handshake) or made a full one");
  out.sample("muster_agent_tls_streams_total", "handshake=\"resumed\"",
             core.tls_streams_resumed.load(std::memory_order_relaxed));
  out.sample("muster_agent_tls_streams_total", "handshake=\"full\"",
             core.tls_streams_full.load(std::memory_order_relaxed));
  out.family("muster_commands_created_total", "counter",
             "Commands created since the server started (one per target host).");
  out.sample("muster_commands_created_total", "",
             core.commands_created.load(std::memory_order_relaxed));

  Histogram::Snapshot latency = core.dispatch_to_result_seconds.snapshot();
  out.family("muster_dispatch_to_result_seconds", "histogram",
             "From handing a command to its agent to storing the agent's result.");
  for (size_t i = 0; i < latency.bounds.size(); ++i) {
    out.sample("muster_dispatch_to_result_seconds_bucket",
               absl::StrCat("le=\"", latency.bounds[i], "\""), latency.cumulative[i]);
  }
  out.sample("muster_dispatch_to_result_seconds_bucket", "le=\"+Inf\"", latency.count);
  out.sample("muster_dispatch_to_result_seconds_sum", "", latency.sum);
  out.sample("muster_dispatch_to_result_seconds_count", "", latency.count);

  // Every family is listed from the start (0), so a rate() never sees one appear.
  std::map<std::string, uint64_t> audited = plane.audit().recordedByFamily();
  for (const char* family : {"api", "api.command", "api.run", "api.host", "api.token", "link"}) {
    audited.try_emplace(family, 0);
  }
  out.family("muster_audit_events_total", "counter",
             "Audit events recorded since start, by kind family (api.command, link, ...).");
  for (const auto& [family, n] : audited) {
    out.sample("muster_audit_events_total", absl::StrCat("family=\"", family, "\""), n);
  }
  out.family("muster_audit_events_dropped_total", "counter",
             "Audit events not stored because the store writer's backlog was full.");
  out.sample("muster_audit_events_dropped_total", "", plane.audit().dropped());
  out.family("muster_audit_event_write_failures_total", "counter",
             "Audit events the store failed to write.");
  out.sample("muster_audit_event_write_failures_total", "", plane.audit().writeFailures());
  out.family("muster_janitor_swept_total", "counter",
             "Rows removed by the janitor's sweeps since start, by task.");
  for (const auto& [task, n] : plane.janitor().sweptByTask()) {
    out.sample("muster_janitor_swept_total", absl::StrCat("task=\"", task, "\""), n);
  }
  out.family("muster_janitor_runs_total", "counter", "Janitor sweeps run since start.");
  out.sample("muster_janitor_runs_total", "", plane.janitor().runs());

  if (ArtifactService* artifacts = plane.artifacts()) {
    ArtifactMetrics& m = artifacts->metrics();
    out.family("muster_artifact_bytes_total", "counter",
               "Artifact bytes received from agents (in) and sent to them (out).");
    out.sample("muster_artifact_bytes_total", "direction=\"in\"", m.bytes_in.load());
    out.sample("muster_artifact_bytes_total", "direction=\"out\"", m.bytes_out.load());
    out.family("muster_artifact_transfers_total", "counter",
               "Artifact transfers ended, by direction and outcome (ok, or the refusal or "
               "failure reason).");
    out.sample("muster_artifact_transfers_total", "direction=\"upload\",outcome=\"ok\"",
               m.uploads_ok.load());
    out.sample("muster_artifact_transfers_total", "direction=\"download\",outcome=\"ok\"",
               m.downloads_ok.load());
    for (size_t i = 0; i < static_cast<size_t>(TransferRefusal::kCount); ++i) {
      auto reason = toAbsl(toString(static_cast<TransferRefusal>(i)));
      out.sample("muster_artifact_transfers_total",
                 absl::StrCat("direction=\"upload\",outcome=\"", reason, "\""),
                 m.upload_failed[i].load());
      out.sample("muster_artifact_transfers_total",
                 absl::StrCat("direction=\"download\",outcome=\"", reason, "\""),
                 m.download_failed[i].load());
    }
    out.family("muster_artifact_slots_in_use", "gauge",
               "Artifact transfer slots held by agents, by direction.");
    out.sample("muster_artifact_slots_in_use", "direction=\"upload\"",
               m.upload_slots_in_use.load());
    out.sample("muster_artifact_slots_in_use", "direction=\"download\"",
               m.download_slots_in_use.load());
    out.family("muster_artifact_resumed_total", "counter",
               "Transfers that continued an interrupted one from an offset, by direction.");
    out.sample("muster_artifact_resumed_total", "direction=\"upload\"", m.resumed_uploads.load());
    out.sample("muster_artifact_resumed_total", "direction=\"download\"",
               m.resumed_downloads.load());
    out.family("muster_artifact_retries_answered_total", "counter",
               "Uploads already stored whose retry (the reply was lost) was verified and "
               "answered with the stored artifact.");
    out.sample("muster_artifact_retries_answered_total", "", m.retries_answered.load());
    auto st = artifacts->store().stats();
    out.family("muster_artifact_store_bytes", "gauge",
               "Distinct artifact content stored (stored), the sum of artifact sizes "
               "(logical), uploads' reservations (reserved) and the quota.");
    out.sample("muster_artifact_store_bytes", "kind=\"stored\"", st.stored_bytes);
    out.sample("muster_artifact_store_bytes", "kind=\"logical\"", st.logical_bytes);
    out.sample("muster_artifact_store_bytes", "kind=\"reserved\"", st.reserved_bytes);
    out.sample("muster_artifact_store_bytes", "kind=\"quota\"", st.quota_bytes);
    out.family("muster_artifacts_stored", "gauge", "Artifacts in the store.");
    out.sample("muster_artifacts_stored", "", st.artifacts);
    out.family("muster_artifact_dedup_saved_bytes_total", "counter",
               "Bytes not stored again since start because the same content was stored.");
    out.sample("muster_artifact_dedup_saved_bytes_total", "", st.dedup_saved_bytes);
    out.family("muster_artifact_swept_total", "counter",
               "Artifacts removed by the retention sweep since start.");
    out.sample("muster_artifact_swept_total", "", st.swept);
  }

  StoreHealth store = plane.queries().storeHealth();
  out.family("muster_store_commit_seconds", "gauge",
             "Duration of the store's last write transaction (commit included).");
  out.sample("muster_store_commit_seconds", "", store.last_commit_ms / 1000.0);
  out.family("muster_store_batch_size", "gauge",
             "Mutations grouped into the store's last write transaction.");
  out.sample("muster_store_batch_size", "", store.last_batch_size);
  out.family("muster_store_transactions_total", "counter",
             "Write transactions committed by the store since the server started.");
  out.sample("muster_store_transactions_total", "", store.transactions);
  out.family("muster_store_failed_transactions_total", "counter",
             "Write transactions the store could not commit.");
  out.sample("muster_store_failed_transactions_total", "", store.failed_transactions);
  out.family("muster_store_pending_writes", "gauge",
             "Store mutations queued and not applied yet (the writer's backlog; past "
             "--max-store-backlog agents' results wait in their outboxes).");
  out.sample("muster_store_pending_writes", "", store.pending_writes);

  out.family("muster_limit_hits_total", "counter",
             "Times a bound on what peers can fill was hit, by limit (each also logged, at "
             "most once per 10 s): agent_send_queue, agent_stuck_write (streams ended), "
             "enroll_backlog (Enroll refused), store_backlog and late_report_backlog (agent "
             "reports left in the outbox), output_write_failed (result not acked), output_budget "
             "(output past what an agent may keep, dropped).");
  for (size_t i = 0; i < static_cast<size_t>(Limit::kCount); ++i) {
    auto limit = static_cast<Limit>(i);
    out.sample("muster_limit_hits_total",
               absl::StrCat("limit=\"", std::string(Limits::name(limit)), "\""),
               plane.limits().hits(limit));
  }

  out.family("muster_http_requests_total", "counter",
             "HTTP requests answered, by route pattern and status code (0: any other code).");
  if (stats) {
    for (const auto& c : stats->snapshot()) {
      out.sample("muster_http_requests_total",
                 absl::StrCat("route=\"", labelValue(c.route), "\",code=\"", c.status, "\""),
                 c.count);
    }
  }

  if (stats) {
    const TransportStats& t = stats->transport;
    auto get = [](const auto& atomic) { return atomic.load(std::memory_order_relaxed); };
    out.family("muster_http_connections_open", "gauge",
               "HTTP connections open now (event streams included).");
    out.sample("muster_http_connections_open", "", get(t.connections_open));
    out.family("muster_http_connections_refused_total", "counter",
               "HTTP connections answered 503 and closed at --http-max-connections.");
    out.sample("muster_http_connections_refused_total", "", get(t.connections_refused));
    out.family("muster_http_timeouts_total", "counter",
               "HTTP connections closed by a timeout, by phase: header (--http-header-timeout), "
               "body (--http-body-timeout), idle keep-alive and write (--http-idle-timeout).");
    out.sample("muster_http_timeouts_total", "phase=\"header\"", get(t.header_timeouts));
    out.sample("muster_http_timeouts_total", "phase=\"body\"", get(t.body_timeouts));
    out.sample("muster_http_timeouts_total", "phase=\"idle\"", get(t.idle_timeouts));
    out.sample("muster_http_timeouts_total", "phase=\"write\"", get(t.write_timeouts));
    out.family("muster_http_tls_handshake_failures_total", "counter",
               "HTTPS handshakes that failed (no CA, plain HTTP on the HTTPS port, timeouts)");
    out.sample("muster_http_tls_handshake_failures_total", "", get(t.tls_failures));
    out.family("muster_sse_followers", "gauge", "Live output event streams (?follow=1).");
    out.sample("muster_sse_followers", "", get(t.followers));
    out.family("muster_sse_followers_refused_total", "counter",
               "Output event streams answered 503 at --http-max-followers.");
    out.sample("muster_sse_followers_refused_total", "", get(t.followers_refused));
    out.family("muster_sse_followers_dropped_total", "counter",
               "Output event streams dropped for falling more than --http-follower-buffer-bytes "
               "behind.");
    out.sample("muster_sse_followers_dropped_total", "", get(t.followers_dropped));
    out.family("muster_sse_buffered_bytes", "gauge",
               "Output bytes queued for, or being written to, all event streams.");
    out.sample("muster_sse_buffered_bytes", "", get(t.follower_buffered_bytes));
    out.family("muster_sse_buffer_peak_bytes", "gauge",
               "The most output one event stream has had queued or in flight since start "
               "(never above --http-follower-buffer-bytes).");
    out.sample("muster_sse_buffer_peak_bytes", "", get(t.follower_buffer_peak_bytes));
  }

  ApiReply reply;
  reply.status = 200;
  reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
  reply.body = out.take();
  return reply;
}

}  // namespace muster::server::http
