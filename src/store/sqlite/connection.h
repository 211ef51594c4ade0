// Thin RAII layer over one sqlite3 connection: pragmas, cached prepared statements, and the
// mapping of SQLite result codes to absl::Status for the operator.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace muster::store::sqlite {

// Turns a SQLite result code into a canonical status whose message starts with `context`
// (what we were doing) and ends with what the operator can do about it.
absl::Status sqliteStatus(int rc, const std::string& detail, const std::string& context);

// Prefixes `status` with `context`, keeping its code.
absl::Status annotate(const absl::Status& status, const std::string& context);

// A cached prepared statement in use. Going out of scope resets it and clears its bindings,
// so no statement keeps a read snapshot (or the WAL) pinned after the call that used it.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Stmt(Stmt&& other) noexcept;
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt();

  // Parameters are 1-based, as in SQL (?1, ?2, ...). A failed bind surfaces at step().
  Stmt& bindInt(int index, int64_t value);
  Stmt& bindDouble(int index, double value);
  Stmt& bindText(int index, std::string_view value);
  Stmt& bindBlob(int index, std::string_view value);
  Stmt& bindNull(int index);

  // Advances; true when a row is available.
  absl::StatusOr<bool> step();
  // Steps until done (statements that return no rows).
  absl::Status run();
  // Makes the statement ready to run again with new bindings (loops over many rows).
  void reset();

  // Columns are 0-based, as in the SQLite API.
  bool columnIsNull(int col) const;
  int64_t columnInt(int col) const;
  double columnDouble(int col) const;
  std::string columnText(int col) const;
  std::string columnBlob(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

class Connection {
 public:
  enum class Role {
    kWriter,      // journal_mode=WAL, synchronous=FULL, foreign_keys=ON
    kReader,      // query_only=ON
    kCheckpoint,  // only runs checkpoints
  };

  static absl::StatusOr<std::unique_ptr<Connection>> open(const std::string& path, Role role,
                                                          int busy_timeout_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more statements without results (schema scripts, pragmas).
  absl::Status exec(const std::string& sql);
  // First column of the first row as text; empty when there is no row or it is NULL.
  absl::StatusOr<std::string> queryText(const std::string& sql);
  // A prepared statement from this connection's cache (prepared on first use).
  absl::StatusOr<Stmt> prepare(const std::string& sql);

  // Runs a WAL checkpoint (SQLITE_CHECKPOINT_*); reports the WAL's length in pages and how
  // many of them are now in the database file.
  absl::Status checkpoint(int mode, int* wal_frames, int* checkpointed);

  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t changes() const;
  bool inTransaction() const;
  const std::string& path() const { return path_; }

 private:
  Connection(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  sqlite3* db_;
  std::string path_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

}  // namespace muster::store::sqlite
