// Applies one store mutation with the writer's connection, inside the caller's transaction.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "store/sqlite/connection.h"
#include "store/store.h"

namespace muster::store::sqlite {

// Rows changed on success. On failure a mutation of several statements (InsertRun) may have
// written part of itself: the caller rolls back to a savepoint taken before it.
absl::StatusOr<int64_t> applyMutation(Connection& conn, const Mutation& mutation);

// True when applyMutation runs one statement only, which SQLite rolls back by itself on error.
bool isSingleStatement(const Mutation& mutation);

}  // namespace muster::store::sqlite
