// CommandService: creating runs — targets, validation, idempotency, and storing a run's
// commands before any of them is sent (large runs: run_slices.cc).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/duration.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/secrets.h"
#include "model/selector.h"
#include "server/core/command_service.h"

namespace muster::server {
namespace {
std::string fingerprintOf(const CreateRunRequest& r) {
  std::vector<std::string> hosts = r.host_ids;
  std::sort(hosts.begin(), hosts.end());
  std::string canon;
  auto add = [&canon](absl::string_view s) { absl::StrAppend(&canon, s.size(), ":", s, ";"); };
  for (const auto& h : hosts) add(h);
  add("|");
  for (const auto& a : r.exec.argv) add(a);
  add(r.exec.script);
  for (const auto& [k, v] : r.exec.env) {
    add(k);
    add(v);
  }
  if (!r.exec.secret_env.empty()) {  // only then: fingerprints of earlier runs stay the same
    add("|secret");
    for (const auto& [k, v] : r.exec.secret_env) {  // the fingerprint is stored: values hashed
      add(k);
      add(crypto::sha256Hex(v));
    }
  }
  add(r.exec.cwd);
  add(absl::StrCat(r.exec.timeout_ms, ",", r.exec.kill_grace_ms, ",", r.expire_in_ms));
  if (!r.artifacts.empty()) {  // only then, as above
    add("|artifacts");
    for (const auto& e : r.artifacts) {
      add(absl::StrCat(static_cast<int>(e.direction), ",", static_cast<int>(e.purpose), ",",
                       e.max_bytes));
      add(e.artifact_id);
      add(e.device);
    }
  }
  return crypto::sha256Hex(canon);
}

absl::Status selectorError(const std::string& message) {
  absl::Status st = absl::InvalidArgumentError(message);
  st.SetPayload(kInvalidSelectorPayload, absl::Cord(message));
  return st;
}
}  // namespace

absl::Status CommandService::resolveTargets(CreateRunRequest& r) const {
  if (!r.selector.empty() && !r.host_ids.empty()) {
    return absl::InvalidArgumentError("give target hosts or a selector, not both");
  }
  if (r.selector.empty()) return absl::OkStatus();
  std::string error;
  auto selector = model::Selector::parse(r.selector, &error);
  if (!selector) return selectorError(error);
  r.host_ids = hosts_.selectTargetIds(*selector);
  if (r.host_ids.empty()) {
    return selectorError(absl::StrCat("selector '", r.selector,
                                      "' matches no enrolled host: `muster hosts -l '", r.selector,
                                      "'` shows what it matches"));
  }
  return absl::OkStatus();
}

absl::Status CommandService::validate(const CreateRunRequest& r) const {
  if (r.artifacts.size() > 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a command may expect at most 16 artifact transfers, not ", r.artifacts.size()));
  }
  for (const auto& e : r.artifacts) {
    if (e.purpose == model::ArtifactPurpose::kUnspecified) {
      return absl::InvalidArgumentError(
          "an artifact expectation needs a purpose: logs, bundle, file, package or shipment");
    }
    if (e.direction == model::TransferDirection::kDownload && e.artifact_id.empty()) {
      return absl::InvalidArgumentError(
          "a download expectation names the artifact to download (artifact_id)");
    }
    if (e.artifact_id.size() > 64 || e.device.size() > 256) {
      return absl::InvalidArgumentError(
          "an artifact expectation's artifact_id (64 bytes) or device (256) is too long");
    }
  }
  if (r.host_ids.empty()) {
    return absl::InvalidArgumentError("no target hosts: name host ids or give a selector");
  }
  if (static_cast<int>(r.host_ids.size()) > config_.max_hosts_per_run) {
    return absl::InvalidArgumentError(absl::StrCat("too many targets (", r.host_ids.size(),
                                                   "): at most ", config_.max_hosts_per_run,
                                                   " hosts per run"));
  }
  for (const auto& id : r.host_ids) {
    if (!common::isValidAgentId(id)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid host id '", id.substr(0, 140),
                                                     "': ids match [A-Za-z0-9._-]{1,128}"));
    }
  }
  auto statuses = hosts_.statuses(r.host_ids);
  for (size_t i = 0; i < r.host_ids.size(); ++i) {
    const std::string& id = r.host_ids[i];
    if (!statuses[i]) {
      return absl::NotFoundError(
          absl::StrCat("unknown host '", id, "': `muster hosts` lists the enrolled hosts"));
    }
    if (*statuses[i] == model::HostStatus::kRevoked) {
      return absl::FailedPreconditionError(absl::StrCat(
          "host '", id, "' was decommissioned: re-enroll it before running commands on it"));
    }
  }
  if (r.exec.argv.empty() && r.exec.script.empty()) {
    return absl::InvalidArgumentError("nothing to run: give argv or a script");
  }
  if (!r.exec.argv.empty() && r.exec.argv[0].empty()) {
    return absl::InvalidArgumentError("argv[0] is empty: name the program to run");
  }
  for (const auto* env : {&r.exec.env, &r.exec.secret_env}) {
    for (const auto& [k, v] : *env) {
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid environment variable name '", k.substr(0, 64), "'"));
      }
    }
  }
  for (const auto& [k, v] : r.exec.secret_env) {
    if (r.exec.env.count(k) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("environment variable ", k.substr(0, 64),
                                                     " is in both env and secret_env: keep one"));
    }
  }
  if (r.exec.timeout_ms < 0 || r.exec.kill_grace_ms < 0 || r.expire_in_ms < 0) {
    return absl::InvalidArgumentError("timeout, kill grace and expiry must not be negative");
  }
  // Every caller, not only the HTTP edge: deadlines are now + these, and the wire carries
  // timeouts as 32-bit milliseconds.
  if (r.exec.timeout_ms > common::kMaxCommandTimeoutMs ||
      r.exec.kill_grace_ms > common::kMaxKillGraceMs || r.expire_in_ms > common::kMaxExpiryMs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout at most ", common::kMaxCommandTimeoutMs, " ms (7d), kill grace at most ",
        common::kMaxKillGraceMs, " ms (1h), expiry at most ", common::kMaxExpiryMs, " ms (365d)"));
  }
  if (r.idempotency_key.size() > 200) {
    return absl::InvalidArgumentError("idempotency key too long: at most 200 bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<CreateRunResult> CommandService::replay(const store::Run& run,
                                                       const std::string& fingerprint) {
  if (run.request_fingerprint != fingerprint) {
    return absl::AlreadyExistsError(absl::StrCat("idempotency key '", run.idempotency_key,
                                                 "' was already used for run ", run.id,
                                                 " with a different request: use a new key"));
  }
  if (!run.pending_targets.empty()) {
    auto have = store_.runHostIds(run.id);
    return absl::UnavailableError(absl::StrCat(
        "run ", run.id, " (idempotency key '", run.idempotency_key, "') is stored for ",
        have.ok() ? absl::StrCat(have->size()) : std::string("some"), " of ",
        run.pending_targets.size(),
        " hosts so far: it is still being stored, or the store failed and the server stores "
        "the rest when it recovers; do not submit it again: GET /api/v1/runs/",
        run.id, " shows its progress"));
  }
  store::CommandFilter filter;
  filter.run_id = run.id;
  filter.limit = 1000;
  CreateRunResult result{run.id, {}, true};
  while (true) {
    auto page = store_.listCommands(filter);
    if (!page.ok()) return page.status();
    for (auto& c : *page) result.commands.push_back(std::move(c));
    if (static_cast<int>(page->size()) < filter.limit) break;
    filter.before_id = result.commands.back().id;
  }
  std::reverse(result.commands.begin(), result.commands.end());
  return result;
}

absl::StatusOr<CreateRunResult> CommandService::createRun(CreateRunRequest request) {
  const int64_t t_begin = clock_.steadyMs();
  if (auto st = resolveTargets(request); !st.ok()) return st;
  std::sort(request.host_ids.begin(), request.host_ids.end());
  request.host_ids.erase(std::unique(request.host_ids.begin(), request.host_ids.end()),
                         request.host_ids.end());
  if (auto st = validate(request); !st.ok()) return st;
  if (!request.artifacts.empty() && artifact_resolver_) {
    if (auto st = artifact_resolver_(request.artifacts); !st.ok()) return st;
  }
  std::string fingerprint = fingerprintOf(request);
  if (!request.idempotency_key.empty()) {
    auto existing = store_.findRunByIdempotencyKey(request.idempotency_key);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) return replay(**existing, fingerprint);
  }

  int64_t now = clock_.nowMs();
  store::InsertRun insert;
  insert.run = store::Run{
      common::newUlid(now), request.idempotency_key, fingerprint, request.created_by, now, {}};
  model::ExecSpec exec = request.exec;
  if (exec.timeout_ms == 0) exec.timeout_ms = config_.default_timeout_ms;
  if (exec.kill_grace_ms == 0) exec.kill_grace_ms = config_.default_kill_grace_ms;
  int64_t expire_in = request.expire_in_ms > 0 ? request.expire_in_ms : config_.default_expiry_ms;
  for (const auto& host : request.host_ids) {
    model::Command c;
    c.id = common::newUlid(now);
    c.run_id = insert.run.id;
    c.host_id = host;
    c.exec = exec;
    c.artifacts = request.artifacts;
    c.idempotency_key = request.idempotency_key;
    c.created_by = request.created_by;
    c.created_at_ms = now;
    c.expires_at_ms = now + expire_in;
    insert.commands.push_back(std::move(c));
  }
  CreateRunResult result{insert.run.id, {}, false};
  const int64_t t_prepared = clock_.steadyMs();
  int64_t t_stored = 0;
  absl::Status written;
  const bool sliced = insert.commands.size() > std::max<size_t>(config_.run_slice_commands, 1);
  if (sliced) {
    // Stored and sent in slices, each delivered as soon as it is committed.
    written = createInSlices(std::move(insert), request.host_ids, result);
  } else {
    result.commands = insert.commands;
    written = store_.writeAndWait(std::move(insert)).status;
    if (written.ok()) {
      // Durable now; only then does anything reach an agent.
      t_stored = clock_.steadyMs();
      open_.add(result.commands.data(), result.commands.data() + result.commands.size());
      metrics_.commands_created.fetch_add(result.commands.size());
      deliverAll(result.commands);
    }
  }
  if (absl::IsAlreadyExists(written) && !request.idempotency_key.empty()) {
    auto existing = store_.findRunByIdempotencyKey(request.idempotency_key);
    if (existing.ok() && existing->has_value()) return replay(**existing, fingerprint);
  }
  if (!written.ok()) return written;
  const int64_t t_delivered = clock_.steadyMs();
  open_.refresh(result.commands);  // the states delivery gave them
  if (sliced) {
    spdlog::info(
        "run {}: {} command(s) created by {} (validate {} ms, stored and sent in slices of {} in "
        "{} ms)",
        result.run_id, result.commands.size(), request.created_by, t_prepared - t_begin,
        config_.run_slice_commands, t_delivered - t_prepared);
  } else {
    spdlog::info("run {}: {} command(s) created by {} (validate {} ms, store {} ms, deliver {} ms)",
                 result.run_id, result.commands.size(), request.created_by, t_prepared - t_begin,
                 t_stored - t_prepared, t_delivered - t_stored);
  }
  return result;
}

}  // namespace muster::server
