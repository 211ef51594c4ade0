// Enrollment implementation.
#include "server/core/enrollment.h"

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/secrets.h"

namespace muster::server {

Enrollment::Enrollment(store::Store& store, HostRegistry& hosts, const common::Clock& clock,
                       Audit& audit)
    : store_(store), hosts_(hosts), clock_(clock), audit_(audit) {}

void Enrollment::noteRefused(const std::string& agent_id, const std::string& source,
                             const absl::Status& why) {
  // The reason is the status code's name, as the REST API spells it ("already_exists").
  audit_.recordLimited(
      source.empty() ? absl::StrCat("enroll-id:", agent_id) : absl::StrCat("enroll:", source),
      AuditRecord{.kind = event_kind::kLinkRefused,
                  .actor = Actor{.name = agent_id, .id = "", .source = source},
                  .target = agent_id,
                  .host_id = common::isValidAgentId(agent_id) ? agent_id : "",
                  .result = absl::AsciiStrToLower(absl::StatusCodeToString(why.code())),
                  .detail = {{"stage", "enroll"}, {"message", std::string(why.message())}}});
}

absl::StatusOr<NewEnrollToken> Enrollment::createToken(int64_t uses, int64_t ttl_ms,
                                                       model::StringMap labels,
                                                       std::string created_by,
                                                       std::string host_id) {
  if (!host_id.empty() && !common::isValidAgentId(host_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid host id '", host_id.substr(0, 140),
                                                   "': ids match [A-Za-z0-9._-]{1,128}"));
  }
  // A token that may replace a host's credential is a key to that host: one use, and it
  // expires.
  if (!host_id.empty() && (uses != 1 || ttl_ms <= 0)) {
    return absl::InvalidArgumentError(
        "a token for one host (--host) is single-use and must expire: use --uses 1 and a "
        "--ttl (default 24h)");
  }
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
  out.record.host_id = std::move(host_id);
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

absl::StatusOr<std::string> Enrollment::enroll(const EnrollRequest& request,
                                               IssuedCertificate* certificate) {
  // One enrollment of an id at a time: a second one at once is refused before it spends a
  // use of its token (the first may still fail, then the id is free again).
  {
    std::lock_guard lock(mu_);
    if (!enrolling_.insert(request.agent_id).second) {
      absl::Status busy = absl::AlreadyExistsError(
          absl::StrCat("host '", request.agent_id.substr(0, 140), "' is being enrolled right now"));
      noteRefused(request.agent_id, request.source, busy);
      return busy;
    }
  }
  const char* kind = event_kind::kLinkEnrolled;
  std::string token_id;
  IssuedCertificate issued;
  auto credential = enrollChecked(request, &kind, &token_id, &issued);
  {
    std::lock_guard lock(mu_);
    enrolling_.erase(request.agent_id);
  }
  if (credential.ok()) {
    audit_.record(
        AuditRecord{.kind = kind,
                    .actor = Actor{.name = request.agent_id, .id = "", .source = request.source},
                    .target = request.agent_id,
                    .host_id = request.agent_id,
                    .result = kResultOk,
                    .detail = {{"token_id", token_id}}});
    if (!issued.cert_pem.empty()) {
      recordIssued(request.agent_id, request.source, issued);
      if (certificate != nullptr) *certificate = std::move(issued);
    }
    return credential;
  }
  noteRefused(request.agent_id, request.source, credential.status());
  if (absl::IsUnavailable(credential.status()) || absl::IsInternal(credential.status()) ||
      absl::IsDataLoss(credential.status())) {
    spdlog::error("enrollment of '{}' from {} failed: {}", request.agent_id.substr(0, 140),
                  request.source, credential.status().message());
  } else {
    logRefusal(request, credential.status());
  }
  return credential;
}

void Enrollment::logRefusal(const EnrollRequest& request, const absl::Status& why) {
  const int64_t now = clock_.steadyMs();
  const std::string source = request.source.empty() ? "unknown source" : request.source;
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(mu_);
    // Besides once per source: at most 20 lines per 10 s in all (sources spread over many
    // addresses cannot flood the log either).
    if (now - window_start_ms_ >= 10'000) {
      window_start_ms_ = now;
      lines_in_window_ = 0;
    }
    if (lines_in_window_ >= 20) return;
    if (refusals_logged_.size() > 4096) refusals_logged_.clear();
    auto [it, fresh] = refusals_logged_.try_emplace(source);
    if (!fresh && now - it->second.at_steady_ms < 10'000) {
      ++it->second.suppressed;
      return;
    }
    suppressed = it->second.suppressed;
    it->second = Logged{now, 0};
    ++lines_in_window_;
  }
  spdlog::warn("enrollment from {} as '{}' refused: {}{}", source, request.agent_id.substr(0, 140),
               why.message(),
               suppressed ? absl::StrCat(" (and ", suppressed, " more from there since)") : "");
}

void Enrollment::recordIssued(const std::string& agent_id, const std::string& source,
                              const IssuedCertificate& issued) {
  audit_.certificateIssued(agent_id, source, issued.serial_hex, issued.sha256_hex,
                           issued.not_after_ms);
  spdlog::info("client certificate {} issued to agent {} (valid until {} ms)", issued.serial_hex,
               agent_id, issued.not_after_ms);
}

