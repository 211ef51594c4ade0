// The embedded, versioned schema of the SQLite store and the code that brings a file up to it.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/sqlite/connection.h"

namespace muster::store::sqlite {

struct Migration {
  int64_t version;
  const char* description;
  const char* sql;
};

// The newest schema version this binary knows.
int64_t latestSchemaVersion();

// Applies every migration newer than the file's version, each in its own transaction, and
// records it in schema_migrations. Refuses a file whose version is newer than this binary's.
absl::Status migrate(Connection& conn, int64_t now_ms);

// The highest version recorded in schema_migrations (0 for a fresh file).
absl::StatusOr<int64_t> currentSchemaVersion(Connection& conn);

}  // namespace muster::store::sqlite
