// SqliteStore: opening and migrating the file, and every read (on the read connection).
#include "store/sqlite/sqlite_store.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"
#include "store/sqlite/checkpointer.h"
#include "store/sqlite/connection.h"
#include "store/sqlite/group_commit.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/rows.h"

namespace muster::store {

using sqlite::Connection;
using sqlite::Stmt;

namespace {

constexpr int kMaxListLimit = 1000;

template <typename T>
using Decoder = absl::StatusOr<T> (*)(const Stmt&);

template <typename T>
absl::StatusOr<std::vector<T>> allRows(Stmt& stmt, Decoder<T> decode) {
  std::vector<T> out;
  for (;;) {
    auto row = stmt.step();
    if (!row.ok()) return row.status();
    if (!*row) return out;
    auto value = decode(stmt);
    if (!value.ok()) return value.status();
    out.push_back(std::move(*value));
  }
}

template <typename T>
absl::StatusOr<std::optional<T>> firstRow(Stmt& stmt, Decoder<T> decode) {
  auto row = stmt.step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<T>();
  auto value = decode(stmt);
  if (!value.ok()) return value.status();
  return std::optional<T>(std::move(*value));
}

absl::StatusOr<std::string> firstColumnText(const Stmt& s) { return s.columnText(0); }

// Runs `sql` (bound by `bind`) on the read connection and decodes every row.
template <typename T, typename Bind>
absl::StatusOr<std::vector<T>> queryAll(Connection& conn, const std::string& sql, Bind bind,
                                        Decoder<T> decode, const std::string& context) {
  auto stmt = conn.prepare(sql);
  if (!stmt.ok()) return sqlite::annotate(stmt.status(), context);
  bind(*stmt);
  auto rows = allRows(*stmt, decode);
  if (!rows.ok()) return sqlite::annotate(rows.status(), context);
  return rows;
}

template <typename T, typename Bind>
absl::StatusOr<std::optional<T>> queryOne(Connection& conn, const std::string& sql, Bind bind,
                                          Decoder<T> decode, const std::string& context) {
  auto stmt = conn.prepare(sql);
  if (!stmt.ok()) return sqlite::annotate(stmt.status(), context);
  bind(*stmt);
  auto row = firstRow(*stmt, decode);
  if (!row.ok()) return sqlite::annotate(row.status(), context);
  return row;
}

void bindNothing(Stmt&) {}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path) {
  return open(path, SqliteStoreOptions{});
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path,
                                                               const SqliteStoreOptions& options) {
  auto writer_conn = Connection::open(path, Connection::Role::kWriter, options.busy_timeout_ms);
  if (!writer_conn.ok()) return writer_conn.status();
  if (auto st = sqlite::migrate(**writer_conn, nowMs()); !st.ok()) return st;
  // The Checkpointer's thread copies the WAL back as it grows. But only a writer that begins
  // a transaction when everything is copied can restart the WAL from its start, and a busy
  // writer rarely does: past this many pages the writer's COMMIT checkpoints the little left
  // itself, so the next transaction restarts the WAL. Without it the WAL grew to 400 MB under
  // sustained load, and recovering it slowed a restart after a crash.
  if (auto st = (*writer_conn)
                    ->exec(absl::StrCat("PRAGMA wal_autocheckpoint = ", options.wal_restart_pages));
      !st.ok()) {
    return st;
  }
  auto reader = Connection::open(path, Connection::Role::kReader, options.busy_timeout_ms);
  if (!reader.ok()) return reader.status();
  auto checkpoint_conn =
      Connection::open(path, Connection::Role::kCheckpoint, options.busy_timeout_ms);
  if (!checkpoint_conn.ok()) return checkpoint_conn.status();
  auto writer =
      std::make_unique<sqlite::GroupCommitWriter>(std::move(*writer_conn), options.max_batch);
  auto checkpointer = std::make_unique<sqlite::Checkpointer>(std::move(*checkpoint_conn),
                                                             options.checkpoint_interval_ms);
  return std::unique_ptr<SqliteStore>(
      new SqliteStore(path, std::move(*reader), std::move(writer), std::move(checkpointer)));
}

SqliteStore::SqliteStore(std::string path, std::unique_ptr<Connection> reader,
                         std::unique_ptr<sqlite::GroupCommitWriter> writer,
                         std::unique_ptr<sqlite::Checkpointer> checkpointer)
    : path_(std::move(path)),
      reader_(std::move(reader)),
      writer_(std::move(writer)),
      checkpointer_(std::move(checkpointer)) {}

SqliteStore::~SqliteStore() {
  writer_.reset();        // drains the queue
  checkpointer_.reset();  // one last checkpoint; the read connection closes after it
}

size_t SqliteStore::pendingWrites() const { return writer_->pending(); }

void SqliteStore::write(Mutation mutation, WriteDone done) {
  writer_->submit(std::move(mutation), std::move(done));
}

absl::Status SqliteStore::flush() { return writer_->flush(); }

StoreStats SqliteStore::stats() const { return writer_->stats(); }

uint64_t SqliteStore::checkpoints() const { return checkpointer_->checkpoints(); }

absl::Status SqliteStore::ping() {
  std::lock_guard lock(read_mu_);
  auto version = sqlite::currentSchemaVersion(*reader_);
  if (!version.ok()) {
    return sqlite::annotate(version.status(), absl::StrCat("database ", path_, " is not readable"));
  }
  if (*version != sqlite::latestSchemaVersion()) {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path_, " has schema version ", *version, ", expected ",
                     sqlite::latestSchemaVersion(), "; was it changed by another Muster release?"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<model::Host>> SqliteStore::loadHosts() {
  // Statement texts are never destroyed: the writer thread may still run one while static
  // destructors run at exit (a store left open, as fuzz targets leave theirs).
  static const std::string& sql =
      *new std::string(absl::StrCat("SELECT ", sqlite::kHostColumns, " FROM hosts ORDER BY id"));
  std::lock_guard lock(read_mu_);
  return queryAll(*reader_, sql, bindNothing, &sqlite::hostFromRow, "loading hosts");
}

absl::StatusOr<std::optional<model::Command>> SqliteStore::getCommand(const std::string& id) {
  static const std::string& sql = *new std::string(
      absl::StrCat("SELECT ", sqlite::kCommandColumns, " FROM commands WHERE id = ?1"));
  std::lock_guard lock(read_mu_);
  return queryOne(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, id); }, &sqlite::commandFromRow,
      absl::StrCat("reading command ", id));
}

absl::StatusOr<std::vector<model::Command>> SqliteStore::loadOpenCommands() {
  static const std::string& sql = *new std::string(absl::StrCat(
      "SELECT ", sqlite::kCommandColumns,
      " FROM commands WHERE state IN ('queued', 'dispatched', 'running') ORDER BY id"));
  std::lock_guard lock(read_mu_);
  return queryAll(*reader_, sql, bindNothing, &sqlite::commandFromRow, "loading open commands");
}

std::string sqlite::listCommandsSql(const CommandFilter& filter) {
  // One cached statement per combination of filters, so each can use its own index.
  auto conditions = [&](const char* table) {
    std::string out;
    if (filter.state.has_value()) absl::StrAppend(&out, " AND ", table, "state = ?3");
    if (!filter.before_id.empty()) absl::StrAppend(&out, " AND ", table, "id < ?4");
    return out;
  };
  if (!filter.host_id.empty()) {
    // A host's commands: those of small runs by the per-host index; those of large runs
    // (kLargeRunHosts) by the (run, host) index, probing each large run when no run is given
    // (CROSS JOIN: runs outside, so the planner never scans every large-run command
    // instead; the cost grows with the number of large runs, ~2 µs each). Merged newest first.
    const std::string run = filter.run_id.empty() ? "" : " AND run_id = ?1";
    std::string large =
        filter.run_id.empty()
            ? absl::StrCat(
                  "SELECT c.* FROM runs r CROSS JOIN commands c ON c.run_id = r.id AND "
                  "c.host_id = ?2 AND c.large_run = 1 WHERE r.host_count >= ",
                  sqlite::kLargeRunHosts, conditions("c."), " ORDER BY c.id DESC")
            : absl::StrCat(
                  "SELECT * FROM commands WHERE run_id = ?1 AND host_id = ?2 AND "
                  "large_run = 1",
                  conditions(""));
    return absl::StrCat("SELECT ", sqlite::kCommandColumns, " FROM (SELECT ",
                        sqlite::kCommandColumns, " FROM commands WHERE host_id = ?2", run,
                        " AND large_run = 0", conditions(""),
                        " ORDER BY id DESC LIMIT ?5) UNION ALL SELECT ", sqlite::kCommandColumns,
                        " FROM (", large, " LIMIT ?5) ORDER BY id DESC LIMIT ?5");
  }
  std::string sql = absl::StrCat("SELECT ", sqlite::kCommandColumns, " FROM commands WHERE 1");
  if (!filter.run_id.empty()) sql += " AND run_id = ?1";
  absl::StrAppend(&sql, conditions(""), " ORDER BY id DESC LIMIT ?5");
  return sql;
}

absl::StatusOr<std::vector<model::Command>> SqliteStore::listCommands(const CommandFilter& filter) {
  const std::string sql = sqlite::listCommandsSql(filter);
  const int limit = std::clamp(filter.limit, 1, kMaxListLimit);
  std::lock_guard lock(read_mu_);
  return queryAll(
      *reader_, sql,
      [&](Stmt& s) {
        s.bindText(1, filter.run_id).bindText(2, filter.host_id);
        if (filter.state.has_value()) s.bindText(3, model::toString(*filter.state));
        s.bindText(4, filter.before_id).bindInt(5, limit);
      },
      &sqlite::commandFromRow, "listing commands");
}

absl::StatusOr<std::optional<Run>> SqliteStore::getRun(const std::string& id) {
  static const std::string& sql =
      *new std::string(absl::StrCat("SELECT ", sqlite::kRunColumns, " FROM runs WHERE id = ?1"));
  std::lock_guard lock(read_mu_);
  return queryOne(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, id); }, &sqlite::runFromRow,
      absl::StrCat("reading run ", id));
}

