// HostRegistry: hosts, sessions, liveness.
#include "server/core/host_registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/secrets.h"

namespace muster::server {

HostRegistry::HostRegistry(store::Store& store, const common::Clock& clock,
                           const CoreConfig& config)
    : store_(store), clock_(clock), config_(config) {}

absl::Status HostRegistry::load() {
  auto hosts = store_.loadHosts();
  if (!hosts.ok()) return hosts.status();
  std::lock_guard lock(mu_);
  for (auto& host : *hosts) {
    if (host.status == model::HostStatus::kOnline) {
      host.status = model::HostStatus::kOffline;
      host.status_changed_at_ms = clock_.nowMs();
      store_.write(store::SetHostStatus{host.id, host.status, host.status_changed_at_ms}, {});
    }
    std::string id = host.id;
    hosts_[id] = Entry{std::move(host), nullptr, 0};
  }
  return absl::OkStatus();
}

namespace {
// One status for an unknown id and a wrong credential, so a caller cannot probe which ids
// exist (the server's log says which).
absl::Status notEnrolled(const std::string& agent_id) {
  return absl::UnauthenticatedError(
      absl::StrCat("agent '", agent_id,
                   "' is not enrolled or its credential is wrong: enroll it with a token from "
                   "`muster token create --enroll` (its state dir may be stale)"));
}
}  // namespace

bool HostRegistry::agentMaySetLabel(const model::Host& host, const std::string& key) const {
  if (host.pinned_labels.count(key) > 0) return false;
  return config_.agent_label_keys.empty() || config_.agent_label_keys.count(key) > 0;
}

std::future<store::WriteResult> HostRegistry::queueLocked(store::Mutation mutation) {
  auto promise = std::make_shared<std::promise<store::WriteResult>>();
  auto future = promise->get_future();
  store_.write(std::move(mutation), [promise](store::WriteResult r) { promise->set_value(r); });
  return future;
}

absl::Status HostRegistry::clientCertificateAccepted(const model::Host& host,
                                                     const std::string& presented) const {
  if (presented.empty()) {
    if (!config_.require_client_certs) return absl::OkStatus();
    return absl::UnauthenticatedError(absl::StrCat(
        "agent '", host.id,
        "' presented no client certificate and this musterd requires one "
        "(--require-client-certs): enroll it again with a token from `muster token create "
        "--enroll --host ",
        host.id, "` (the agent: --rotate-credential --enroll-token-file FILE)"));
  }
  if (!host.client_cert_sha256.empty() &&
      crypto::constantTimeEquals(presented, host.client_cert_sha256)) {
    if (host.client_cert_not_after_ms > 0 && clock_.nowMs() >= host.client_cert_not_after_ms) {
      return absl::UnauthenticatedError(absl::StrCat("the client certificate of agent '", host.id,
                                                     "' expired: enroll it again with a token "
                                                     "from `muster token create --enroll --host ",
                                                     host.id,
                                                     "` (the agent: --rotate-credential "
                                                     "--enroll-token-file FILE)"));
    }
    return absl::OkStatus();
  }
  if (!host.prev_client_cert_sha256.empty() &&
      crypto::constantTimeEquals(presented, host.prev_client_cert_sha256)) {
    return absl::OkStatus();
  }
  return absl::UnauthenticatedError(
      absl::StrCat("the client certificate presented is not the one issued to agent '", host.id,
                   "' (another host's, or replaced by a later enrollment, or revoked)"));
}

absl::Status HostRegistry::authenticate(const std::string& agent_id, const std::string& credential,
                                        const std::string& client_cert_sha256) const {
  std::string presented = crypto::sha256Hex(credential);
  std::lock_guard lock(mu_);
  auto it = hosts_.find(agent_id);
  if (it != hosts_.end() && it->second.host.status == model::HostStatus::kRevoked) {
    return absl::PermissionDeniedError(
        absl::StrCat("agent '", agent_id, "' was revoked: re-enroll it with a new token"));
  }
  if (it == hosts_.end() || it->second.host.credential_hash.empty()) {
    // Compare anyway so unknown ids cost the same as wrong secrets.
    crypto::constantTimeEquals(presented, std::string(presented.size(), '0'));
    return notEnrolled(agent_id);
  }
  if (!crypto::constantTimeEquals(presented, it->second.host.credential_hash)) {
    return notEnrolled(agent_id);
  }
  return clientCertificateAccepted(it->second.host, client_cert_sha256);
}

absl::Status HostRegistry::setClientCertificate(const std::string& agent_id,
                                                const std::string& credential_hash,
                                                const std::string& presented_sha256,
                                                const std::string& cert_sha256,
                                                int64_t not_after_ms) {
  std::future<store::WriteResult> written;
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(agent_id);
    if (it == hosts_.end() || it->second.host.status == model::HostStatus::kRevoked ||
        it->second.host.credential_hash != credential_hash) {
      return notEnrolled(agent_id);
    }
    auto& host = it->second.host;
    const bool live =
        !host.client_cert_sha256.empty() &&
        (host.client_cert_not_after_ms == 0 || clock_.nowMs() < host.client_cert_not_after_ms);
    if (presented_sha256.empty() && live) {
      // A credential alone must not mint a certificate that would push the host's own out.
      return absl::UnauthenticatedError(absl::StrCat(
          "agent '", agent_id,
          "' has a client certificate: renewing it needs that certificate on the connection"));
    }
    if (!presented_sha256.empty() && presented_sha256 == host.client_cert_sha256) {
      host.prev_client_cert_sha256 = host.client_cert_sha256;
    } else if (presented_sha256.empty() || presented_sha256 != host.prev_client_cert_sha256) {
      host.prev_client_cert_sha256.clear();
    }
    // else: the agent still presents the previous one (it never got the last renewal's
    // reply): that one stays accepted, the unused one is replaced.
    host.client_cert_sha256 = cert_sha256;
    host.client_cert_not_after_ms = not_after_ms;
    written = queueLocked(store::UpsertHost{host});
  }
  return written.get().status;
}

