// Connection, Stmt and the SQLite -> absl::Status mapping.
#include "store/sqlite/connection.h"

#include <mutex>

#include "absl/strings/str_cat.h"

namespace muster::store::sqlite {

absl::Status sqliteStatus(int rc, const std::string& detail, const std::string& context) {
  std::string msg = absl::StrCat(context, ": ", detail);
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return absl::OkStatus();
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(msg);
      }
      return absl::InvalidArgumentError(msg);
    case SQLITE_TOOBIG:
      return absl::InvalidArgumentError(absl::StrCat(msg, " (value larger than SQLite allows)"));
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(
          absl::StrCat(msg, "; the disk holding the database is full: free disk space"));
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(absl::StrCat(msg, "; the server is out of memory"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(absl::StrCat(
          msg,
          "; another connection holds the lock: is a second musterd using the same data "
          "directory?"));
    case SQLITE_IOERR:
      return absl::UnavailableError(
          absl::StrCat(msg, "; I/O error on the database: check the disk and the kernel log"));
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::UnavailableError(absl::StrCat(
          msg, "; check that the data directory exists and the server user may write to it"));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(absl::StrCat(
          msg, "; the database file is damaged or not a Muster database: restore a backup"));
    default: return absl::InternalError(absl::StrCat(msg, " (sqlite code ", rc, ")"));
  }
}

absl::Status annotate(const absl::Status& status, const std::string& context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// --- Stmt ------------------------------------------------------------------------------

Stmt::Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(other.stmt_), bind_rc_(other.bind_rc_) {
  other.stmt_ = nullptr;
}

Stmt::~Stmt() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

Stmt& Stmt::bindInt(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Stmt& Stmt::bindDouble(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Stmt& Stmt::bindText(int index, std::string_view value) {
  // A null pointer would bind NULL; an empty string must stay an empty string.
  const char* data = value.data() != nullptr ? value.data() : "";
  int rc = sqlite3_bind_text64(stmt_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Stmt& Stmt::bindBlob(int index, std::string_view value) {
  const char* data = value.data() != nullptr ? value.data() : "";
  int rc = sqlite3_bind_blob64(stmt_, index, data, value.size(), SQLITE_TRANSIENT);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Stmt& Stmt::bindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

absl::StatusOr<bool> Stmt::step() {
  if (bind_rc_ != SQLITE_OK) {
    return sqliteStatus(bind_rc_, sqlite3_errstr(bind_rc_), "binding a statement parameter");
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqliteStatus(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_), "sqlite");
}

absl::Status Stmt::run() {
  for (;;) {
    auto row = step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

void Stmt::reset() {
  sqlite3_reset(stmt_);
  bind_rc_ = SQLITE_OK;
}

bool Stmt::columnIsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

int64_t Stmt::columnInt(int col) const { return sqlite3_column_int64(stmt_, col); }

double Stmt::columnDouble(int col) const { return sqlite3_column_double(stmt_, col); }

std::string Stmt::columnText(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

std::string Stmt::columnBlob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return {};
  return std::string(static_cast<const char*>(p), static_cast<size_t>(n));
}

// --- Connection ------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Connection>> Connection::open(const std::string& path, Role role,
                                                             int busy_timeout_ms) {
  // Memory statistics take a global mutex on every allocation (~20% of the writer's time);
  // nothing reads them. Only possible before SQLite initializes; harmless if too late.
  static std::once_flag no_memstatus;
  std::call_once(no_memstatus, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (role == Role::kWriter) flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return sqliteStatus(rc, detail, absl::StrCat("cannot open database ", path));
  }
  sqlite3_extended_result_codes(db, 1);
  std::unique_ptr<Connection> conn(new Connection(db, path));

  // Waits for a lock held by a checkpoint or another process instead of failing at once.
  absl::Status st = conn->exec(absl::StrCat("PRAGMA busy_timeout = ", busy_timeout_ms));
  if (role == Role::kWriter) {
    if (st.ok()) {
      auto mode = conn->queryText("PRAGMA journal_mode = WAL");
      if (!mode.ok()) {
        st = mode.status();
      } else if (*mode != "wal") {
        st = absl::FailedPreconditionError(absl::StrCat(
            "cannot switch to WAL journal mode (got '", *mode,
            "'); put the data directory on a local file system that supports shared memory"));
      }
    }
    // FULL: a commit acknowledged to an agent survives power loss, not just a crash.
    if (st.ok()) st = conn->exec("PRAGMA synchronous = FULL");
    if (st.ok()) st = conn->exec("PRAGMA foreign_keys = ON");
    // 64 MiB of page cache (default 2 MiB): a 10,000-host run touches index pages all over
    // the host-id index, and the writer should find them in memory, not re-read them.
    if (st.ok()) st = conn->exec("PRAGMA cache_size = -65536");
  } else if (role == Role::kCheckpoint) {
    if (st.ok()) st = conn->exec("PRAGMA synchronous = FULL");
  } else {
    if (st.ok()) st = conn->exec("PRAGMA query_only = ON");
  }
  if (!st.ok()) return annotate(st, absl::StrCat("opening database ", path));
  return conn;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  cache_.clear();
  sqlite3_close_v2(db_);
}

absl::Status Connection::exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string detail = err != nullptr ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return sqliteStatus(sqlite3_extended_errcode(db_), detail, "sqlite");
}

absl::StatusOr<std::string> Connection::queryText(const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &raw, nullptr);
  if (rc != SQLITE_OK) {
    return sqliteStatus(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_), "sqlite");
  }
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> owned(raw, &sqlite3_finalize);
  Stmt stmt(db_, raw);
  auto row = stmt.step();
  if (!row.ok()) return row.status();
  return *row ? stmt.columnText(0) : std::string();
}

absl::StatusOr<Stmt> Connection::prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    if (rc != SQLITE_OK) {
      return sqliteStatus(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_),
                          absl::StrCat("preparing SQL [", sql, "]"));
    }
    it = cache_.emplace(sql, raw).first;
  }
  return Stmt(db_, it->second);
}

absl::Status Connection::checkpoint(int mode, int* wal_frames, int* checkpointed) {
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, mode, wal_frames, checkpointed);
  if (rc == SQLITE_OK) return absl::OkStatus();
  return sqliteStatus(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_), "WAL checkpoint");
}

int64_t Connection::changes() const { return sqlite3_changes64(db_); }

bool Connection::inTransaction() const { return sqlite3_get_autocommit(db_) == 0; }

}  // namespace muster::store::sqlite