absl::StatusOr<IssuedCertificate> Enrollment::renewCertificate(const std::string& agent_id,
                                                               const std::string& credential,
                                                               const std::string& presented_sha256,
                                                               const std::string& csr_pem,
                                                               const std::string& source) {
  auto refuse = [&](absl::Status why) {
    audit_.recordLimited(
        absl::StrCat("renew:", source.empty() ? agent_id : source),
        AuditRecord{
            .kind = event_kind::kLinkRefused,
            .actor = Actor{.name = agent_id, .id = "", .source = source},
            .target = agent_id,
            .host_id = common::isValidAgentId(agent_id) ? agent_id : "",
            .result = absl::AsciiStrToLower(absl::StatusCodeToString(why.code())),
            .detail = {{"stage", "renew_certificate"}, {"message", std::string(why.message())}}});
    EnrollRequest as_request;
    as_request.agent_id = agent_id;
    as_request.source = source;
    logRefusal(as_request, why);
    return why;
  };
  if (!signer_) {
    return refuse(absl::FailedPreconditionError(
        "this musterd issues no client certificates (it has no CA key: give --tls-ca-key)"));
  }
  if (csr_pem.empty()) return refuse(absl::InvalidArgumentError("no CSR in the request"));
  if (auto st = hosts_.authenticate(agent_id, credential, presented_sha256); !st.ok()) {
    return refuse(st);
  }
  auto issued = signer_(csr_pem, agent_id);
  if (!issued.ok()) return refuse(issued.status());
  if (auto st =
          hosts_.setClientCertificate(agent_id, crypto::sha256Hex(credential), presented_sha256,
                                      issued->sha256_hex, issued->not_after_ms);
      !st.ok()) {
    return refuse(st);
  }
  recordIssued(agent_id, source, *issued);
  return issued;
}

absl::StatusOr<std::string> Enrollment::enrollChecked(const EnrollRequest& request,
                                                      const char** kind, std::string* token_id,
                                                      IssuedCertificate* issued) {
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
  *token_id = t.id;
  if (t.revoked)
    return absl::PermissionDeniedError(absl::StrCat("enrollment token revoked", kHint));
  if (t.expires_at_ms > 0 && clock_.nowMs() >= t.expires_at_ms) {
    return absl::PermissionDeniedError(absl::StrCat("enrollment token expired", kHint));
  }
  if (!t.host_id.empty() && t.host_id != request.agent_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("this enrollment token is for host '", t.host_id, "', not '",
                     request.agent_id.substr(0, 140), "': start the agent with --id ", t.host_id,
                     " or create a token for this host"));
  }
  const std::string presented =
      request.current_credential.empty() ? "" : crypto::sha256Hex(request.current_credential);
  const std::string attempt =
      request.attempt_id.empty() ? "" : crypto::sha256Hex(request.attempt_id);
  // Who may take the id: anyone if it is new or revoked; a token made for the host
  // (re-imaging) or the agent holding the host's current credential (rotation) if not.
  auto admit = [&](const model::Host* existing) -> absl::Status {
    // The last call (atomic with the change) says which way the id was taken.
    *kind = event_kind::kLinkEnrolled;
    if (existing == nullptr || existing->status == model::HostStatus::kRevoked) {
      return absl::OkStatus();
    }
    if (t.host_id == request.agent_id) {
      *kind = event_kind::kLinkReenrolled;
      return absl::OkStatus();
    }
    if (!presented.empty() && crypto::constantTimeEquals(presented, existing->credential_hash)) {
      *kind = event_kind::kLinkCredentialRotated;
      return absl::OkStatus();
    }
    // The same agent asking again (it did not get the reply) before it ever connected.
    if (existing->last_seen_ms == 0 && !attempt.empty() &&
        crypto::constantTimeEquals(attempt, existing->enroll_attempt_hash)) {
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "host '", request.agent_id,
        "' is already enrolled; to enroll it again (a re-imaged "
        "machine) create a token for it with `muster token create --enroll --host ",
        request.agent_id, "`, or remove it first with `muster host rm ", request.agent_id, "`"));
  };
  // Checked before a use of the token is consumed, and again atomically with the change.
  {
    std::optional<model::Host> existing = hosts_.get(request.agent_id);
    if (auto st = admit(existing ? &*existing : nullptr); !st.ok()) return st;
  }
  // The certificate too is made before the token is spent: a bad CSR costs no use.
  if (hosts_.config().require_client_certs && (request.csr_pem.empty() || !signer_)) {
    return absl::FailedPreconditionError(
        signer_ ? "this musterd requires client certificates (--require-client-certs) and the "
                  "agent sent no CSR: upgrade muster-agent, and enroll over TLS"
                : "--require-client-certs, but this musterd cannot sign client certificates "
                  "(give --tls-ca-key)");
  }
  if (!request.csr_pem.empty() && signer_) {
    auto signed_cert = signer_(request.csr_pem, request.agent_id);
    if (!signed_cert.ok()) return signed_cert.status();
    *issued = *std::move(signed_cert);
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
  // The token's labels are pinned; the agent's own are taken where it may set them.
  host.labels = t.labels;
  for (const auto& [k, v] : t.labels) host.pinned_labels.insert(k);
  const auto& allowed = hosts_.config().agent_label_keys;
  for (const auto& [k, v] : request.labels) {
    if (t.labels.count(k) > 0) continue;
    if (!allowed.empty() && allowed.count(k) == 0) continue;
    host.labels[k] = v;
  }
  host.enrolled_at_ms = clock_.nowMs();
  host.credential_hash = crypto::sha256Hex(credential);
  host.enroll_attempt_hash = attempt;
  host.client_cert_sha256 = issued->sha256_hex;
  host.client_cert_not_after_ms = issued->not_after_ms;
  if (auto st = hosts_.putEnrolled(std::move(host), admit); !st.ok()) return st;
  spdlog::info("agent {} enrolled with token {}{}", request.agent_id, t.id,
               t.host_id.empty() ? (presented.empty() ? "" : " (credential rotated)")
                                 : " (bound to this host)");
  return credential;
}

}  // namespace muster::server
