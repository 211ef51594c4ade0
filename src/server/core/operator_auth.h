// Operator API tokens with roles: viewer (read), operator (+ run and cancel commands),
// admin (+ manage tokens and hosts). Tokens are stored hashed; the first start writes an
// admin token to the data dir.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "store/store.h"

namespace muster::server {

enum class Role { kViewer = 0, kOperator = 1, kAdmin = 2 };
std::string_view toString(Role role);
bool parseRole(std::string_view text, Role* out);

struct Principal {
  std::string token_id;
  std::string name;  // recorded as created_by
  Role role = Role::kViewer;
};

struct NewApiToken {
  store::ApiToken record;
  std::string secret;  // shown once
};

class OperatorAuth {
 public:
  OperatorAuth(store::Store& store, const common::Clock& clock);

  // Makes sure `path` holds an admin token whose hash is stored: written (mode 0600) on the
  // first start, re-registered if the database is new. Blocking.
  absl::Status bootstrapAdmin(const std::string& path);
  // Blocking (store read): call from a worker thread.
  absl::StatusOr<Principal> authenticate(std::string_view bearer);
  absl::StatusOr<NewApiToken> create(Role role, std::string name, int64_t ttl_ms,
                                     std::string created_by);
  absl::StatusOr<std::vector<store::ApiToken>> list();
  // NOT_FOUND for an unknown id.
  absl::Status revoke(const std::string& id);

  // PERMISSION_DENIED naming what the role may not do, unless `principal` has `needed`.
  static absl::Status require(const Principal& principal, Role needed, std::string_view action);

 private:
  store::Store& store_;
  const common::Clock& clock_;
};

}  // namespace muster::server
