// Schema migrations of the SQLite store. Append new migrations; never edit an applied one.
#include "store/sqlite/migrations.h"

#include <spdlog/spdlog.h>

#include <iterator>

#include "absl/strings/str_cat.h"

namespace muster::store::sqlite {
namespace {

// Enum columns hold the names from model/names.cc so the file reads well in the sqlite3 shell.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE hosts (
  id                   TEXT NOT NULL PRIMARY KEY,
  status               TEXT NOT NULL CHECK (status IN ('offline', 'online', 'revoked')),
  version              TEXT NOT NULL DEFAULT '',
  facts                TEXT NOT NULL DEFAULT '{}',
  labels               TEXT NOT NULL DEFAULT '{}',
  load1                REAL NOT NULL DEFAULT 0,
  load5                REAL NOT NULL DEFAULT 0,
  load15               REAL NOT NULL DEFAULT 0,
  mem_total_bytes      INTEGER NOT NULL DEFAULT 0,
  mem_available_bytes  INTEGER NOT NULL DEFAULT 0,
  disk_total_bytes     INTEGER NOT NULL DEFAULT 0,
  disk_free_bytes      INTEGER NOT NULL DEFAULT 0,
  uptime_seconds       INTEGER NOT NULL DEFAULT 0,
  enrolled_at_ms       INTEGER NOT NULL DEFAULT 0,
  last_seen_ms         INTEGER NOT NULL DEFAULT 0,
  status_changed_at_ms INTEGER NOT NULL DEFAULT 0,
  credential_hash      TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE runs (
  id                  TEXT NOT NULL PRIMARY KEY,
  idempotency_key     TEXT NOT NULL DEFAULT '',
  request_fingerprint TEXT NOT NULL DEFAULT '',
  created_by          TEXT NOT NULL DEFAULT '',
  created_at_ms       INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Most runs have no key; only keyed runs must be unique.
CREATE UNIQUE INDEX runs_idempotency_key ON runs (idempotency_key) WHERE idempotency_key <> '';

CREATE TABLE commands (
  id                 TEXT NOT NULL PRIMARY KEY,
  run_id             TEXT NOT NULL REFERENCES runs (id),
  host_id            TEXT NOT NULL,
  exec_argv          TEXT NOT NULL DEFAULT '[]',
  exec_script        TEXT NOT NULL DEFAULT '',
  exec_env           TEXT NOT NULL DEFAULT '{}',
  exec_cwd           TEXT NOT NULL DEFAULT '',
  exec_timeout_ms    INTEGER NOT NULL DEFAULT 0,
  exec_kill_grace_ms INTEGER NOT NULL DEFAULT 0,
  state              TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running',
                       'succeeded', 'failed', 'timed_out', 'cancelled', 'expired')),
  idempotency_key    TEXT NOT NULL DEFAULT '',
  created_by         TEXT NOT NULL DEFAULT '',
  created_at_ms      INTEGER NOT NULL DEFAULT 0,
  expires_at_ms      INTEGER NOT NULL DEFAULT 0,
  dispatched_at_ms   INTEGER NOT NULL DEFAULT 0,
  started_at_ms      INTEGER NOT NULL DEFAULT 0,
  finished_at_ms     INTEGER NOT NULL DEFAULT 0,
  exit_code          INTEGER,
  signal             INTEGER NOT NULL DEFAULT 0,
  error              TEXT NOT NULL DEFAULT '',
  output_truncated   INTEGER NOT NULL DEFAULT 0 CHECK (output_truncated IN (0, 1)),
  stdout_bytes       INTEGER NOT NULL DEFAULT 0,
  stderr_bytes       INTEGER NOT NULL DEFAULT 0,
  cancel_requested   INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
  result_source      TEXT NOT NULL DEFAULT 'none'
                       CHECK (result_source IN ('none', 'agent', 'server'))
) STRICT;
-- (x, id): newest-first listings by host, run or state walk the index backwards, no sort.
CREATE INDEX commands_host_id ON commands (host_id, id);
CREATE INDEX commands_run_id ON commands (run_id, id);
CREATE INDEX commands_state ON commands (state, id);

CREATE TABLE command_output (
  command_id TEXT NOT NULL REFERENCES commands (id),
  stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
  offset     INTEGER NOT NULL CHECK (offset >= 0),
  data       BLOB NOT NULL,
  PRIMARY KEY (command_id, stream, offset)
) STRICT;

CREATE TABLE enroll_tokens (
  id            TEXT NOT NULL PRIMARY KEY,
  token_hash    TEXT NOT NULL UNIQUE,
  uses_left     INTEGER NOT NULL CHECK (uses_left >= -1),
  expires_at_ms INTEGER NOT NULL DEFAULT 0,
  labels        TEXT NOT NULL DEFAULT '{}',
  created_by    TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL DEFAULT 0,
  revoked       INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
)sql";

constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE api_tokens (
  id            TEXT NOT NULL PRIMARY KEY,
  token_hash    TEXT NOT NULL UNIQUE,
  role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  name          TEXT NOT NULL DEFAULT '',
  created_by    TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL DEFAULT 0,
  expires_at_ms INTEGER NOT NULL DEFAULT 0,
  revoked       INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
)sql";

// A large run is stored in slices; until the last one commits the run lists its targets.
constexpr const char* kSchemaV3 = R"sql(
ALTER TABLE runs ADD COLUMN pending_targets TEXT NOT NULL DEFAULT '[]';
CREATE INDEX runs_incomplete ON runs (id) WHERE pending_targets <> '[]';
)sql";