absl::Status HostRegistry::openStream(const std::shared_ptr<Session>& session,
                                      const std::string& credential,
                                      const std::string& client_cert_sha256) {
  std::string presented = crypto::sha256Hex(credential);
  std::lock_guard lock(mu_);
  auto it = hosts_.find(session->agentId());
  if (it != hosts_.end() && it->second.host.status == model::HostStatus::kRevoked) {
    return absl::PermissionDeniedError(absl::StrCat(
        "agent '", session->agentId(), "' was revoked: re-enroll it with a new token"));
  }
  bool known = it != hosts_.end() && !it->second.host.credential_hash.empty();
  // Compared either way, so unknown ids cost the same as wrong secrets.
  bool equal = crypto::constantTimeEquals(
      presented, known ? it->second.host.credential_hash : std::string(presented.size(), '0'));
  if (!known || !equal) return notEnrolled(session->agentId());
  if (auto st = clientCertificateAccepted(it->second.host, client_cert_sha256); !st.ok()) {
    return st;
  }
  // The agent moved to its renewed certificate: the one before it is no longer accepted.
  auto& host = it->second.host;
  if (!client_cert_sha256.empty() && !host.prev_client_cert_sha256.empty() &&
      client_cert_sha256 == host.client_cert_sha256) {
    host.prev_client_cert_sha256.clear();
    queueLocked(store::UpsertHost{host});
  }
  pending_.insert_or_assign(
      session.get(), Pending{session, session->agentId(), std::move(presented), clock_.steadyMs()});
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Session>> HostRegistry::takeSilentPending(int64_t timeout_ms) {
  std::vector<std::shared_ptr<Session>> out;
  int64_t now = clock_.steadyMs();
  std::lock_guard lock(mu_);
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto session = it->second.session.lock();
    if (!session) {
      it = pending_.erase(it);
    } else if (now - it->second.opened_steady_ms >= timeout_ms) {
      out.push_back(std::move(session));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::shared_ptr<Session>> HostRegistry::takeStreamsLocked(const std::string& agent_id) {
  std::vector<std::shared_ptr<Session>> out;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.agent_id != agent_id) {
      ++it;
      continue;
    }
    if (auto s = it->second.session.lock()) out.push_back(std::move(s));
    it = pending_.erase(it);
  }
  auto host = hosts_.find(agent_id);
  if (host != hosts_.end() && host->second.session) {
    --connected_;
    out.push_back(std::move(host->second.session));
    host->second.session.reset();
    host->second.host.status_changed_at_ms = clock_.nowMs();
    if (host->second.host.status != model::HostStatus::kRevoked) {
      host->second.host.status = model::HostStatus::kOffline;
      store_.write(store::SetHostStatus{agent_id, model::HostStatus::kOffline,
                                        host->second.host.status_changed_at_ms},
                   {});
    }
  }
  return out;
}

absl::Status HostRegistry::attach(const std::shared_ptr<Session>& session, const HelloInfo& hello) {
  std::shared_ptr<Session> replaced;
  model::Host snapshot;
  {
    std::lock_guard lock(mu_);
    auto p = pending_.find(session.get());
    if (p == pending_.end() || p->second.session.lock() != session) {
      return absl::FailedPreconditionError(
          "this stream is not (or no longer) authenticated: reconnect");
    }
    Pending pending = std::move(p->second);
    pending_.erase(p);
    auto found = hosts_.find(hello.agent_id);
    if (found == hosts_.end() || found->second.host.status == model::HostStatus::kRevoked) {
      return absl::PermissionDeniedError(
          absl::StrCat("agent '", hello.agent_id, "' was revoked while connecting: re-enroll it"));
    }
    if (found->second.host.credential_hash != pending.credential_hash) {
      return absl::UnauthenticatedError(
          absl::StrCat("the credential of agent '", hello.agent_id,
                       "' changed while this stream was connecting: reconnect with the new one"));
    }
    auto& entry = found->second;
    if (!entry.session) ++connected_;
    replaced = std::move(entry.session);
    entry.session = session;
    entry.last_heard_steady_ms = clock_.steadyMs();
    auto& host = entry.host;
    host.id = hello.agent_id;
    host.version = hello.version;
    host.facts = hello.facts;
    for (const auto& [k, v] : hello.labels) {
      if (agentMaySetLabel(host, k)) host.labels[k] = v;
    }
    if (host.status != model::HostStatus::kOnline) host.status_changed_at_ms = clock_.nowMs();
    host.status = model::HostStatus::kOnline;
    host.last_seen_ms = clock_.nowMs();
    snapshot = host;
    // Queued under the lock (write() never blocks), so the store applies host records in the
    // order memory changed them: a revoke right after this cannot be overwritten by it.
    store_.write(
        store::UpsertHost{std::move(snapshot)}, [id = hello.agent_id](store::WriteResult r) {
          if (!r.status.ok())
            spdlog::error("agent {}: cannot store host record: {}", id, r.status.message());
        });
  }
  if (replaced && replaced.get() != session.get()) {
    spdlog::info("agent {}: new stream {} replaces stream {}", hello.agent_id, session->sessionId(),
                 replaced->sessionId());
    replaced->close(absl::AbortedError("replaced by a newer stream from the same agent"));
  }
  return absl::OkStatus();
}

bool HostRegistry::detach(const Session& session, const std::string& why) {
  int64_t now = clock_.nowMs();
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(session.agentId());
    if (it == hosts_.end() || it->second.session.get() != &session) return false;
    it->second.session.reset();
    --connected_;
    it->second.host.status = model::HostStatus::kOffline;
    it->second.host.status_changed_at_ms = now;
    store_.write(store::SetHostStatus{session.agentId(), model::HostStatus::kOffline, now}, {});
  }
  spdlog::info("agent {} offline: {}", session.agentId(), why);
  return true;
}

