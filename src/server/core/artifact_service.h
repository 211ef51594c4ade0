// Command-scoped artifact transfers: which transfer a command allows (its expectations),
// admission, per-agent slots, attempt caps, deadlines, resume, and the janitor's sweep of
// old artifacts. Transport-neutral: the gRPC adapter (and later HTTP) drives a Transfer per
// call; bytes go to the artifact port (store/artifact_store.h).
//
// Lock order: ArtifactService::mu_ before a Transfer's mu_; neither is held while calling
// the store, the command service or a transfer's cancel callback.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "crypto/secrets.h"
#include "model/artifact.h"
#include "server/core/command_service.h"
#include "store/artifact_store.h"

namespace muster::server {

struct ArtifactConfig {
  size_t upload_slots_per_agent = 2;
  size_t download_slots_per_agent = 2;
  int max_attempts = 3;  // per expectation
  int64_t header_timeout_ms = 5'000;
  int64_t progress_timeout_ms = 30'000;  // between chunks received, or sent and read
  int64_t transfer_timeout_ms = 600'000;
  uint64_t max_chunk_bytes = 1u << 20;
  uint64_t max_artifact_bytes = 4ull << 30;
  std::map<model::ArtifactPurpose, uint64_t> max_bytes_by_purpose;  // overrides
  int64_t retention_ms = 7 * 24 * 3600 * 1000LL;                    // 0: kept forever
};

struct UploadHeader {
  std::string command_id;
  model::ArtifactPurpose purpose = model::ArtifactPurpose::kUnspecified;
  std::string artifact_id;
  std::string device;
  std::string name;
  uint64_t declared_size = 0;
  std::string declared_sha256;
  uint64_t resume_offset = 0;  // > 0: continue the staged bytes of an earlier attempt
};

struct DownloadRequest {
  std::string command_id;
  std::string artifact_id;
  std::string device;
  uint64_t offset = 0;
};

// Why a transfer was refused or failed, for the metric's label.
enum class TransferRefusal : uint8_t {
  kNotInFlight,    // no such command in flight on this host
  kNoExpectation,  // the command expects no such transfer
  kInProgress,     // another transfer for the same expectation is running
  kAttempts,       // the expectation's attempt cap is used up
  kSlots,          // the agent's slots are all taken
  kTooLarge,       // over the artifact size limit
  kQuota,          // the store's quota cannot take it
  kBadRequest,     // malformed header, chunk or offset
  kVerification,   // size or SHA-256 mismatch
  kDeadline,       // header, progress or total deadline
  kChanged,        // a download's artifact changed or is gone
  kCommandEnded,   // the command ended during the transfer
  kStorage,        // the store failed
  kCount,
};
std::string_view toString(TransferRefusal refusal);

struct ArtifactMetrics {
  std::atomic<uint64_t> bytes_in{0}, bytes_out{0};
  std::atomic<uint64_t> uploads_ok{0}, downloads_ok{0};
  std::atomic<uint64_t> resumed_uploads{0}, resumed_downloads{0};
  std::atomic<uint64_t> retries_answered{0};  // an upload stored before, its reply lost
  std::array<std::atomic<uint64_t>, static_cast<size_t>(TransferRefusal::kCount)> upload_failed{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(TransferRefusal::kCount)> download_failed{};
  std::atomic<int64_t> upload_slots_in_use{0}, download_slots_in_use{0};
};

class ArtifactService;

// One transfer call. Created with its slot taken; the slot and any expectation it holds are
// given back exactly once, when it ends (finish, abort, or destruction). Its blocking
// methods run on worker threads, one at a time per transfer.
class Transfer {
 public:
  ~Transfer();
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  model::TransferDirection direction() const { return direction_; }
  const std::string& agentId() const { return agent_id_; }
  // The command it was admitted for ("" before admission); any thread.
  std::string commandId() {
    std::lock_guard lock(mu_);
    return command_of_;
  }

  // --- uploads ---
  // Admits the header and opens the staging: the offset the agent's bytes continue at.
  absl::StatusOr<uint64_t> beginUpload(const UploadHeader& header);
  absl::Status chunk(std::string_view bytes);
  // All bytes received: verified and stored (or, for a retry of a stored upload, verified
  // against it); the expectation is complete.
  absl::StatusOr<model::Artifact> finishUpload();

  // --- downloads ---
  // Admits the request; the artifact to send, from request.offset.
  absl::StatusOr<model::Artifact> beginDownload(const DownloadRequest& request);
  // The next chunk (empty once everything was read); counts the previous one as delivered.
  absl::Status nextChunk(std::string* out);
  // Every byte was sent: the expectation is free again for a retry until the command ends.
  void finishDownload();

  // Ends the transfer with `why` (a refusal, a failure, the peer gone). Idempotent.
  void abort(const absl::Status& why);