// A run for many hosts keeps its commands out of the per-host index: storing a 10,000-host run
// put 10,000 entries at random places of an index that holds the fleet's whole history, one
// page written for each (4 KB of WAL per command, most of a fan-out's store time). A host's
// commands of such runs are found through the runs instead (commands_large_run_host).
// 64 is kLargeRunHosts (rows.h); queries repeat these WHERE terms so the planner can use the
// partial indexes. Rows stored before stay in commands_host_id (large_run 0).
constexpr const char* kSchemaV4 = R"sql(
ALTER TABLE runs ADD COLUMN host_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN large_run INTEGER NOT NULL DEFAULT 0 CHECK (large_run IN (0, 1));
CREATE INDEX runs_large ON runs (id) WHERE host_count >= 64;
DROP INDEX commands_host_id;
CREATE INDEX commands_host_id ON commands (host_id, id) WHERE large_run = 0;
CREATE INDEX commands_large_run_host ON commands (run_id, host_id) WHERE large_run = 1;
)sql";

// Identity: a token can be bound to one host (re-imaging it), and a host remembers which of
// its labels came from its token or an operator (its agent cannot replace them). Commands
// carry secret environment values apart from the rest (never returned by the API).
constexpr const char* kSchemaV5 = R"sql(
ALTER TABLE enroll_tokens ADD COLUMN host_id TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN pinned_labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE hosts ADD COLUMN enroll_attempt_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE commands ADD COLUMN exec_secret_env TEXT NOT NULL DEFAULT '{}';
)sql";

// The audit log (server/core/audit.h). Ids are ULIDs, so the primary key is time order and
// every listing walks it backwards; each filter has an (x, id) index for the same walk.
// host_id and actor are '' when there is none: partial indexes keep those rows out.
constexpr const char* kSchemaV6 = R"sql(
CREATE TABLE events (
  id       TEXT NOT NULL PRIMARY KEY,
  at_ms    INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  actor    TEXT NOT NULL DEFAULT '',
  actor_id TEXT NOT NULL DEFAULT '',
  source   TEXT NOT NULL DEFAULT '',
  target   TEXT NOT NULL DEFAULT '',
  host_id  TEXT NOT NULL DEFAULT '',
  result   TEXT NOT NULL DEFAULT '',
  detail   TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX events_kind ON events (kind, id);
CREATE INDEX events_host ON events (host_id, id) WHERE host_id <> '';
CREATE INDEX events_actor ON events (actor, id) WHERE actor <> '';
CREATE INDEX events_at ON events (at_ms);
)sql";

