// The storage port of the control plane. The core depends on this interface only;
// src/store/sqlite (and later postgres) implement it.
//
// Writes are asynchronous and FIFO: every mutation handed to write() is applied in
// submission order; implementations group many mutations into one transaction (one
// fsync) and call each `done` after its transaction committed. Reads see committed data.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/command.h"
#include "model/event.h"
#include "model/host.h"

namespace muster::store {

struct Run {
  std::string id;
  std::string idempotency_key;      // empty: none
  std::string request_fingerprint;  // SHA-256 of the canonical request, for 409 on reuse
  std::string created_by;
  int64_t created_at_ms = 0;
  // Non-empty while the run is being stored in slices: every host it targets. Cleared by the
  // InsertCommands that stores the last slice; a run still holding it after a crash is
  // completed at the next start (see CommandService::load).
  std::vector<std::string> pending_targets;
};

struct EnrollToken {
  std::string id;
  std::string token_hash;  // SHA-256 hex of the secret
  int64_t uses_left = 1;   // -1: unlimited
  int64_t expires_at_ms = 0;
  model::StringMap labels;
  std::string created_by;
  int64_t created_at_ms = 0;
  bool revoked = false;
  // Non-empty: the token enrolls this host only, and may replace its credential while it is
  // enrolled (re-imaging a machine). Empty: any new id (or a revoked one).
  std::string host_id;
};

// An operator API token. Roles: "viewer" (read), "operator" (+ run and cancel), "admin"
// (+ tokens and hosts).
struct ApiToken {
  std::string id;
  std::string token_hash;  // SHA-256 hex of the secret
  std::string role;
  std::string name;
  std::string created_by;
  int64_t created_at_ms = 0;
  int64_t expires_at_ms = 0;  // 0: never
  bool revoked = false;
};

// A page of commands (model::CommandQuery); the store's name for it.
using CommandFilter = model::CommandQuery;

// --- Mutations -------------------------------------------------------------------------
// Inserts the host or replaces every stored field of it.
struct UpsertHost {
  model::Host host;
};
struct SetHostStatus {
  std::string host_id;
  model::HostStatus status;
  int64_t at_ms = 0;
};
struct RecordHeartbeat {
  std::string host_id;
  model::Metrics metrics;
  int64_t last_seen_ms = 0;
};
// The heartbeats of many hosts in one mutation (one transaction); rows counts hosts found.
struct RecordHeartbeats {
  std::vector<RecordHeartbeat> beats;
};
// A run and its commands, all or nothing. A duplicate idempotency key fails with
// ALREADY_EXISTS and writes nothing.
struct InsertRun {
  Run run;
  std::vector<model::Command> commands;
};
// More commands of a stored run (a later slice of a large run), all or nothing. With
// `completes_run` the run's pending_targets are cleared in the same transaction.
struct InsertCommands {
  std::string run_id;
  std::vector<model::Command> commands;
  bool completes_run = false;
};
// Replaces the mutable fields of a command (state, times, result, flags) when its stored
// state is one of `only_if_state_in` (empty: any). rows == 0 when the condition failed.
struct UpdateCommand {
  model::Command command;
  std::vector<model::CommandState> only_if_state_in;
  // An UpdateCommand carrying only the fields it writes (and the id) of `c`: no run, host,
  // spec or creator strings copied into the store's queue. Keep in step with the SQL.
  static UpdateCommand of(const model::Command& c, std::vector<model::CommandState> only_if);
};
// Many UpdateCommand in one mutation, one transaction (cancelling a run of 10,000 commands);
// rows counts the commands whose condition held.
struct UpdateCommands {
  std::vector<UpdateCommand> updates;
};
// Moves many commands from queued to dispatched at one time: one mutation per delivery batch
// instead of one per command. Commands no longer queued are left alone (rows counts the moved).
struct MarkDispatched {
  std::vector<std::string> command_ids;
  int64_t at_ms = 0;
};
// Stores bytes at (command, stream, offset); a chunk already stored at that offset is kept
// unless the new one is longer (a replay that merged chunks; the bytes it shares are equal).
struct AppendOutput {
  model::OutputChunk chunk;
};
struct InsertEnrollToken {
  EnrollToken token;
};
// Decrements uses_left when it is > 0 (rows == 0 when used up); -1 stays -1.
struct ConsumeEnrollToken {
  std::string token_id;
};

struct RevokeEnrollToken {
  std::string token_id;  // rows == 0 when unknown
};
struct InsertApiToken {
  ApiToken token;
};
struct RevokeApiToken {
  std::string token_id;  // rows == 0 when unknown
};
// One audit event (server/core/audit.h).
struct InsertEvent {
  model::Event event;
};
// Deletes at most `max_rows` of the oldest events stored before `before_ms` (rows: how many):
// the janitor sweeps in bounded batches, so no single transaction holds the writer for long.
struct DeleteEventsBefore {
  int64_t before_ms = 0;
  int64_t max_rows = 1000;
};
// Writes nothing: its `done` runs once every mutation queued before it was applied (in the
// same or an earlier transaction); an ack that must follow earlier writes waits on it.
struct Barrier {};

using Mutation =
    std::variant<UpsertHost, SetHostStatus, RecordHeartbeat, RecordHeartbeats, InsertRun,
                 InsertCommands, UpdateCommand, UpdateCommands, MarkDispatched, AppendOutput,
                 InsertEnrollToken, ConsumeEnrollToken, RevokeEnrollToken, InsertApiToken,
                 RevokeApiToken, InsertEvent, DeleteEventsBefore, Barrier>;

struct WriteResult {
  absl::Status status;
  int64_t rows = 0;  // rows changed by this mutation
};
using WriteDone = std::function<void(WriteResult)>;

struct StoreStats {
  uint64_t transactions = 0;
  uint64_t mutations = 0;
  uint64_t failed_transactions = 0;
  double last_commit_ms = 0;
  uint64_t last_batch_size = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // Queues a mutation; `done` (may be empty) runs on the writer thread after commit.
  // Must not block on I/O.
  virtual void write(Mutation mutation, WriteDone done) = 0;
  // Blocks until the mutation committed (convenience for callers on worker threads).
  WriteResult writeAndWait(Mutation mutation);
  // Blocks until everything queued before the call committed.
  virtual absl::Status flush() = 0;
  // Mutations queued and not yet applied: the writer's backlog. The core stops taking agent
  // results while it is too long (they wait in the agents' outboxes), so memory stays bounded.
  virtual size_t pendingWrites() const { return 0; }