absl::StatusOr<std::vector<Run>> SqliteStore::loadIncompleteRuns() {
  // The `<> '[]'` term lets the planner use the partial index runs_incomplete.
  static const std::string& sql = *new std::string(absl::StrCat(
      "SELECT ", sqlite::kRunColumns, " FROM runs WHERE pending_targets <> '[]' ORDER BY id"));
  std::lock_guard lock(read_mu_);
  return queryAll(*reader_, sql, bindNothing, &sqlite::runFromRow, "loading incomplete runs");
}

absl::StatusOr<std::vector<std::string>> SqliteStore::runHostIds(const std::string& run_id) {
  static const std::string& sql =
      *new std::string("SELECT host_id FROM commands WHERE run_id = ?1");
  std::lock_guard lock(read_mu_);
  return queryAll(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, run_id); }, &firstColumnText,
      absl::StrCat("listing the hosts of run ", run_id));
}

absl::StatusOr<std::optional<Run>> SqliteStore::findRunByIdempotencyKey(const std::string& key) {
  if (key.empty()) return std::optional<Run>();
  // The `<> ''` term lets the planner use the partial unique index.
  static const std::string& sql = *new std::string(
      absl::StrCat("SELECT ", sqlite::kRunColumns,
                   " FROM runs WHERE idempotency_key = ?1 AND idempotency_key <> ''"));
  std::lock_guard lock(read_mu_);
  return queryOne(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, key); }, &sqlite::runFromRow,
      "looking up a run by idempotency key");
}

