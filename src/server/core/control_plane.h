// The control-plane core: owns the host registry, command service, enrollment and output
// bus, and is the single entry point for transport adapters: a stream opens (openStream),
// its agent's messages arrive (onAgentMessage) and it closes (onStreamClosed). The link's
// protocol state lives in the core, so every transport (gRPC today, HTTP long-poll next)
// shares it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/clock.h"
#include "common/worker_pool.h"
#include "server/core/audit.h"
#include "server/core/command_service.h"
#include "server/core/config.h"
#include "server/core/enrollment.h"
#include "server/core/host_registry.h"
#include "server/core/janitor.h"
#include "server/core/operator_auth.h"
#include "server/core/output_bus.h"
#include "server/core/queries.h"
#include "server/core/session.h"
#include "store/store.h"

namespace muster::server {

class ArtifactService;

class ControlPlane {
 public:
  // `slow_path` must run tasks in submission order (one thread): it keeps an agent's
  // resent output ahead of its result.
  ControlPlane(store::Store& store, common::Executor& slow_path, const common::Clock& clock,
               CoreConfig config);

  absl::Status start();

  HostRegistry& hosts() { return hosts_; }
  CommandService& commands() { return commands_; }
  Enrollment& enrollment() { return enrollment_; }
  OperatorAuth& auth() { return auth_; }
  // Revokes the host's credential, ends its stream and cancels its open commands (recorded
  // as link.revoked by `by`). Blocking.
  absl::StatusOr<model::Host> decommission(const std::string& host_id, const Actor& by = {});
  // The audit log: API adapters and the TLS code record through it.
  Audit& audit() { return audit_; }
  // Sweeps of old data (hourly, from tick()); give it an executor to run on.
  Janitor& janitor() { return janitor_; }
  OutputBus& bus() { return bus_; }
  // Command-scoped artifacts, when musterd stores them (null otherwise). Set before start.
  void setArtifacts(ArtifactService* artifacts) { artifacts_ = artifacts; }
  ArtifactService* artifacts() const { return artifacts_; }
  // Counters and rate-limited logs of the bounds peers run into; transports report theirs too.
  Limits& limits() { return commands_.metrics().limits; }
  // Reads for operator-facing adapters (they never see the store itself).
  Queries& queries() { return queries_; }
  const CoreConfig& config() const { return config_; }
  const common::Clock& clock() const { return clock_; }

  // --- the agent link; adapters call these from transport threads, and only these three ---
  // A new stream presenting `credential`: authenticated, then (atomically with the check)
  // tracked as waiting for its Hello; tick() closes it if no Hello comes within the hello
  // timeout, so idle connections cannot pile up and eat descriptors. A revoke or a new
  // credential for the host ends it. `client_cert_sha256`: the fingerprint of the client
  // certificate the transport verified (empty: none); it must be the host's own (and is
  // required with CoreConfig::require_client_certs). An error means the adapter must end
  // the stream.
  absl::Status openStream(const std::shared_ptr<Session>& session, const std::string& credential,
                          const std::string& client_cert_sha256 = "");
  // One message from the agent, in the order received. Owns the link's protocol: the first
  // message must be Hello, and only one Hello per stream (FAILED_PRECONDITION otherwise);
  // then heartbeats, CommandAccepted, output and results go to the registry and the command
  // service. An error means the adapter must end the link with that status (errors in a
  // report, such as a command of another host, end it from the core).
  absl::Status onAgentMessage(const std::shared_ptr<Session>& session, AgentEvent event);
  // The stream ended (either side, for any reason). The host goes offline if this stream was
  // its live link.
  void onStreamClosed(const std::shared_ptr<Session>& session, const absl::Status& why);

  // --- the steps of the above, for tests and tools that drive the core directly ---
  absl::Status authenticate(const std::string& agent_id, const std::string& credential) const;
  // An error means the adapter must end the link with that status. Accepted, the session is
  // live for onAgentMessage.
  absl::Status onHello(const std::shared_ptr<Session>& session, const HelloInfo& hello);
  // The reconnect window a Welcome carries when `agents` are connected.
  int64_t reconnectWindowMs(size_t agents) const;
  void onHeartbeat(const std::shared_ptr<Session>& session, const model::Metrics& metrics);
  void onDisconnect(const Session& session, const absl::Status& why);

  // Once a second: liveness by heartbeat, expiry, server-side timeouts.
  void tick();

  // Shutdown: no new agents, and no further slices of large runs are queued (a run left
  // unfinished is completed at the next start).
  void stopAccepting() {
    accepting_ = false;
    commands_.stopSlicing();
  }
  // Stores what is still only in memory (the latest heartbeats); at shutdown.
  void flush() { hosts_.flushHeartbeats(0); }
  bool accepting() const { return accepting_; }
  uint64_t agentsRefused() const { return agents_refused_.load(); }
  // The transport closed a connection because the process is at its descriptor ceiling.
  void noteConnectionRefused() { agents_refused_++; }

 private:
  const common::Clock& clock_;
  CoreConfig config_;
  Audit audit_;
  Janitor janitor_;
  OutputBus bus_;
  HostRegistry hosts_;
  CommandService commands_;
  Enrollment enrollment_;
  OperatorAuth auth_;
  Queries queries_;
  ArtifactService* artifacts_ = nullptr;
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> agents_refused_{0};
  std::atomic<int64_t> last_refusal_log_ms_{0};
};

}  // namespace muster::server