 private:
  friend class ArtifactService;
  Transfer(ArtifactService& service, model::TransferDirection direction, std::string agent_id,
           std::function<void(absl::Status)> cancel, int64_t now_steady_ms);
  // Gives the expectation back (completed or not) and the slot; once.
  void end(bool success, TransferRefusal reason);
  absl::Status fail(TransferRefusal reason, absl::Status st);
  static TransferRefusal refusalOf(const absl::Status& admission);
  // Admitted: the expectation is this transfer's until it ends.
  void hold(const std::string& command_id, size_t expectation);

  ArtifactService& service_;
  const model::TransferDirection direction_;
  const std::string agent_id_;
  std::mutex mu_;
  std::function<void(absl::Status)> cancel_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::string command_of_ ABSL_GUARDED_BY(mu_);  // command_id_, for other threads
  // Deadlines (steady ms); read by ArtifactService::tick.
  const int64_t opened_ms_;
  std::atomic<int64_t> last_progress_ms_;
  std::atomic<bool> admitted_{false};
  // The expectation held (after admission).
  std::string command_id_;
  size_t expectation_ = 0;
  bool holds_expectation_ = false;
  // Upload state.
  std::unique_ptr<store::ArtifactUpload> upload_;
  bool draining_ = false;  // a retry of an upload stored before: bytes checked, not stored
  std::unique_ptr<crypto::Sha256Stream> drain_hash_;
  UploadHeader header_;
  model::Artifact stored_ref_;
  uint64_t received_ = 0;
  // Download state.
  std::unique_ptr<store::ArtifactReader> reader_;
  uint64_t offset_ = 0;
};

class ArtifactService {
 public:
  ArtifactService(store::ArtifactStore& store, CommandService& commands, const common::Clock& clock,
                  ArtifactConfig config);

  // Start-up: opens the store, keeping the staged uploads of open commands to resume.
  absl::Status start();

  // A transfer call from an authenticated agent: takes one of its slots (RESOURCE_EXHAUSTED
  // when all are taken) before anything is read. `cancel` ends the call from the core (a
  // deadline, or its command ended); it may run on any thread, at most once.
  absl::StatusOr<std::shared_ptr<Transfer>> open(model::TransferDirection direction,
                                                 const std::string& agent_id,
                                                 std::function<void(absl::Status)> cancel);

  // Once a second: deadlines, and transfers and expectations of commands that ended.
  void tick();
  // For CommandService's result check: why a successful result must be stored as failed
  // (an expected upload never completed); empty when nothing is missing.
  std::string missingUploads(const std::string& command_id);
  // CommandService's artifact resolver: every download names a stored artifact, whose size
  // and SHA-256 are recorded in the expectation (FAILED_PRECONDITION for a missing one).
  absl::Status resolve(std::vector<model::ArtifactExpectation>& expectations);
  // An open command will download it, or uploaded it: operators cannot delete it yet.
  bool neededByOpenCommand(const model::Artifact& artifact);
  // The janitor's batch: old artifacts no open command refers to.
  absl::StatusOr<int64_t> sweepBatch(int64_t cutoff_ms, int64_t max_rows);

  // Operator side (blocking): an artifact uploaded through the API, outside any command.
  store::ArtifactStore& store() { return store_; }
  const ArtifactConfig& config() const { return config_; }
  ArtifactMetrics& metrics() { return metrics_; }
  uint64_t limitFor(model::ArtifactPurpose purpose, uint64_t expectation_max) const;

 private:
  friend class Transfer;
  struct ExpectationState {
    int attempts = 0;
    bool in_progress = false;
    bool completed = false;
    model::Artifact ref;  // the stored upload, once completed
  };
  struct CommandEntry {
    std::string host_id;
    std::vector<model::ArtifactExpectation> expectations;
    std::vector<ExpectationState> states;
  };
  struct Admitted {
    size_t index = 0;
    model::ArtifactExpectation expectation;
    bool completed = false;
    model::Artifact ref;
  };
  // Finds the command (in flight on `agent_id`), matches `want` against its expectations
  // and marks the match in progress, counting an attempt.
  // `upload`: the header of an upload (a completed expectation admits only a retry of the
  // same bytes); null for a download.
  absl::StatusOr<Admitted> admit(const std::string& agent_id, const std::string& command_id,
                                 const model::ArtifactExpectation& want,
                                 const UploadHeader* upload);
  void giveBack(const std::string& command_id, size_t index, bool completed,
                const model::Artifact* ref);
  void releaseSlot(model::TransferDirection direction, const std::string& agent_id);
  static std::string stagingKey(const std::string& command_id, size_t index);

  store::ArtifactStore& store_;
  CommandService& commands_;
  const common::Clock& clock_;
  const ArtifactConfig config_;
  ArtifactMetrics metrics_;
  std::mutex mu_;
  std::unordered_map<std::string, CommandEntry> by_command_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::array<size_t, 2>> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<Transfer>> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace muster::server
