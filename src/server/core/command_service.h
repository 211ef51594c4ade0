// Commands from creation to a stored result: persisted before dispatch, delivered at least
// once (redelivered on reconnect; the agent's journal makes it run once), results stored
// before they are acknowledged, expiry and server-side timeouts.
//
// Open (non-terminal) commands live in memory (OpenCommands, which owns every state change
// through the transition table) so that agent messages are handled without I/O on transport
// threads; anything else is read from the store on `slow_path`. The member functions are
// spread over one .cc per concept: command_service.cc (start-up, queries), run_creation.cc,
// run_slices.cc, delivery.cc, agent_reports.cc, cancel.cc, sweeps.cc.
#pragma once

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/worker_pool.h"
#include "server/core/config.h"
#include "server/core/host_registry.h"
#include "server/core/metrics.h"
#include "server/core/open_commands.h"
#include "server/core/output_bus.h"
#include "server/core/session.h"
#include "store/store.h"

namespace muster::server {

// Attached (as payload kInvalidSelectorPayload) to INVALID_ARGUMENT statuses caused by the
// selector, so the HTTP edge can answer 422.
inline constexpr char kInvalidSelectorPayload[] = "type.muster.dev/invalid-selector";

struct CreateRunRequest {
  // Targets: host ids, or a label selector resolved to the hosts enrolled now (online or
  // offline; offline hosts get queued commands). Exactly one of the two.
  std::vector<std::string> host_ids;
  std::string selector;
  model::ExecSpec exec;
  // Transfers the commands allow (at most 16); downloads name an artifact, which the
  // resolver (the artifact service) checks and records the content of.
  std::vector<model::ArtifactExpectation> artifacts;
  int64_t expire_in_ms = 0;  // 0: the configured default
  std::string idempotency_key;
  std::string created_by;
};

struct CreateRunResult {
  std::string run_id;
  std::vector<model::Command> commands;
  bool replayed = false;  // an earlier request with the same idempotency key
};

class CommandService {
 public:
  CommandService(store::Store& store, HostRegistry& hosts, OutputBus& bus,
                 common::Executor& slow_path, const common::Clock& clock, const CoreConfig& config);

  // Where large deliveries and result acks run, so neither the API worker nor the store's
  // writer thread pays every stream's write (gRPC's StartWrite runs inline). Optional.
  void setFanoutExecutor(common::Executor* executor) { fanout_ = executor; }

  // Loads open commands from the store (start-up).
  absl::Status load();

  // --- operator side: may block, call from worker threads ---
  absl::StatusOr<CreateRunResult> createRun(CreateRunRequest request);
  absl::StatusOr<model::Command> get(const std::string& id);
  absl::StatusOr<std::vector<model::Command>> list(const store::CommandFilter& filter);
  absl::StatusOr<model::Command> cancel(const std::string& id, const std::string& reason);
  absl::StatusOr<std::vector<model::Command>> cancelRun(const std::string& run_id,
                                                        const std::string& reason);
  // Ends every open command of a decommissioned host as cancelled (server-side).
  void cancelAllForHost(const std::string& host_id, const std::string& reason);
  // Open commands by state (index: model::CommandState value).
  std::array<uint64_t, 8> openByState() const;
  CoreMetrics& metrics() { return metrics_; }

  // --- agent side: never blocks. Transports go through ControlPlane::onAgentMessage. ---
  void onAgentConnected(const std::shared_ptr<Session>& session);
  void onAccepted(const std::shared_ptr<Session>& session, const std::string& command_id);
  void onOutput(const std::shared_ptr<Session>& session, model::OutputChunk chunk);
  void onResult(const std::shared_ptr<Session>& session, model::CommandResult result);

  // --- for the artifact service: never block ---
  // The open command `id`, copied (nullopt once it ended).
  std::optional<model::Command> openCommand(const std::string& id) const { return open_.get(id); }
  bool isOpen(const std::string& id) {
    return open_.with([&](OpenCommands::Tx& tx) { return tx.find(id) != nullptr; });
  }
  // f(const model::Command&) for every open command with artifact expectations; f must not
  // call back into this service.
  template <class F>
  void forEachOpenWithArtifacts(F&& f) {
    open_.with([&](OpenCommands::Tx& tx) {
      tx.forEach([&](const model::Command& c) {
        if (!c.artifacts.empty()) f(c);
      });
    });
  }
  // Asked before a successful agent result is stored: a non-empty reason stores it as
  // failed with that error (an expected upload never completed). Set before start; must not
  // block.
  void setResultCheck(std::function<std::string(const std::string& command_id)> check) {
    result_check_ = std::move(check);
  }
  // Checks a new run's artifact expectations and completes them (a download's size and
  // SHA-256); an error refuses the run. Set before start; may block (operator side).
  void setArtifactResolver(
      std::function<absl::Status(std::vector<model::ArtifactExpectation>&)> resolver) {
    artifact_resolver_ = std::move(resolver);
  }

  // Expires commands nobody took and times out those whose agent never reported.
  void tick();
  size_t openCount() const;
  // Shutdown: no further slices of large runs are queued; what is left of a run is stored at
  // the next start (the run keeps its pending targets).
  void stopSlicing() { slicing_stopped_ = true; }

 private:
  // --- run_creation.cc ---
  absl::Status resolveTargets(CreateRunRequest& request) const;
  absl::Status validate(const CreateRunRequest& request) const;
  absl::StatusOr<CreateRunResult> replay(const store::Run& run, const std::string& fingerprint);

