// Enrollment tokens and the exchange of a token for a per-agent credential.
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "server/core/audit.h"
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
  // The credential the agent holds now, if any: proves it is the host (credential rotation).
  std::string current_credential;
  // The agent's enrollment attempt (the same on each retry until it saved a credential).
  std::string attempt_id;
  // Where the call came from (a peer address), for the rate-limited refusal log.
  std::string source;
};

class Enrollment {
 public:
  // Every enrollment is recorded in `audit` (link.enrolled, link.reenrolled,
  // link.credential_rotated), refusals as link.refused, rate-limited per source.
  Enrollment(store::Store& store, HostRegistry& hosts, const common::Clock& clock, Audit& audit);

  // uses: -1 for unlimited. ttl_ms: 0 for no expiry. host_id: the token enrolls that host
  // only, and may replace its credential while it is enrolled (re-imaging a machine).
  absl::StatusOr<NewEnrollToken> createToken(int64_t uses, int64_t ttl_ms, model::StringMap labels,
                                             std::string created_by, std::string host_id = "");
  absl::StatusOr<std::vector<store::EnrollToken>> listTokens();
  // NOT_FOUND for an unknown id.
  absl::Status revokeToken(const std::string& id);
  // Blocks (store round trips): call from a worker thread. Returns the credential secret.
  // An id that is enrolled and not revoked is refused (ALREADY_EXISTS, naming it) unless the
  // token was made for that host or the agent presents the host's current credential; a
  // refusal consumes no use of the token. Refusals are logged at most once per 10 s per
  // source.
  absl::StatusOr<std::string> enroll(const EnrollRequest& request);
  // A transport refused an Enroll before it reached enroll() (its backlog was full, the
  // request too large): recorded like any refusal.
  void noteRefused(const std::string& agent_id, const std::string& source, const absl::Status& why);

 private:
  // `kind`: the event kind of a successful enrollment.
  absl::StatusOr<std::string> enrollChecked(const EnrollRequest& request, const char** kind,
                                            std::string* token_id);
  void logRefusal(const EnrollRequest& request, const absl::Status& why);

  store::Store& store_;
  HostRegistry& hosts_;
  const common::Clock& clock_;
  Audit& audit_;
  std::mutex mu_;  // the refusal log and the ids being enrolled
  // Source -> when its last refusal was logged, and refusals since (bounded: cleared when
  // it holds more than 4,096 sources).
  struct Logged {
    int64_t at_steady_ms = 0;
    uint64_t suppressed = 0;
  };
  std::unordered_map<std::string, Logged> refusals_logged_ ABSL_GUARDED_BY(mu_);
  int64_t window_start_ms_ ABSL_GUARDED_BY(mu_) = 0;  // all sources: 20 lines per 10 s
  int lines_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> enrolling_ ABSL_GUARDED_BY(mu_);  // ids being enrolled now
};

}  // namespace muster::server
