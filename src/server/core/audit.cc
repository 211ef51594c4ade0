// Audit: ids, the store write, followers and the counters of the audit log.
#include "server/core/audit.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"

namespace muster::server {
namespace {

constexpr size_t kMaxDetailValueBytes = 512;
constexpr size_t kMaxDetailEntries = 16;
constexpr size_t kMaxFieldBytes = 256;

// Peers choose agent ids, sources and messages: keep every field small.
std::string cut(std::string s, size_t max = kMaxFieldBytes) {
  if (s.size() > max) s.resize(max);
  return s;
}

}  // namespace

Audit::Audit(store::Store& store, const common::Clock& clock, size_t max_store_backlog)
    : store_(store), clock_(clock), max_store_backlog_(max_store_backlog) {}

std::string Audit::familyOf(std::string_view kind) {
  size_t dot = kind.rfind('.');
  return std::string(dot == std::string_view::npos ? kind : kind.substr(0, dot));
}

std::string Audit::record(AuditRecord r) {
  model::Event event;
  event.kind = cut(std::move(r.kind));
  event.actor = cut(std::move(r.actor.name));
  event.actor_id = cut(std::move(r.actor.id));
  event.source = cut(std::move(r.actor.source));
  event.target = cut(std::move(r.target));
  event.host_id = cut(std::move(r.host_id));
  event.result = cut(std::move(r.result));
  for (auto& [k, v] : r.detail) {
    if (event.detail.size() >= kMaxDetailEntries) break;
    event.detail.emplace(cut(k, 64), cut(std::move(v), kMaxDetailValueBytes));
  }
  const std::string family = familyOf(event.kind);
  std::lock_guard lock(mu_);
  if (store_.pendingWrites() >= max_store_backlog_) {
    ++dropped_;
    uint64_t suppressed = 0;
    if (drop_log_.allow(clock_.steadyMs(), &suppressed)) {
      spdlog::error(
          "audit: the store has {} writes waiting (--max-store-backlog {}): event {} by '{}' on "
          "'{}' ({}) was not stored ({} more since the last message); see the store's errors "
          "above",
          store_.pendingWrites(), max_store_backlog_, event.kind, event.actor, event.target,
          event.result, suppressed);
    }
    return "";
  }
  // Under the lock: ids, the store's FIFO and the followers see one order.
  event.at_ms = clock_.nowMs();
  event.id = common::newUlid(event.at_ms);
  ++recorded_[family];
  for (const auto& [token, listener] : listeners_) listener(event);
  std::string id = event.id;
  store_.write(store::InsertEvent{std::move(event)},
               [writes = writes_, id](store::WriteResult result) {
                 if (result.status.ok()) return;
                 writes->failures.fetch_add(1, std::memory_order_relaxed);
                 uint64_t suppressed = 0;
                 if (writes->failure_log.allow(&suppressed)) {
                   spdlog::error("audit: storing event {} failed: {} ({} more since)", id,
                                 result.status.message(), suppressed);
                 }
               });
  return id;
}

void Audit::recordLimited(const std::string& key, AuditRecord r) {
  const int64_t now = clock_.steadyMs();
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(limit_mu_);
    if (limit_window_start_ms_ < 0 || now - limit_window_start_ms_ >= 10'000) {
      limit_window_start_ms_ = now;
      limited_in_window_ = 0;
    }
    if (limited_.size() > 4096) limited_.clear();
    auto [it, fresh] = limited_.try_emplace(cut(key));
    if ((!fresh && now - it->second.at_steady_ms < 10'000) || limited_in_window_ >= 20) {
      ++it->second.suppressed;
      return;
    }
    suppressed = it->second.suppressed;
    it->second = Window{now, 0};
    ++limited_in_window_;
  }
  if (suppressed > 0) r.detail["suppressed"] = absl::StrCat(suppressed);
  record(std::move(r));
}

void Audit::certificateIssued(const std::string& agent_id, const std::string& source,
                              const std::string& serial, const std::string& sha256_fingerprint,
                              int64_t not_after_ms) {
  record(AuditRecord{
      .kind = event_kind::kLinkCertificateIssued,
      .actor = Actor{.name = agent_id, .id = "", .source = source},
      .target = serial,
      .host_id = agent_id,
      .result = kResultOk,
      .detail = {{"not_after_ms", absl::StrCat(not_after_ms)}, {"sha256", sha256_fingerprint}}});
}

uint64_t Audit::subscribe(Listener listener) {
  std::lock_guard lock(mu_);
  uint64_t token = next_token_++;
  listeners_.emplace(token, std::move(listener));
  return token;
}

void Audit::unsubscribe(uint64_t token) {
  std::lock_guard lock(mu_);
  listeners_.erase(token);
}

std::map<std::string, uint64_t> Audit::recordedByFamily() const {
  std::lock_guard lock(mu_);
  return recorded_;
}

uint64_t Audit::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

uint64_t Audit::writeFailures() const { return writes_->failures.load(); }

}  // namespace muster::server