absl::StatusOr<std::vector<model::OutputChunk>> SqliteStore::readOutput(
    const std::string& command_id, model::OutputStream stream, uint64_t from_offset,
    uint64_t max_bytes) {
  // Start at the first chunk that covers `from`, else at `from`. Not the last chunk at or
  // below it: chunks can nest (a replay merged into one long chunk at 0 beside the short
  // live ones), and a short one ending before `from` would hide the long one's bytes past
  // it. length() of a blob reads no content; a stream holds a bounded number of chunks.
  static const std::string& sql = *new std::string(
      "SELECT offset, data FROM command_output WHERE command_id = ?1 AND stream = ?2 AND "
      "offset >= COALESCE((SELECT MIN(offset) FROM command_output WHERE command_id = ?1 AND "
      "stream = ?2 AND offset <= ?3 AND offset + length(data) > ?3), ?3) ORDER BY offset");
  const auto from =
      static_cast<int64_t>(std::min<uint64_t>(from_offset, std::numeric_limits<int64_t>::max()));
  const std::string context =
      absl::StrCat("reading ", std::string(model::toString(stream)), " of command ", command_id);

  std::lock_guard lock(read_mu_);
  auto stmt = reader_->prepare(sql);
  if (!stmt.ok()) return sqlite::annotate(stmt.status(), context);
  stmt->bindText(1, command_id).bindText(2, model::toString(stream)).bindInt(3, from);
  std::vector<model::OutputChunk> out;
  uint64_t gathered = 0;
  while (out.empty() || gathered < max_bytes) {
    auto row = stmt->step();
    if (!row.ok()) return sqlite::annotate(row.status(), context);
    if (!*row) break;
    model::OutputChunk chunk;
    chunk.command_id = command_id;
    chunk.stream = stream;
    chunk.offset = static_cast<uint64_t>(stmt->columnInt(0));
    chunk.data = stmt->columnBlob(1);
    gathered += chunk.data.size();
    out.push_back(std::move(chunk));
  }
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::outputBytes(const std::string& command_id,
                                                  model::OutputStream stream) {
  static const std::string& sql = *new std::string(
      "SELECT COALESCE(SUM(length(data)), 0) FROM command_output WHERE command_id = ?1 AND "
      "stream = ?2");
  const std::string context =
      absl::StrCat("sizing ", std::string(model::toString(stream)), " of command ", command_id);
  std::lock_guard lock(read_mu_);
  auto stmt = reader_->prepare(sql);
  if (!stmt.ok()) return sqlite::annotate(stmt.status(), context);
  stmt->bindText(1, command_id).bindText(2, model::toString(stream));
  auto row = stmt->step();
  if (!row.ok()) return sqlite::annotate(row.status(), context);
  if (!*row) return uint64_t{0};
  return static_cast<uint64_t>(stmt->columnInt(0));
}

absl::StatusOr<std::optional<EnrollToken>> SqliteStore::findEnrollTokenByHash(
    const std::string& token_hash) {
  static const std::string& sql = *new std::string(absl::StrCat(
      "SELECT ", sqlite::kEnrollTokenColumns, " FROM enroll_tokens WHERE token_hash = ?1"));
  std::lock_guard lock(read_mu_);
  return queryOne(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, token_hash); }, &sqlite::enrollTokenFromRow,
      "looking up an enrollment token");
}

