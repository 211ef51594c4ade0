// Enrollment tokens and the exchange of a token for a per-agent credential.
#pragma once

#include <functional>
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
  // The agent's CSR (PEM) for a client certificate; empty: none asked for.
  std::string csr_pem;
};

// A client certificate musterd signed for an agent.
struct IssuedCertificate {
  std::string cert_pem;
  std::string sha256_hex;  // of its DER: what streams are checked against
  std::string serial_hex;
  int64_t not_after_ms = 0;
};

// Signs an agent's CSR for `agent_id` (the transport's crypto; the core only stores the
// fingerprint). INVALID_ARGUMENT for a CSR that cannot be signed.
using CertificateSigner = std::function<absl::StatusOr<IssuedCertificate>(
    const std::string& csr_pem, const std::string& agent_id)>;

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
  // Client certificates for agents' CSRs (mTLS); without a signer none are issued, and
  // CoreConfig::require_client_certs cannot be met. Set before agents connect.
  void setCertificateSigner(CertificateSigner signer) { signer_ = std::move(signer); }
  bool signsCertificates() const { return static_cast<bool>(signer_); }

  // Blocks (store round trips): call from a worker thread. Returns the credential secret,
  // and in `certificate` (when given) the client certificate for the request's CSR.
  // An id that is enrolled and not revoked is refused (ALREADY_EXISTS, naming it) unless the
  // token was made for that host or the agent presents the host's current credential; a
  // refusal consumes no use of the token. Refusals are logged at most once per 10 s per
  // source.
  absl::StatusOr<std::string> enroll(const EnrollRequest& request,
                                     IssuedCertificate* certificate = nullptr);
  // A new client certificate for an enrolled agent that proves itself with its credential
  // and (where one was issued, or they are required) its current certificate's fingerprint
  // `presented_sha256`. The previous certificate stays accepted until a stream presents the
  // new one. Unknown id and wrong credential look the same. Blocks: a worker thread.
  absl::StatusOr<IssuedCertificate> renewCertificate(const std::string& agent_id,
                                                     const std::string& credential,
                                                     const std::string& presented_sha256,
                                                     const std::string& csr_pem,
                                                     const std::string& source);
  // A transport refused an Enroll before it reached enroll() (its backlog was full, the
  // request too large): recorded like any refusal.
  void noteRefused(const std::string& agent_id, const std::string& source, const absl::Status& why);

 private:
  // `kind`: the event kind of a successful enrollment.
  absl::StatusOr<std::string> enrollChecked(const EnrollRequest& request, const char** kind,
                                            std::string* token_id, IssuedCertificate* issued);
  void recordIssued(const std::string& agent_id, const std::string& source,
                    const IssuedCertificate& issued);
  void logRefusal(const EnrollRequest& request, const absl::Status& why);

  store::Store& store_;
  HostRegistry& hosts_;
  const common::Clock& clock_;
  Audit& audit_;
  CertificateSigner signer_;
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
