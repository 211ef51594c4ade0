// Applies one store mutation with the writer's connection, inside the caller's transaction.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "store/sqlite/connection.h"
#include "store/store.h"

namespace muster::store::sqlite {

// Rows changed on success. On failure the caller rolls back to its savepoint: a mutation of
// several statements (InsertRun) may have written part of itself.
absl::StatusOr<int64_t> applyMutation(Connection& conn, const Mutation& mutation);

}  // namespace muster::store::sqlite