// mTLS: each host's client certificate (fingerprint, expiry) and the one it replaced.
constexpr const char* kSchemaV7 = R"sql(
ALTER TABLE hosts ADD COLUMN client_cert_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN client_cert_not_after_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN prev_client_cert_sha256 TEXT NOT NULL DEFAULT '';
)sql";

// Artifacts: the transfers a command allows (model::ArtifactExpectation), a list of objects.
constexpr const char* kSchemaV8 = R"sql(
ALTER TABLE commands ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]';
)sql";

constexpr Migration kMigrations[] = {
    {1, "hosts, runs, commands, command_output, enroll_tokens", kSchemaV1},
    {2, "api_tokens", kSchemaV2},
    {3, "runs.pending_targets (runs stored in slices)", kSchemaV3},
    {4, "large runs out of the per-host command index", kSchemaV4},
    {5, "host-bound enrollment tokens, pinned host labels, secret env", kSchemaV5},
    {6, "events (the audit log)", kSchemaV6},
    {7, "hosts' client certificates (mTLS)", kSchemaV7},
    {8, "commands.artifacts (artifact expectations)", kSchemaV8},
};

absl::Status applyOne(Connection& conn, const Migration& m, int64_t now_ms) {
  if (auto st = conn.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  // Re-read inside the write lock: another process may have migrated meanwhile.
  auto current = currentSchemaVersion(conn);
  absl::Status st = current.status();
  if (st.ok() && *current < m.version) {
    st = conn.exec(m.sql);
    if (st.ok()) {
      auto insert = conn.prepare(
          "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?1, ?2, "
          "?3)");
      st = insert.status();
      if (st.ok())
        st = insert->bindInt(1, m.version).bindText(2, m.description).bindInt(3, now_ms).run();
    }
  }
  if (st.ok()) st = conn.exec("COMMIT");
  if (!st.ok() && conn.inTransaction()) (void)conn.exec("ROLLBACK");
  return st;
}

}  // namespace

int64_t latestSchemaVersion() { return std::prev(std::end(kMigrations))->version; }

absl::StatusOr<int64_t> currentSchemaVersion(Connection& conn) {
  auto text = conn.queryText("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  if (!text.ok()) return text.status();
  int64_t version = 0;
  for (char c : *text) {
    if (c < '0' || c > '9') {
      return absl::DataLossError(
          absl::StrCat("schema_migrations holds a non-numeric version '", *text, "'"));
    }
    version = version * 10 + (c - '0');
  }
  return version;
}

absl::Status migrate(Connection& conn, int64_t now_ms) {
  const std::string where = absl::StrCat("migrating database ", conn.path());
  absl::Status st = conn.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " version INTEGER NOT NULL PRIMARY KEY,"
      " description TEXT NOT NULL,"
      " applied_at_ms INTEGER NOT NULL) STRICT");
  if (!st.ok()) return annotate(st, where);
  auto current = currentSchemaVersion(conn);
  if (!current.ok()) return annotate(current.status(), where);
  if (*current > latestSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", conn.path(), " has schema version ", *current,
        " but this binary knows versions up to ", latestSchemaVersion(),
        ": it was written by a newer Muster release; run that release or restore a backup "
        "taken before the upgrade"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= *current) continue;
    // Some rebuild an index over every stored command: seconds on a large database.
    spdlog::info("database {}: applying schema migration {} ({})", conn.path(), m.version,
                 m.description);
    st = applyOne(conn, m, now_ms);
    if (!st.ok()) {
      return annotate(st, absl::StrCat(where, ": schema migration ", m.version, " (", m.description,
                                       ") failed and was rolled back"));
    }
  }
  return absl::OkStatus();
}

}  // namespace muster::store::sqlite
