// Every known host in memory (the store is the durable copy) plus the live session of
// each connected agent, liveness by stream and heartbeat, and credential checks.
#pragma once

#include <array>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/clock.h"
#include "model/selector.h"
#include "server/core/config.h"
#include "server/core/session.h"
#include "store/store.h"

namespace muster::server {

class HostRegistry {
 public:
  HostRegistry(store::Store& store, const common::Clock& clock, const CoreConfig& config);

  // Loads hosts from the store. Hosts stored as online are marked offline: no agent is
  // connected to a process that just started.
  absl::Status load();

  // Constant-time check of an agent's credential against the stored hash, and of the client
  // certificate it presented (SHA-256 of its DER; empty: none) against the one issued to it
  // (see clientCertificateAccepted).
  absl::Status authenticate(const std::string& agent_id, const std::string& credential,
                            const std::string& client_cert_sha256 = "") const;

  // Authenticates a new stream and, under the same lock, records it as waiting for its Hello
  // with the credential it presented. A revoke or a credential rotation from then on ends it
  // (closed at once), and attach() refuses it, so a Hello racing a revoke can never bring a
  // revoked host back online. Unknown id and wrong credential give the same status.
  // The client certificate presented (`client_cert_sha256`, empty: none) is checked as in
  // authenticate().
  absl::Status openStream(const std::shared_ptr<Session>& session, const std::string& credential,
                          const std::string& client_cert_sha256 = "");
  // Records a client certificate renewed for `agent_id`, whose credential must still hash to
  // `credential_hash`, by an agent presenting `presented_sha256`: the certificate presented
  // stays accepted (as the previous one) until a stream presents the new one; a renewal
  // whose reply was lost is redone from the previous one without losing it. Without a
  // certificate presented, only a host whose certificate is missing or expired may renew.
  // Blocks until durable.
  absl::Status setClientCertificate(const std::string& agent_id, const std::string& credential_hash,
                                    const std::string& presented_sha256,
                                    const std::string& cert_sha256, int64_t not_after_ms);
  // Streams that did not say Hello within `timeout_ms` of opening; they are forgotten here
  // and must be closed.
  std::vector<std::shared_ptr<Session>> takeSilentPending(int64_t timeout_ms);

  // Makes `session` (opened by openStream) the agent's live link, replacing (and closing) an
  // older one, and records the host online with the facts and labels of its Hello.
  // PERMISSION_DENIED / UNAUTHENTICATED if the host was revoked or its credential changed
  // since the stream authenticated; FAILED_PRECONDITION for a stream never opened.
  absl::Status attach(const std::shared_ptr<Session>& session, const HelloInfo& hello);
  // Marks the host offline if `session` is still its live link. False if it was not.
  bool detach(const Session& session, const std::string& why);
  // Takes the metrics in memory at once; they are stored by flushHeartbeats().
  void heartbeat(const Session& session, const model::Metrics& metrics);
  // Stores the latest metrics of every host heard from since the last call, as one batch
  // (one transaction), at most once per `min_interval_ms` (0: now). Heartbeats stored one by
  // one cost a transaction and an fsync each: 333 a second for 10,000 agents at 30 s.
  // A crash loses at most that interval of metrics, which the agents send again.
  void flushHeartbeats(int64_t min_interval_ms);

  std::shared_ptr<Session> sessionFor(const std::string& agent_id) const;
  // The live session of the host of each command in [begin, end) (null: offline), under
  // one lock.
  std::vector<std::shared_ptr<Session>> sessionsFor(const model::Command* begin,
                                                    const model::Command* end) const;
  // Sessions that missed too many heartbeats; they are detached and must be closed.
  std::vector<std::shared_ptr<Session>> takeSilentSessions();