void HostRegistry::heartbeat(const Session& session, const model::Metrics& metrics) {
  int64_t now = clock_.nowMs();
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(session.agentId());
    if (it == hosts_.end() || it->second.session.get() != &session) return;
    it->second.last_heard_steady_ms = clock_.steadyMs();
    it->second.host.metrics = metrics;
    it->second.host.last_seen_ms = now;
    if (!it->second.heartbeat_unstored) {
      it->second.heartbeat_unstored = true;
      heartbeat_unstored_.push_back(it->first);
    }
  }
}

void HostRegistry::flushHeartbeats(int64_t min_interval_ms) {
  std::lock_guard lock(mu_);
  const int64_t steady = clock_.steadyMs();
  if (heartbeat_unstored_.empty() || steady - last_heartbeat_flush_steady_ms_ < min_interval_ms) {
    return;
  }
  last_heartbeat_flush_steady_ms_ = steady;
  store::RecordHeartbeats batch;
  batch.beats.reserve(heartbeat_unstored_.size());
  for (const auto& id : heartbeat_unstored_) {
    auto it = hosts_.find(id);
    if (it == hosts_.end()) continue;
    it->second.heartbeat_unstored = false;
    batch.beats.push_back({id, it->second.host.metrics, it->second.host.last_seen_ms});
  }
  heartbeat_unstored_.clear();
  // One mutation, one transaction (write() never blocks). It writes only metrics and
  // last_seen, so if it lands after a newer UpsertHost from a Hello, the next flush (the
  // agent heartbeats right after Welcome) puts the newer values back.
  store_.write(std::move(batch), {});
}

std::shared_ptr<Session> HostRegistry::sessionFor(const std::string& agent_id) const {
  std::lock_guard lock(mu_);
  auto it = hosts_.find(agent_id);
  return it == hosts_.end() ? nullptr : it->second.session;
}

