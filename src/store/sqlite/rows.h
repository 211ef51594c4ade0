// How store and model types map to table rows: column lists, binding and decoding, enum names.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "model/command.h"
#include "model/event.h"
#include "model/host.h"
#include "store/sqlite/connection.h"
#include "store/store.h"

namespace muster::store::sqlite {

// Column lists in the order bind*() binds them (?1..?N) and *FromRow() reads them (0..N-1).
inline constexpr char kHostColumns[] =
    "id, status, version, facts, labels, load1, load5, load15, mem_total_bytes, "
    "mem_available_bytes, disk_total_bytes, disk_free_bytes, uptime_seconds, enrolled_at_ms, "
    "last_seen_ms, status_changed_at_ms, credential_hash, pinned_labels, enroll_attempt_hash, "
    "client_cert_sha256, client_cert_not_after_ms, prev_client_cert_sha256";
inline constexpr int kHostColumnCount = 22;

inline constexpr char kRunColumns[] =
    "id, idempotency_key, request_fingerprint, created_by, created_at_ms, pending_targets";
inline constexpr int kRunColumnCount = 6;

// A run for at least this many hosts is "large": its commands are indexed by (run, host), not
// by host (schema migration 4 names the number in its partial indexes; never change it).
inline constexpr int64_t kLargeRunHosts = 64;

inline constexpr char kCommandColumns[] =
    "id, run_id, host_id, exec_argv, exec_script, exec_env, exec_cwd, exec_timeout_ms, "
    "exec_kill_grace_ms, state, idempotency_key, created_by, created_at_ms, expires_at_ms, "
    "dispatched_at_ms, started_at_ms, finished_at_ms, exit_code, signal, error, "
    "output_truncated, stdout_bytes, stderr_bytes, cancel_requested, result_source, "
    "exec_secret_env, artifacts";
inline constexpr int kCommandColumnCount = 27;

inline constexpr char kEnrollTokenColumns[] =
    "id, token_hash, uses_left, expires_at_ms, labels, created_by, created_at_ms, revoked, "
    "host_id";
inline constexpr int kEnrollTokenColumnCount = 9;

inline constexpr char kApiTokenColumns[] =
    "id, token_hash, role, name, created_by, created_at_ms, expires_at_ms, revoked";
inline constexpr int kApiTokenColumnCount = 8;

inline constexpr char kEventColumns[] =
    "id, at_ms, kind, actor, actor_id, source, target, host_id, result, detail";
inline constexpr int kEventColumnCount = 10;

// "?1, ?2, ..., ?n"
std::string placeholders(int n);

std::string_view resultSourceName(model::ResultSource source);

void bindHost(Stmt& stmt, const model::Host& host);
void bindRun(Stmt& stmt, const Run& run);
// The JSON of the last exec spec bound, so the commands of one run (which share it) encode it
// once.
struct CommandRowCache {
  bool valid = false;
  std::vector<std::string> argv;
  model::StringMap env;
  model::StringMap secret_env;
  std::string argv_json;
  std::string env_json;
  std::string secret_env_json;
  std::vector<model::ArtifactExpectation> artifacts;
  std::string artifacts_json;
};
// A command's artifact expectations as stored: a list of flat objects.
std::string encodeExpectations(const std::vector<model::ArtifactExpectation>& expectations);
absl::StatusOr<std::vector<model::ArtifactExpectation>> decodeExpectations(std::string_view text);
void bindCommand(Stmt& stmt, const model::Command& command, CommandRowCache* cache = nullptr);
void bindEnrollToken(Stmt& stmt, const EnrollToken& token);
void bindApiToken(Stmt& stmt, const ApiToken& token);
void bindEvent(Stmt& stmt, const model::Event& event);

// Decoding fails with DATA_LOSS when a stored value cannot be read back (a damaged file or
// a row written by something else than this store).
absl::StatusOr<model::Host> hostFromRow(const Stmt& stmt);
absl::StatusOr<Run> runFromRow(const Stmt& stmt);
absl::StatusOr<model::Command> commandFromRow(const Stmt& stmt);
absl::StatusOr<EnrollToken> enrollTokenFromRow(const Stmt& stmt);
absl::StatusOr<ApiToken> apiTokenFromRow(const Stmt& stmt);
absl::StatusOr<model::Event> eventFromRow(const Stmt& stmt);

}  // namespace muster::store::sqlite
