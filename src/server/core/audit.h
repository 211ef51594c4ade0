// The audit log: every mutating API call and every security event of the agent link, stored
// in the events table through the store's writer and published to live followers.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/clock.h"
#include "common/log.h"
#include "model/event.h"
#include "store/store.h"

namespace muster::server {

// Event kinds. API calls are `api.<object>.<verb>`, link events `link.<what happened>`;
// keep docs/api.md ("Audit log") in step.
namespace event_kind {
inline constexpr char kCommandCreate[] = "api.command.create";    // POST /commands
inline constexpr char kCommandCancel[] = "api.command.cancel";    // POST /commands/{id}/cancel
inline constexpr char kRunCancel[] = "api.run.cancel";            // POST /runs/{id}/cancel
inline constexpr char kHostLabels[] = "api.host.labels";          // PUT/PATCH /hosts/{id}/labels
inline constexpr char kHostDelete[] = "api.host.delete";          // DELETE /hosts/{id}
inline constexpr char kTokenCreate[] = "api.token.create";        // POST /tokens
inline constexpr char kTokenDelete[] = "api.token.delete";        // DELETE /tokens/{id}
inline constexpr char kArtifactDelete[] = "api.artifact.delete";  // DELETE /artifacts/{id}
inline constexpr char kArtifactPin[] = "api.artifact.pin";        // POST /artifacts/{id}/pin
inline constexpr char kArtifactUnpin[] = "api.artifact.unpin";    // POST /artifacts/{id}/unpin
// A POST/PUT/PATCH/DELETE under /api/v1 that matches no mutating route (404, 405).
inline constexpr char kApiUnknown[] = "api.unknown";
inline constexpr char kLinkEnrolled[] = "link.enrolled";  // a new (or revoked) id enrolled
// An enrolled id taken again with a token made for it (a re-imaged machine).
inline constexpr char kLinkReenrolled[] = "link.reenrolled";
// The agent proved it holds the host's credential and got a new one.
inline constexpr char kLinkCredentialRotated[] = "link.credential_rotated";
// An enrollment or a stream refused; `result` is the reason (an error code name).
inline constexpr char kLinkRefused[] = "link.refused";
inline constexpr char kLinkRevoked[] = "link.revoked";  // a host decommissioned
inline constexpr char kLinkCertificateIssued[] = "link.certificate_issued";  // see Audit
}  // namespace event_kind

// Who did it: an API token (name and id), or for link events the agent; and from where.
struct Actor {
  std::string name;
  std::string id;
  std::string source;
};

// What a caller records; Audit adds the id and the time.
struct AuditRecord {
  std::string kind;
  Actor actor;
  std::string target;
  std::string host_id;
  std::string result;
  model::StringMap detail;
};

// Results of the events that succeeded.
inline constexpr char kResultOk[] = "ok";

class Audit {
 public:
  // Runs under Audit's lock, in id order, on the recorder's thread: must not block.
  using Listener = std::function<void(const model::Event&)>;

  // `max_store_backlog`: past this many store writes waiting, events are dropped (counted,
  // logged) rather than queued: the calls they describe have been answered already, and the
  // server's memory must not grow with a store that stopped.
  Audit(store::Store& store, const common::Clock& clock, size_t max_store_backlog);

  // Never blocks and never fails the caller: the event gets its id and time, is queued to
  // the store's writer (not waited for) and is published to followers. Returns its id ("" if
  // dropped). Detail values are cut to 512 bytes, and at most 16 are kept.
  std::string record(AuditRecord record);
  // record(), at most once per 10 s per `key` (a source address, an agent id) and 20 per
  // 10 s in all: for refusals a peer can provoke in a loop. The next one recorded for that
  // key carries detail "suppressed" (how many were left out).
  void recordLimited(const std::string& key, AuditRecord record);

  // The TLS work calls this when it issues (or renews) an agent's certificate: kind
  // link.certificate_issued, actor and host the agent, target the certificate's serial,
  // detail not_after (RFC 3339 is the HTTP edge's business: Unix ms here) and fingerprint.
  void certificateIssued(const std::string& agent_id, const std::string& source,
                         const std::string& serial, const std::string& sha256_fingerprint,
                         int64_t not_after_ms);

  // Followers (the event stream): every event recorded from now on, in id order.
  uint64_t subscribe(Listener listener);
  void unsubscribe(uint64_t token);

  // Counters since start, for /metrics.
  std::map<std::string, uint64_t> recordedByFamily() const;  // "api.command", "link", ...
  uint64_t dropped() const;
  uint64_t writeFailures() const;

  // "api.command.create" -> "api.command"; "link.refused" -> "link".
  static std::string familyOf(std::string_view kind);

 private:
  store::Store& store_;
  const common::Clock& clock_;
  const size_t max_store_backlog_;

  mutable std::mutex mu_;  // id order == publish order == store order
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Listener> listeners_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> recorded_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  common::RateLimitedLog drop_log_;
  // Shared with the writes' callbacks, which may run after Audit is gone (store shutdown).
  struct WriteState {
    std::atomic<uint64_t> failures{0};
    common::RateLimitedLog failure_log;
  };
  std::shared_ptr<WriteState> writes_ = std::make_shared<WriteState>();

  std::mutex limit_mu_;  // recordLimited's windows
  struct Window {
    int64_t at_steady_ms = 0;
    uint64_t suppressed = 0;
  };
  std::unordered_map<std::string, Window> limited_ ABSL_GUARDED_BY(limit_mu_);
  int64_t limit_window_start_ms_ ABSL_GUARDED_BY(limit_mu_) = -1;
  int limited_in_window_ ABSL_GUARDED_BY(limit_mu_) = 0;
};

}  // namespace muster::server
