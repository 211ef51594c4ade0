// Enrollment implementation.
#include "server/core/enrollment.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/secrets.h"

namespace muster::server {

Enrollment::Enrollment(store::Store& store, HostRegistry& hosts, const common::Clock& clock)
    : store_(store), hosts_(hosts), clock_(clock) {}

absl::StatusOr<NewEnrollToken> Enrollment::createToken(int64_t uses, int64_t ttl_ms,
                                                       model::StringMap labels,
                                                       std::string created_by) {
  if (uses == 0 || uses < -1) {
    return absl::InvalidArgumentError("uses must be a positive number (or -1 for unlimited)");
  }
  if (ttl_ms < 0) return absl::InvalidArgumentError("ttl must not be negative");
  for (const auto& [k, v] : labels) {
    if (!common::isValidLabelKey(k) || !common::isValidLabelValue(v)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label '", k.substr(0, 70), "'"));
    }
  }
  int64_t now = clock_.nowMs();
  NewEnrollToken out;
  out.secret = crypto::randomToken("mst_enroll_");
  out.record.id = common::newUlid(now);
  out.record.token_hash = crypto::sha256Hex(out.secret);
  out.record.uses_left = uses;
  out.record.expires_at_ms = ttl_ms > 0 ? now + ttl_ms : 0;
  out.record.labels = std::move(labels);
  out.record.created_by = std::move(created_by);
  out.record.created_at_ms = now;
  auto r = store_.writeAndWait(store::InsertEnrollToken{out.record});
  if (!r.status.ok()) return r.status;
  return out;
}

absl::StatusOr<std::vector<store::EnrollToken>> Enrollment::listTokens() {
  return store_.listEnrollTokens();
}

absl::Status Enrollment::revokeToken(const std::string& id) {
  auto r = store_.writeAndWait(store::RevokeEnrollToken{id});
  if (!r.status.ok()) return r.status;
  if (r.rows == 0) {
    return absl::NotFoundError(
        absl::StrCat("no enrollment token with id '", id.substr(0, 140), "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Enrollment::enroll(const EnrollRequest& request) {
  if (!common::isValidAgentId(request.agent_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid agent id '", request.agent_id.substr(0, 140),
                     "': ids match [A-Za-z0-9._-]{1,128}; set one with --id"));
  }
  for (const auto& [k, v] : request.labels) {
    if (!common::isValidLabelKey(k) || !common::isValidLabelValue(v)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label '", k.substr(0, 70), "'"));
    }
  }
  auto token = store_.findEnrollTokenByHash(crypto::sha256Hex(request.token));
  if (!token.ok()) return token.status();
  const char* kHint = ": create a new one with `muster token create --enroll`";
  if (!token->has_value()) {
    return absl::UnauthenticatedError(absl::StrCat("unknown enrollment token", kHint));
  }
  const auto& t = **token;
  if (t.revoked)
    return absl::PermissionDeniedError(absl::StrCat("enrollment token revoked", kHint));
  if (t.expires_at_ms > 0 && clock_.nowMs() >= t.expires_at_ms) {
    return absl::PermissionDeniedError(absl::StrCat("enrollment token expired", kHint));
  }
  auto consumed = store_.writeAndWait(store::ConsumeEnrollToken{t.id});
  if (!consumed.status.ok()) return consumed.status;
  if (consumed.rows == 0) {
    return absl::PermissionDeniedError(absl::StrCat("enrollment token used up", kHint));
  }
  std::string credential = crypto::randomToken("mst_agent_");
  model::Host host;
  host.id = request.agent_id;
  host.facts = request.facts;
  host.labels = t.labels;
  for (const auto& [k, v] : request.labels) host.labels[k] = v;
  host.enrolled_at_ms = clock_.nowMs();
  host.credential_hash = crypto::sha256Hex(credential);
  if (auto st = hosts_.putEnrolled(std::move(host)); !st.ok()) return st;
  spdlog::info("agent {} enrolled with token {}", request.agent_id, t.id);
  return credential;
}

}  // namespace muster::server