absl::StatusOr<std::vector<EnrollToken>> SqliteStore::listEnrollTokens() {
  static const std::string& sql = *new std::string(absl::StrCat(
      "SELECT ", sqlite::kEnrollTokenColumns, " FROM enroll_tokens ORDER BY created_at_ms, id"));
  std::lock_guard lock(read_mu_);
  return queryAll(*reader_, sql, bindNothing, &sqlite::enrollTokenFromRow,
                  "listing enrollment tokens");
}

absl::StatusOr<std::optional<ApiToken>> SqliteStore::findApiTokenByHash(
    const std::string& token_hash) {
  static const std::string& sql = *new std::string(
      absl::StrCat("SELECT ", sqlite::kApiTokenColumns, " FROM api_tokens WHERE token_hash = ?1"));
  std::lock_guard lock(read_mu_);
  return queryOne(
      *reader_, sql, [&](Stmt& s) { s.bindText(1, token_hash); }, &sqlite::apiTokenFromRow,
      "looking up an API token");
}

absl::StatusOr<std::vector<ApiToken>> SqliteStore::listApiTokens() {
  static const std::string& sql = *new std::string(absl::StrCat(
      "SELECT ", sqlite::kApiTokenColumns, " FROM api_tokens ORDER BY created_at_ms, id"));
  std::lock_guard lock(read_mu_);
  return queryAll(*reader_, sql, bindNothing, &sqlite::apiTokenFromRow, "listing API tokens");
}

std::string sqlite::listEventsSql(const model::EventQuery& q) {
  // Only the filters given, so each combination is its own cached statement and the planner
  // picks the index of the most selective one; every index ends in id, so no sort.
  std::string sql = absl::StrCat("SELECT ", sqlite::kEventColumns, " FROM events WHERE 1");
  if (!q.kind.empty()) sql += " AND (kind = ?1 OR (kind > ?2 AND kind < ?3))";
  if (!q.host_id.empty()) sql += " AND host_id = ?4";
  if (!q.actor.empty()) sql += " AND actor = ?5";
  if (q.since_ms > 0) sql += " AND at_ms >= ?6";
  if (q.until_ms > 0) sql += " AND at_ms < ?7";
  if (!q.before_id.empty()) sql += " AND id < ?8";
  if (!q.after_id.empty()) sql += " AND id > ?9";
  sql += q.after_id.empty() ? " ORDER BY id DESC LIMIT ?10" : " ORDER BY id ASC LIMIT ?10";
  return sql;
}

absl::StatusOr<std::vector<model::Event>> SqliteStore::listEvents(const model::EventQuery& q) {
  const std::string sql = sqlite::listEventsSql(q);
  const int limit = std::clamp(q.limit, 1, kMaxListLimit + 1);
  std::lock_guard lock(read_mu_);
  return queryAll(
      *reader_, sql,
      [&](Stmt& s) {
        // A family "link" matches "link.x...": every kind between "link." and "link/" ('/'
        // follows '.' in ASCII).
        s.bindText(1, q.kind)
            .bindText(2, q.kind + ".")
            .bindText(3, q.kind + "/")
            .bindText(4, q.host_id)
            .bindText(5, q.actor)
            .bindInt(6, q.since_ms)
            .bindInt(7, q.until_ms)
            .bindText(8, q.before_id)
            .bindText(9, q.after_id)
            .bindInt(10, limit);
      },
      &sqlite::eventFromRow, "listing audit events");
}

}  // namespace muster::store