  virtual absl::StatusOr<std::vector<model::Host>> loadHosts() = 0;
  virtual absl::StatusOr<std::optional<model::Command>> getCommand(const std::string& id) = 0;
  // Every command in queued, dispatched or running state.
  virtual absl::StatusOr<std::vector<model::Command>> loadOpenCommands() = 0;
  // Newest first.
  virtual absl::StatusOr<std::vector<model::Command>> listCommands(const CommandFilter& filter) = 0;
  virtual absl::StatusOr<std::optional<Run>> getRun(const std::string& id) = 0;
  virtual absl::StatusOr<std::optional<Run>> findRunByIdempotencyKey(const std::string& key) = 0;
  // Runs whose slices were not all stored (pending_targets non-empty), oldest first.
  virtual absl::StatusOr<std::vector<Run>> loadIncompleteRuns() = 0;
  // The hosts that already have a command of the run.
  virtual absl::StatusOr<std::vector<std::string>> runHostIds(const std::string& run_id) = 0;
  // Chunks of one stream ordered by offset, starting with the chunk that contains
  // `from_offset` (or the first after it), up to roughly `max_bytes`.
  virtual absl::StatusOr<std::vector<model::OutputChunk>> readOutput(const std::string& command_id,
                                                                     model::OutputStream stream,
                                                                     uint64_t from_offset,
                                                                     uint64_t max_bytes) = 0;
  // Bytes stored for one stream (every chunk counted; overlapping resends replace, so a
  // well-behaved agent's total stays within what it keeps).
  virtual absl::StatusOr<uint64_t> outputBytes(const std::string& command_id,
                                               model::OutputStream stream) = 0;
  virtual absl::StatusOr<std::optional<EnrollToken>> findEnrollTokenByHash(
      const std::string& token_hash) = 0;
  virtual absl::StatusOr<std::vector<EnrollToken>> listEnrollTokens() = 0;
  virtual absl::StatusOr<std::optional<ApiToken>> findApiTokenByHash(
      const std::string& token_hash) = 0;
  virtual absl::StatusOr<std::vector<ApiToken>> listApiTokens() = 0;
  // A page of the audit log (model::EventQuery: newest first, or oldest first after an id).
  virtual absl::StatusOr<std::vector<model::Event>> listEvents(const model::EventQuery& query) = 0;

  // Store reachable and migrations applied (readiness).
  virtual absl::Status ping() = 0;
  virtual StoreStats stats() const = 0;
};

}  // namespace muster::store