  std::optional<model::Host> get(const std::string& id) const;
  const CoreConfig& config() const { return config_; }
  std::vector<model::Host> list() const;
  // Hosts matching `selector` (null: all) and `status` (null: any), sorted by id.
  std::vector<model::Host> select(const model::Selector* selector,
                                  const model::HostStatus* status) const;
  // Sets and removes operator labels; blocks until durable. NOT_FOUND for unknown hosts,
  // INVALID_ARGUMENT for bad keys or values. Labels set here are pinned: the agent's own
  // labels never replace them (a removed one is unpinned, and the agent may set it again).
  absl::StatusOr<model::Host> setLabels(const std::string& id, const model::StringMap& set,
                                        const std::vector<std::string>& remove);
  // Decommissions a host: its credential is revoked (the agent is refused from now on, its
  // live stream ends with PERMISSION_DENIED). Blocks until durable. NOT_FOUND if unknown.
  absl::StatusOr<model::Host> revoke(const std::string& id);
  bool exists(const std::string& id) const;
  // Ids of the hosts matching `selector` that are not revoked, unsorted: run targeting,
  // without copying every host.
  std::vector<std::string> selectTargetIds(const model::Selector& selector) const;
  // Status of each host in `ids` (nullopt: unknown), under one lock.
  std::vector<std::optional<model::HostStatus>> statuses(const std::vector<std::string>& ids) const;
  size_t connectedCount() const;
  // Hosts by status (index: model::HostStatus value), counted without copying them (a
  // /metrics scrape of a 10,000-host fleet used to copy every host with its facts).
  std::array<size_t, 3> countByStatus() const;
  // Hosts known (enrolled, including revoked ones): the fleet that may come back at once.
  size_t knownCount() const;

  // Decides, under the registry's lock, whether an enrollment may take the id: `existing` is
  // the live record (null for an unknown id). Must not block.
  using EnrollAdmission = std::function<absl::Status(const model::Host* existing)>;
  // Stores an enrolled (or re-enrolled) host with its credential hash if `admit` allows it,
  // checked atomically with the change (two enrollments of one id cannot both take it); blocks
  // until durable. Labels: the host's pinned ones stay; `host.labels` and
  // `host.pinned_labels` are added. A new credential ends every stream that authenticated
  // with the old one. If the store refuses, memory is put back as it was.
  absl::Status putEnrolled(model::Host host, const EnrollAdmission& admit);

 private:
  struct Entry {
    model::Host host;
    std::shared_ptr<Session> session;
    int64_t last_heard_steady_ms = 0;
    bool heartbeat_unstored = false;  // in heartbeat_unstored_
  };

  // A stream between authentication and Hello.
  struct Pending {
    std::weak_ptr<Session> session;
    std::string agent_id;
    std::string credential_hash;
    int64_t opened_steady_ms = 0;
  };
  // Takes every stream of `agent_id` (live and pending) so the caller can close them.
  std::vector<std::shared_ptr<Session>> takeStreamsLocked(const std::string& agent_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A certificate presented must be the host's current one (not expired) or the one it
  // replaced at the last renewal; none at all only without --require-client-certs.
  absl::Status clientCertificateAccepted(const model::Host& host,
                                         const std::string& presented) const;
  // Pinned labels (token, operator) are the server's; --agent-label-keys limits the rest.
  bool agentMaySetLabel(const model::Host& host, const std::string& key) const;
  // Queues a host write while mu_ is held, so host records reach the store in the order
  // memory changed (a stale snapshot can never land on top of a revoke); wait outside mu_.
  std::future<store::WriteResult> queueLocked(store::Mutation mutation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  store::Store& store_;
  const common::Clock& clock_;
  CoreConfig config_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> hosts_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<const Session*, Pending> pending_ ABSL_GUARDED_BY(mu_);
  // Hosts whose latest heartbeat is not stored yet, and when the last flush ran.
  std::vector<std::string> heartbeat_unstored_ ABSL_GUARDED_BY(mu_);
  int64_t last_heartbeat_flush_steady_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // Entries with a live session, kept with every change so the per-Hello capacity check is
  // O(1) (counting them took an eighth of the machine in a 10,000-agent reconnect storm).
  size_t connected_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace muster::server
