// Row <-> model conversions of the SQLite store.
#include "store/sqlite/rows.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "store/sqlite/json_codec.h"

namespace muster::store::sqlite {
namespace {

// Unsigned counters are stored bit-for-bit in SQLite's signed 64-bit integers.
int64_t asStored(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t asUnsigned(int64_t v) { return static_cast<uint64_t>(v); }

absl::Status damaged(const char* table, const std::string& id, const char* column,
                     const absl::Status& why) {
  return absl::DataLossError(absl::StrCat("stored ", table, " ", id, " has an unreadable ", column,
                                          " (", why.message(),
                                          "); the database may be damaged: restore a backup"));
}

absl::Status badName(const char* table, const std::string& id, const char* column,
                     const std::string& value) {
  return absl::DataLossError(absl::StrCat("stored ", table, " ", id, " has an unknown ", column,
                                          " '", value,
                                          "'; was the database written by a newer release?"));
}

bool parseResultSource(std::string_view text, model::ResultSource* out) {
  for (auto s :
       {model::ResultSource::kNone, model::ResultSource::kAgent, model::ResultSource::kServer}) {
    if (resultSourceName(s) == text) {
      *out = s;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string placeholders(int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) absl::StrAppend(&out, i > 1 ? ", ?" : "?", i);
  return out;
}

std::string_view resultSourceName(model::ResultSource source) {
  switch (source) {
    case model::ResultSource::kNone: return "none";
    case model::ResultSource::kAgent: return "agent";
    case model::ResultSource::kServer: return "server";
  }
  return "none";
}

void bindHost(Stmt& stmt, const model::Host& h) {
  stmt.bindText(1, h.id)
      .bindText(2, model::toString(h.status))
      .bindText(3, h.version)
      .bindText(4, encodeStringMap(h.facts))
      .bindText(5, encodeStringMap(h.labels))
      .bindDouble(6, h.metrics.load1)
      .bindDouble(7, h.metrics.load5)
      .bindDouble(8, h.metrics.load15)
      .bindInt(9, asStored(h.metrics.mem_total_bytes))
      .bindInt(10, asStored(h.metrics.mem_available_bytes))
      .bindInt(11, asStored(h.metrics.disk_total_bytes))
      .bindInt(12, asStored(h.metrics.disk_free_bytes))
      .bindInt(13, asStored(h.metrics.uptime_seconds))
      .bindInt(14, h.enrolled_at_ms)
      .bindInt(15, h.last_seen_ms)
      .bindInt(16, h.status_changed_at_ms)
      .bindText(17, h.credential_hash)
      .bindText(18, encodeStringList({h.pinned_labels.begin(), h.pinned_labels.end()}))
      .bindText(19, h.enroll_attempt_hash)
      .bindText(20, h.client_cert_sha256)
      .bindInt(21, h.client_cert_not_after_ms)
      .bindText(22, h.prev_client_cert_sha256);
}

void bindRun(Stmt& stmt, const Run& r) {
  stmt.bindText(1, r.id)
      .bindText(2, r.idempotency_key)
      .bindText(3, r.request_fingerprint)
      .bindText(4, r.created_by)
      .bindInt(5, r.created_at_ms)
      .bindText(
          6, r.pending_targets.empty() ? std::string("[]") : encodeStringList(r.pending_targets));
}

void bindCommand(Stmt& stmt, const model::Command& c, CommandRowCache* cache) {
  CommandRowCache local;
  if (cache == nullptr) cache = &local;
  if (!cache->valid || cache->argv != c.exec.argv || cache->env != c.exec.env ||
      cache->secret_env != c.exec.secret_env) {
    cache->argv = c.exec.argv;
    cache->env = c.exec.env;
    cache->secret_env = c.exec.secret_env;
    cache->argv_json = encodeStringList(c.exec.argv);
    cache->env_json = encodeStringMap(c.exec.env);
    cache->secret_env_json = encodeStringMap(c.exec.secret_env);
    cache->valid = true;
  }
  if (cache->artifacts_json.empty() || cache->artifacts != c.artifacts) {
    cache->artifacts = c.artifacts;
    cache->artifacts_json = encodeExpectations(c.artifacts);
  }
  stmt.bindText(1, c.id)
      .bindText(2, c.run_id)
      .bindText(3, c.host_id)
      .bindText(4, cache->argv_json)
      .bindText(5, c.exec.script)
      .bindText(6, cache->env_json)
      .bindText(7, c.exec.cwd)
      .bindInt(8, c.exec.timeout_ms)
      .bindInt(9, c.exec.kill_grace_ms)
      .bindText(10, model::toString(c.state))
      .bindText(11, c.idempotency_key)
      .bindText(12, c.created_by)
      .bindInt(13, c.created_at_ms)
      .bindInt(14, c.expires_at_ms)
      .bindInt(15, c.dispatched_at_ms)
      .bindInt(16, c.started_at_ms)
      .bindInt(17, c.finished_at_ms);
  if (c.exit_code.has_value()) {
    stmt.bindInt(18, *c.exit_code);
  } else {
    stmt.bindNull(18);
  }
  stmt.bindInt(19, c.signal)
      .bindText(20, c.error)
      .bindInt(21, c.output_truncated ? 1 : 0)
      .bindInt(22, asStored(c.stdout_bytes))
      .bindInt(23, asStored(c.stderr_bytes))
      .bindInt(24, c.cancel_requested ? 1 : 0)
      .bindText(25, resultSourceName(c.result_source))
      .bindText(26, cache->secret_env_json)
      .bindText(27, cache->artifacts_json);
}

void bindEnrollToken(Stmt& stmt, const EnrollToken& t) {
  stmt.bindText(1, t.id)
      .bindText(2, t.token_hash)
      .bindInt(3, t.uses_left)
      .bindInt(4, t.expires_at_ms)
      .bindText(5, encodeStringMap(t.labels))
      .bindText(6, t.created_by)
      .bindInt(7, t.created_at_ms)
      .bindInt(8, t.revoked ? 1 : 0)
      .bindText(9, t.host_id);
}

void bindApiToken(Stmt& stmt, const ApiToken& t) {
  stmt.bindText(1, t.id)
      .bindText(2, t.token_hash)
      .bindText(3, t.role)
      .bindText(4, t.name)
      .bindText(5, t.created_by)
      .bindInt(6, t.created_at_ms)
      .bindInt(7, t.expires_at_ms)
      .bindInt(8, t.revoked ? 1 : 0);
}

void bindEvent(Stmt& stmt, const model::Event& e) {
  stmt.bindText(1, e.id)
      .bindInt(2, e.at_ms)
      .bindText(3, e.kind)
      .bindText(4, e.actor)
      .bindText(5, e.actor_id)
      .bindText(6, e.source)
      .bindText(7, e.target)
      .bindText(8, e.host_id)
      .bindText(9, e.result)
      .bindText(10, encodeStringMap(e.detail));
}

absl::StatusOr<model::Host> hostFromRow(const Stmt& s) {
  model::Host h;
  h.id = s.columnText(0);
  std::string status = s.columnText(1);
  if (!model::parseHostStatus(status, &h.status)) return badName("host", h.id, "status", status);
  h.version = s.columnText(2);
  auto facts = decodeStringMap(s.columnText(3));
  if (!facts.ok()) return damaged("host", h.id, "facts", facts.status());
  h.facts = std::move(*facts);
  auto labels = decodeStringMap(s.columnText(4));
  if (!labels.ok()) return damaged("host", h.id, "labels", labels.status());
  h.labels = std::move(*labels);
  h.metrics.load1 = s.columnDouble(5);
  h.metrics.load5 = s.columnDouble(6);
  h.metrics.load15 = s.columnDouble(7);
  h.metrics.mem_total_bytes = asUnsigned(s.columnInt(8));
  h.metrics.mem_available_bytes = asUnsigned(s.columnInt(9));
  h.metrics.disk_total_bytes = asUnsigned(s.columnInt(10));
  h.metrics.disk_free_bytes = asUnsigned(s.columnInt(11));
  h.metrics.uptime_seconds = asUnsigned(s.columnInt(12));
  h.enrolled_at_ms = s.columnInt(13);
  h.last_seen_ms = s.columnInt(14);
  h.status_changed_at_ms = s.columnInt(15);
  h.credential_hash = s.columnText(16);
  auto pinned = decodeStringList(s.columnText(17));
  if (!pinned.ok()) return damaged("host", h.id, "pinned_labels", pinned.status());
  h.pinned_labels = {pinned->begin(), pinned->end()};
  h.enroll_attempt_hash = s.columnText(18);
  h.client_cert_sha256 = s.columnText(19);
  h.client_cert_not_after_ms = s.columnInt(20);
  h.prev_client_cert_sha256 = s.columnText(21);
  return h;
}

absl::StatusOr<Run> runFromRow(const Stmt& s) {
  Run r;
  r.id = s.columnText(0);
  r.idempotency_key = s.columnText(1);
  r.request_fingerprint = s.columnText(2);
  r.created_by = s.columnText(3);
  r.created_at_ms = s.columnInt(4);
  auto targets = decodeStringList(s.columnText(5));
  if (!targets.ok()) {
    return absl::DataLossError(
        absl::StrCat("run ", r.id, ": unreadable pending_targets: ", targets.status().message()));
  }
  r.pending_targets = *std::move(targets);
  return r;
}

absl::StatusOr<model::Command> commandFromRow(const Stmt& s) {
  model::Command c;
  c.id = s.columnText(0);
  c.run_id = s.columnText(1);
  c.host_id = s.columnText(2);
  auto argv = decodeStringList(s.columnText(3));
  if (!argv.ok()) return damaged("command", c.id, "argv", argv.status());
  c.exec.argv = std::move(*argv);
  c.exec.script = s.columnText(4);
  auto env = decodeStringMap(s.columnText(5));
  if (!env.ok()) return damaged("command", c.id, "env", env.status());
  c.exec.env = std::move(*env);
  c.exec.cwd = s.columnText(6);
  c.exec.timeout_ms = s.columnInt(7);
  c.exec.kill_grace_ms = s.columnInt(8);
  std::string state = s.columnText(9);
  if (!model::parseCommandState(state, &c.state)) return badName("command", c.id, "state", state);
  c.idempotency_key = s.columnText(10);
  c.created_by = s.columnText(11);
  c.created_at_ms = s.columnInt(12);
  c.expires_at_ms = s.columnInt(13);
  c.dispatched_at_ms = s.columnInt(14);
  c.started_at_ms = s.columnInt(15);
  c.finished_at_ms = s.columnInt(16);
  if (!s.columnIsNull(17)) c.exit_code = static_cast<int>(s.columnInt(17));
  c.signal = static_cast<int>(s.columnInt(18));
  c.error = s.columnText(19);
  c.output_truncated = s.columnInt(20) != 0;
  c.stdout_bytes = asUnsigned(s.columnInt(21));
  c.stderr_bytes = asUnsigned(s.columnInt(22));
  c.cancel_requested = s.columnInt(23) != 0;
  std::string source = s.columnText(24);
  if (!parseResultSource(source, &c.result_source)) {
    return badName("command", c.id, "result_source", source);
  }
  auto secret_env = decodeStringMap(s.columnText(25));
  if (!secret_env.ok()) return damaged("command", c.id, "secret_env", secret_env.status());
  c.exec.secret_env = std::move(*secret_env);
  auto artifacts = decodeExpectations(s.columnText(26));
  if (!artifacts.ok()) return damaged("command", c.id, "artifacts", artifacts.status());
  c.artifacts = std::move(*artifacts);
  return c;
}

std::string encodeExpectations(const std::vector<model::ArtifactExpectation>& expectations) {
  std::vector<std::string> items;
  items.reserve(expectations.size());
  for (const auto& e : expectations) {
    model::StringMap m{{"direction", std::string(model::toString(e.direction))},
                       {"purpose", std::string(model::toString(e.purpose))}};
    if (!e.artifact_id.empty()) m["artifact_id"] = e.artifact_id;
    if (!e.sha256.empty()) m["sha256"] = e.sha256;
    if (!e.device.empty()) m["device"] = e.device;
    if (e.max_bytes != 0) m["max_bytes"] = absl::StrCat(e.max_bytes);
    if (e.size != 0) m["size"] = absl::StrCat(e.size);
    items.push_back(encodeStringMap(m));
  }
  return encodeStringList(items);
}

absl::StatusOr<std::vector<model::ArtifactExpectation>> decodeExpectations(std::string_view text) {
  std::vector<model::ArtifactExpectation> out;
  if (text.empty()) return out;
  auto items = decodeStringList(text);
  if (!items.ok()) return items.status();
  for (const auto& item : *items) {
    auto m = decodeStringMap(item);
    if (!m.ok()) return m.status();
    model::ArtifactExpectation e;
    auto get = [&](const char* key) {
      auto it = m->find(key);
      return it == m->end() ? std::string() : it->second;
    };
    if (!model::parseTransferDirection(get("direction"), &e.direction) ||
        !model::parseArtifactPurpose(get("purpose"), &e.purpose)) {
      return absl::DataLossError("an artifact expectation without direction or purpose");
    }
    e.artifact_id = get("artifact_id");
    e.sha256 = get("sha256");
    e.device = get("device");
    if (std::string v = get("max_bytes"); !v.empty() && !absl::SimpleAtoi(v, &e.max_bytes)) {
      return absl::DataLossError("an artifact expectation with a bad max_bytes");
    }
    if (std::string v = get("size"); !v.empty() && !absl::SimpleAtoi(v, &e.size)) {
      return absl::DataLossError("an artifact expectation with a bad size");
    }
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<EnrollToken> enrollTokenFromRow(const Stmt& s) {
  EnrollToken t;
  t.id = s.columnText(0);
  t.token_hash = s.columnText(1);
  t.uses_left = s.columnInt(2);
  t.expires_at_ms = s.columnInt(3);
  auto labels = decodeStringMap(s.columnText(4));
  if (!labels.ok()) return damaged("enroll token", t.id, "labels", labels.status());
  t.labels = std::move(*labels);
  t.created_by = s.columnText(5);
  t.created_at_ms = s.columnInt(6);
  t.revoked = s.columnInt(7) != 0;
  t.host_id = s.columnText(8);
  return t;
}

absl::StatusOr<ApiToken> apiTokenFromRow(const Stmt& s) {
  ApiToken t;
  t.id = s.columnText(0);
  t.token_hash = s.columnText(1);
  t.role = s.columnText(2);
  t.name = s.columnText(3);
  t.created_by = s.columnText(4);
  t.created_at_ms = s.columnInt(5);
  t.expires_at_ms = s.columnInt(6);
  t.revoked = s.columnInt(7) != 0;
  return t;
}

absl::StatusOr<model::Event> eventFromRow(const Stmt& s) {
  model::Event e;
  e.id = s.columnText(0);
  e.at_ms = s.columnInt(1);
  e.kind = s.columnText(2);
  e.actor = s.columnText(3);
  e.actor_id = s.columnText(4);
  e.source = s.columnText(5);
  e.target = s.columnText(6);
  e.host_id = s.columnText(7);
  e.result = s.columnText(8);
  auto detail = decodeStringMap(s.columnText(9));
  if (!detail.ok()) {
    return absl::DataLossError(
        absl::StrCat("event ", e.id, ": column detail: ", detail.status().message()));
  }
  e.detail = *std::move(detail);
  return e;
}

}  // namespace muster::store::sqlite
