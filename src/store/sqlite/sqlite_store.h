// The embedded Store: one SQLite file in WAL mode, a group-commit writer thread, and a
// separate read connection, so reads never queue behind an fsync.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/store.h"

namespace muster::store {

namespace sqlite {
class Connection;
class GroupCommitWriter;
class Checkpointer;
// The statement SqliteStore::listCommands runs for `filter` (parameters ?1 run, ?2 host,
// ?3 state, ?4 before id, ?5 limit); tests check its query plan.
std::string listCommandsSql(const CommandFilter& filter);
// The statement SqliteStore::listEvents runs for `query` (one per combination of filters).
std::string listEventsSql(const model::EventQuery& query);
}  // namespace sqlite

struct SqliteStoreOptions {
  // How long a statement waits for a lock held by another connection before failing.
  int busy_timeout_ms = 5000;
  // Mutations per transaction at most.
  size_t max_batch = 4096;
  // How often the WAL is copied back into the database file (off the writer's thread).
  int64_t checkpoint_interval_ms = 250;
  // WAL length (pages) past which the writer checkpoints the rest itself and restarts it.
  int wal_restart_pages = 8192;
};

// StoreStats of this store: `transactions` counts committed transactions, `mutations` every
// mutation the writer handled (whatever its outcome), `failed_transactions` transactions that
// could not begin or commit, `last_commit_ms` the duration of the last transaction from BEGIN
// to the end of COMMIT (fsync included).
class SqliteStore final : public Store {
 public:
  // Opens the database at `path` (created if missing) and applies pending schema
  // migrations. Fails if the file has a newer schema than this binary knows.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> open(const std::string& path);
  static absl::StatusOr<std::unique_ptr<SqliteStore>> open(const std::string& path,
                                                           const SqliteStoreOptions& options);
  // Commits everything still queued, then closes the database.
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // `done` runs on the writer thread; it must not block on this store (flush, writeAndWait).
  void write(Mutation mutation, WriteDone done) override;
  size_t pendingWrites() const override;
  absl::Status flush() override;

  absl::StatusOr<std::vector<model::Host>> loadHosts() override;
  absl::StatusOr<std::optional<model::Command>> getCommand(const std::string& id) override;
  absl::StatusOr<std::vector<model::Command>> loadOpenCommands() override;
  absl::StatusOr<std::vector<Run>> loadIncompleteRuns() override;
  absl::StatusOr<std::vector<std::string>> runHostIds(const std::string& run_id) override;
  // Filters combine with AND; `limit` is clamped to 1..1000.
  absl::StatusOr<std::vector<model::Command>> listCommands(const CommandFilter& filter) override;
  absl::StatusOr<std::optional<Run>> getRun(const std::string& id) override;
  absl::StatusOr<std::optional<Run>> findRunByIdempotencyKey(const std::string& key) override;
  // Whole chunks: the first may start before `from_offset`. At least one chunk is returned
  // when there is one; reading stops once `max_bytes` have been gathered.
  absl::StatusOr<std::vector<model::OutputChunk>> readOutput(const std::string& command_id,
                                                             model::OutputStream stream,
                                                             uint64_t from_offset,
                                                             uint64_t max_bytes) override;
  absl::StatusOr<uint64_t> outputBytes(const std::string& command_id,
                                       model::OutputStream stream) override;
  absl::StatusOr<std::optional<EnrollToken>> findEnrollTokenByHash(
      const std::string& token_hash) override;
  // Oldest first.
  absl::StatusOr<std::vector<EnrollToken>> listEnrollTokens() override;
  absl::StatusOr<std::optional<ApiToken>> findApiTokenByHash(
      const std::string& token_hash) override;
  absl::StatusOr<std::vector<ApiToken>> listApiTokens() override;
  // `limit` is clamped to 1..1001 (a page of 1000 and one more telling there is a next one).
  absl::StatusOr<std::vector<model::Event>> listEvents(const model::EventQuery& query) override;

  absl::Status ping() override;
  StoreStats stats() const override;
  // WAL checkpoint attempts made so far by the checkpoint thread.
  uint64_t checkpoints() const;

 private:
  SqliteStore(std::string path, std::unique_ptr<sqlite::Connection> reader,
              std::unique_ptr<sqlite::GroupCommitWriter> writer,
              std::unique_ptr<sqlite::Checkpointer> checkpointer);

  const std::string path_;
  std::mutex read_mu_;
  std::unique_ptr<sqlite::Connection> reader_ ABSL_GUARDED_BY(read_mu_);
  std::unique_ptr<sqlite::GroupCommitWriter> writer_;
  std::unique_ptr<sqlite::Checkpointer> checkpointer_;
};

}  // namespace muster::store