  // --- run_slices.cc: a large run stored and sent slice by slice ---
  struct SlicedRun;
  // Stores insert.run with its first slice, then every later slice as the previous one
  // commits, delivering each committed slice meanwhile; returns once all are stored and sent.
  absl::Status createInSlices(store::InsertRun insert, std::vector<std::string> targets,
                              CreateRunResult& result);
  void storeSlice(const std::shared_ptr<SlicedRun>& job, size_t begin);
  // Writer thread: slice [begin, end) committed (or failed).
  void onSliceStored(const std::shared_ptr<SlicedRun>& job, size_t begin, size_t end,
                     const store::WriteResult& written);
  void forgetSliced(const std::string& run_id);
  // Stops the slices of a run not stored yet (they are never created) and clears its
  // pending targets; returns once slices queued before are committed and open.
  void stopSlicesOfCancelledRun(const std::string& run_id);
  // tick(): stores the rest of runs whose slice failed, once a second.
  void retryFailedSlices();
  // At start: stores the missing commands of runs a crash interrupted between slices.
  void completeInterruptedRuns();

  // --- delivery.cc ---
  // Delivers new commands to their online hosts, in parallel on fanout_ when large.
  void deliverAll(const std::vector<model::Command>& commands);
  // Delivers [first, last) to their online hosts on the calling thread.
  void deliverRange(const model::Command* first, const model::Command* last);
  // Sends commands to the session and records them dispatched. False once the session is
  // closed.
  bool deliver(const std::shared_ptr<Session>& session, const std::vector<std::string>& ids);
  // Redelivers more of the session's backlog while its link is under the redelivery window.
  void topUpRedelivery(const std::shared_ptr<Session>& session);
  // tick(): tops up every link with a redelivery backlog (progress even when its agent is
  // quiet); drops finished and closed ones.
  void topUpRedeliveries();
  // The message that delivers open command `id` to `agent_id` (a Cancel once cancellation
  // was requested), applying kDispatch; a first send appends the id to `first_sends`.
  // Nothing for a command not open, of another host, or past its deadline before it left.
  std::optional<ServerEvent> deliveryEvent(OpenCommands::Tx& tx, const std::string& id,
                                           const std::string& agent_id, int64_t now,
                                           std::vector<std::string>* first_sends);
  // Records commands dispatched; tick() stores the marks of those still waiting after
  // dispatch_mark_delay_ms, one mutation per batch.
  void markDispatched(std::vector<std::string> ids, int64_t now);
  void storeDispatchMarks();
  // Sends a ResultAck on the fanout executor (inline without one), in slices of acks per
  // task.
  void queueAck(std::shared_ptr<Session> session, std::string command_id);

  // --- agent_reports.cc ---
  // Stores an ended command (guarded by `only_if`); on commit publishes it and acks the
  // agent (if any).
  // `from`: the open state it ended from, restored in memory if the store refuses.
  void storeTerminal(model::Command updated, model::CommandState from,
                     std::vector<model::CommandState> only_if, std::shared_ptr<Session> ack_to);
  // A result for a command not open in memory, checked against the store.
  void resultSlowPath(const std::shared_ptr<Session>& session, model::CommandResult result);
  // False, with the stream ended (UNAVAILABLE), while the store's backlog is over
  // max_store_backlog: the agent keeps what it reports until it reconnects.
  bool admitFromAgent(const std::shared_ptr<Session>& session);
  // Queues a check of a resent report on the slow path, or ends the stream when
  // max_late_backlog reports already wait.
  bool postLate(const std::shared_ptr<Session>& session, std::function<void()> fn);
  // The `done` of an output write: a failure means no result of `session` is acked any more.
  store::WriteDone outputWritten(std::shared_ptr<Session> session, std::string command_id);

  // --- cancel.cc ---
  // A cancel the store refused: open again as it was, and sent if its host is online.
  void reopenAndDeliver(model::Command command, model::CommandState from);

  // --- sweeps.cc ---
  void sweepDeadlines();

  store::Store& store_;
  HostRegistry& hosts_;
  OutputBus& bus_;
  common::Executor& slow_path_;
  const common::Clock& clock_;
  CoreConfig config_;

  common::Executor* fanout_ = nullptr;
  std::function<std::string(const std::string&)> result_check_;
  std::function<absl::Status(std::vector<model::ArtifactExpectation>&)> artifact_resolver_;
  CoreMetrics metrics_;
  OpenCommands open_;
  std::mutex marks_mu_;
  struct DeferredMark {
    std::string id;
    int64_t at_ms;      // wall time of the dispatch, stored
    int64_t steady_ms;  // when it was queued, for the delay
  };
  std::deque<DeferredMark> deferred_marks_ ABSL_GUARDED_BY(marks_mu_);
  std::mutex ack_mu_;
  std::deque<std::pair<std::shared_ptr<Session>, std::string>> pending_acks_
      ABSL_GUARDED_BY(ack_mu_);
  size_t ack_tasks_ ABSL_GUARDED_BY(ack_mu_) = 0;  // posted, not yet started
  // Links with commands still to be redelivered (Session::redeliveryLeft() > 0).
  std::mutex redelivering_mu_;
  std::vector<std::weak_ptr<Session>> redelivering_ ABSL_GUARDED_BY(redelivering_mu_);
  std::mutex sliced_mu_;
  // Runs being stored in slices, by run id: in progress, or waiting for tick() to retry a
  // slice that failed to store.
  std::unordered_map<std::string, std::shared_ptr<SlicedRun>> sliced_ ABSL_GUARDED_BY(sliced_mu_);
  std::atomic<bool> slicing_stopped_{false};
};

}  // namespace muster::server