std::vector<std::shared_ptr<Session>> HostRegistry::sessionsFor(const model::Command* begin,
                                                                const model::Command* end) const {
  std::vector<std::shared_ptr<Session>> out;
  out.reserve(static_cast<size_t>(end - begin));
  std::lock_guard lock(mu_);
  for (const model::Command* c = begin; c != end; ++c) {
    auto it = hosts_.find(c->host_id);
    out.push_back(it == hosts_.end() ? nullptr : it->second.session);
  }
  return out;
}

std::vector<std::shared_ptr<Session>> HostRegistry::takeSilentSessions() {
  int64_t deadline_window = config_.heartbeat_interval_ms * config_.missed_heartbeats_offline;
  int64_t now_steady = clock_.steadyMs();
  int64_t now = clock_.nowMs();
  std::vector<std::shared_ptr<Session>> silent;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, entry] : hosts_) {
      if (!entry.session || now_steady - entry.last_heard_steady_ms <= deadline_window) continue;
      silent.push_back(std::move(entry.session));
      entry.session.reset();
      --connected_;
      entry.host.status = model::HostStatus::kOffline;
      entry.host.status_changed_at_ms = now;
      store_.write(store::SetHostStatus{id, model::HostStatus::kOffline, now}, {});
    }
  }
  for (const auto& s : silent) {
    spdlog::warn("agent {} offline: no heartbeat for {} ms ({} missed)", s->agentId(),
                 deadline_window, config_.missed_heartbeats_offline);
  }
  return silent;
}

std::optional<model::Host> HostRegistry::get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = hosts_.find(id);
  if (it == hosts_.end()) return std::nullopt;
  return it->second.host;
}

std::vector<model::Host> HostRegistry::list() const {
  std::lock_guard lock(mu_);
  std::vector<model::Host> out;
  out.reserve(hosts_.size());
  for (const auto& [id, entry] : hosts_) out.push_back(entry.host);
  return out;
}

std::vector<model::Host> HostRegistry::select(const model::Selector* selector,
                                              const model::HostStatus* status) const {
  std::vector<model::Host> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, entry] : hosts_) {
      if (status && entry.host.status != *status) continue;
      if (selector && !selector->matches(entry.host.labels)) continue;
      out.push_back(entry.host);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

std::vector<std::string> HostRegistry::selectTargetIds(const model::Selector& selector) const {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  for (const auto& [id, entry] : hosts_) {
    if (entry.host.status == model::HostStatus::kRevoked) continue;
    if (selector.matches(entry.host.labels)) out.push_back(id);
  }
  return out;
}

std::vector<std::optional<model::HostStatus>> HostRegistry::statuses(
    const std::vector<std::string>& ids) const {
  std::vector<std::optional<model::HostStatus>> out;
  out.reserve(ids.size());
  std::lock_guard lock(mu_);
  for (const auto& id : ids) {
    auto it = hosts_.find(id);
    out.push_back(it == hosts_.end() ? std::nullopt : std::optional(it->second.host.status));
  }
  return out;
}

absl::StatusOr<model::Host> HostRegistry::setLabels(const std::string& id,
                                                    const model::StringMap& set,
                                                    const std::vector<std::string>& remove) {
  for (const auto& [k, v] : set) {
    if (!common::isValidLabelKey(k) || !common::isValidLabelValue(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid label '", k.substr(0, 70),
          "': keys are [A-Za-z0-9._/-]{1,63}, values printable and at most 255 bytes"));
    }
  }
  model::Host snapshot;
  std::future<store::WriteResult> written;
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(id);
    if (it == hosts_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown host '", id.substr(0, 140), "': `muster hosts` lists them"));
    }
    for (const auto& k : remove) {
      it->second.host.labels.erase(k);
      it->second.host.pinned_labels.erase(k);
    }
    for (const auto& [k, v] : set) {
      it->second.host.labels[k] = v;
      it->second.host.pinned_labels.insert(k);
    }
    snapshot = it->second.host;
    written = queueLocked(store::UpsertHost{snapshot});
  }
  auto r = written.get();
  if (!r.status.ok()) return r.status;
  return snapshot;
}

