// Enrollment tokens and the exchange of a token for a per-agent credential.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "server/core/host_registry.h"
#include "store/store.h"

namespace muster::server {

struct NewEnrollToken {
  store::EnrollToken record;
  std::string secret;  // shown once; only its hash is stored
};

struct EnrollRequest {
  std::string token;
  std::string agent_id;
  model::StringMap facts;
  model::StringMap labels;
};

class Enrollment {
 public:
  Enrollment(store::Store& store, HostRegistry& hosts, const common::Clock& clock);

  // uses: -1 for unlimited. ttl_ms: 0 for no expiry.
  absl::StatusOr<NewEnrollToken> createToken(int64_t uses, int64_t ttl_ms, model::StringMap labels,
                                             std::string created_by);
  absl::StatusOr<std::vector<store::EnrollToken>> listTokens();
  // NOT_FOUND for an unknown id.
  absl::Status revokeToken(const std::string& id);
  // Blocks (store round trips): call from a worker thread. Returns the credential secret.
  absl::StatusOr<std::string> enroll(const EnrollRequest& request);

 private:
  store::Store& store_;
  HostRegistry& hosts_;
  const common::Clock& clock_;
};

}  // namespace muster::server
