// The control-plane core: owns the host registry, command service, enrollment and output
// bus, and is the single entry point for transport adapters (agent link events).
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
#include "server/core/command_service.h"
#include "server/core/config.h"
#include "server/core/enrollment.h"
#include "server/core/host_registry.h"
#include "server/core/operator_auth.h"
#include "server/core/output_bus.h"
#include "server/core/session.h"
#include "store/store.h"

namespace muster::server {

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
  // Revokes the host's credential, ends its stream and cancels its open commands. Blocking.
  absl::StatusOr<model::Host> decommission(const std::string& host_id);
  OutputBus& bus() { return bus_; }
  store::Store& store() { return store_; }
  const CoreConfig& config() const { return config_; }
  const common::Clock& clock() const { return clock_; }

  // --- agent link events; adapters call these from transport threads ---
  absl::Status authenticate(const std::string& agent_id, const std::string& credential) const;
  // An authenticated stream that has not said Hello yet; tick() closes it if no Hello comes
  // within the hello timeout, so idle connections cannot pile up and eat descriptors.
  void onStreamOpened(const std::shared_ptr<Session>& session);
  // An error means the adapter must end the link with that status.
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
  store::Store& store_;
  const common::Clock& clock_;
  CoreConfig config_;
  OutputBus bus_;
  HostRegistry hosts_;
  CommandService commands_;
  Enrollment enrollment_;
  OperatorAuth auth_;
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> agents_refused_{0};
  std::mutex pending_mu_;
  // Streams awaiting Hello, with the steady time they opened.
  std::vector<std::pair<std::weak_ptr<Session>, int64_t>> pending_hello_
      ABSL_GUARDED_BY(pending_mu_);
  std::atomic<int64_t> last_refusal_log_ms_{0};
};

}  // namespace muster::server