absl::StatusOr<model::Host> HostRegistry::revoke(const std::string& id) {
  model::Host snapshot;
  std::future<store::WriteResult> written;
  std::vector<std::shared_ptr<Session>> streams;
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(id);
    if (it == hosts_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown host '", id.substr(0, 140), "': `muster hosts` lists them"));
    }
    auto& host = it->second.host;
    host.status = model::HostStatus::kRevoked;
    host.credential_hash.clear();
    // Live and still-connecting streams alike: none can say Hello after this.
    streams = takeStreamsLocked(id);
    host.status_changed_at_ms = clock_.nowMs();
    snapshot = host;
    written = queueLocked(store::UpsertHost{snapshot});
  }
  auto r = written.get();
  for (const auto& s : streams) {
    s->close(absl::PermissionDeniedError(absl::StrCat(
        "agent '", id, "' was revoked by an operator: re-enroll it with a new token")));
  }
  if (!r.status.ok()) return r.status;
  spdlog::warn("host {} decommissioned: credential revoked ({} stream(s) ended)", id,
               streams.size());
  return snapshot;
}

bool HostRegistry::exists(const std::string& id) const {
  std::lock_guard lock(mu_);
  return hosts_.count(id) > 0;
}

size_t HostRegistry::knownCount() const {
  std::lock_guard lock(mu_);
  return hosts_.size();
}

std::array<size_t, 3> HostRegistry::countByStatus() const {
  std::array<size_t, 3> out{};
  std::lock_guard lock(mu_);
  for (const auto& [id, entry] : hosts_) {
    out[static_cast<size_t>(entry.host.status) % out.size()]++;
  }
  return out;
}

size_t HostRegistry::connectedCount() const {
  std::lock_guard lock(mu_);
  return connected_;
}

absl::Status HostRegistry::putEnrolled(model::Host host, const EnrollAdmission& admit) {
  std::future<store::WriteResult> written;
  std::vector<std::shared_ptr<Session>> old_streams;
  std::optional<model::Host> before;  // the live record as it was, to put back on failure
  model::Host stored;
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(host.id);
    const model::Host* existing = it == hosts_.end() ? nullptr : &it->second.host;
    if (auto st = admit(existing); !st.ok()) return st;
    if (existing != nullptr && existing->status == model::HostStatus::kRevoked) {
      // A revoked id taken again is a new machine: nothing of the old record's labels or pins
      // (selectors meant for the decommissioned host must not reach it).
      before = *existing;
      host.status = model::HostStatus::kOffline;
      host.status_changed_at_ms = clock_.nowMs();
    } else if (existing != nullptr) {
      before = *existing;
      // Keep what the live record knows; the credential changes, token labels are added
      // (pinned ones of the record stay as they are).
      model::Host merged = *existing;
      merged.credential_hash = host.credential_hash;
      merged.enrolled_at_ms = host.enrolled_at_ms;
      merged.enroll_attempt_hash = host.enroll_attempt_hash;
      // A new enrollment replaces the certificate: the old one (and the one before) is
      // refused from now on.
      merged.client_cert_sha256 = host.client_cert_sha256;
      merged.client_cert_not_after_ms = host.client_cert_not_after_ms;
      merged.prev_client_cert_sha256.clear();
      for (const auto& [k, v] : host.labels) {
        if (merged.pinned_labels.count(k) == 0 || host.pinned_labels.count(k) > 0) {
          merged.labels[k] = v;
        }
      }
      merged.pinned_labels.insert(host.pinned_labels.begin(), host.pinned_labels.end());
      host = std::move(merged);
    }
    Entry& entry = hosts_[host.id];
    // The old credential's streams end now: the new one is the only one accepted from here,
    // and the host is offline until it connects with it.
    if (existing != nullptr && before->credential_hash != host.credential_hash) {
      old_streams = takeStreamsLocked(host.id);
      if (host.status == model::HostStatus::kOnline) {
        host.status = model::HostStatus::kOffline;
        host.status_changed_at_ms = clock_.nowMs();
      }
    }
    entry.host = host;
    stored = host;
    // Queued under the lock, so a revoke after this lands after it in the store too.
    written = queueLocked(store::UpsertHost{std::move(host)});
  }
  for (const auto& s : old_streams) {
    s->close(absl::UnauthenticatedError(absl::StrCat(
        "agent '", stored.id, "' was enrolled again: its old credential is no longer valid")));
  }
  auto r = written.get();
  if (r.status.ok()) return absl::OkStatus();
  // Not durable: memory goes back to what the store has, unless something changed it since.
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(stored.id);
    if (it != hosts_.end() && it->second.host.credential_hash == stored.credential_hash) {
      if (before) {
        it->second.host = *before;
      } else if (!it->second.session) {
        hosts_.erase(it);
      }
    }
  }
  return r.status;
}

}  // namespace muster::server
