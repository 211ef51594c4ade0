// The artifact port of the control plane: bytes of command-scoped artifacts and their
// metadata. The core's artifact service depends on this interface only; src/store/fs
// implements it on the data dir's filesystem (content-addressed), and a PostgreSQL or
// S3-compatible backend can implement it later without touching the core.
//
// Every call may block on I/O: call from worker threads, never from a transport reaction.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/artifact.h"

namespace muster::store {

// An upload being staged: bytes appended in order while SHA-256 is computed. Destroyed
// without commit() or discard(), the staging file stays, so a retry can resume it.
class ArtifactUpload {
 public:
  virtual ~ArtifactUpload() = default;
  // Bytes staged so far (where the next append goes).
  virtual uint64_t offset() const = 0;
  // RESOURCE_EXHAUSTED past the declared size reserved by stage() (or the disk filling up),
  // INVALID_ARGUMENT for more bytes than declared.
  virtual absl::Status append(std::string_view bytes) = 0;
  // Checks size and SHA-256 against the declaration (INVALID_ARGUMENT, staging removed, on
  // a mismatch), fsyncs, and stores the bytes (once per content) and `meta` under a new id
  // (meta's id, size and sha256 are set by the store). The artifact is returned.
  virtual absl::StatusOr<model::Artifact> commit(model::Artifact meta) = 0;
  // Removes the staging file (a refused or abandoned transfer that must not be resumed).
  virtual void discard() = 0;
};

// Reads of one stored artifact, at offsets.
class ArtifactReader {
 public:
  virtual ~ArtifactReader() = default;
  virtual const model::Artifact& artifact() const = 0;
  // Up to `max` bytes at `offset` into `out` (replaced); empty at the end.
  virtual absl::Status read(uint64_t offset, size_t max, std::string* out) = 0;
};

struct StageRequest {
  // The staging slot, made by the core from the command and expectation ("01J….0"), or
  // random for an operator's upload: [A-Za-z0-9_-.], not starting with '.'.
  std::string key;
  uint64_t declared_size = 0;
  std::string declared_sha256;  // lower-case hex
  // > 0: continue the staging file of `key` at min(resume_offset, bytes staged) instead of
  // starting afresh; the staged prefix is hashed again. 0: start afresh.
  uint64_t resume_offset = 0;
};

struct ArtifactStoreStats {
  uint64_t artifacts = 0;
  uint64_t stored_bytes = 0;    // distinct content on disk
  uint64_t logical_bytes = 0;   // sum of the artifacts' sizes (>= stored_bytes)
  uint64_t reserved_bytes = 0;  // declared by uploads in progress, and staged to resume
  uint64_t quota_bytes = 0;
  uint64_t dedup_saved_bytes = 0;  // bytes not stored again since start (same content)
  uint64_t swept = 0;
};

class ArtifactStore {
 public:
  virtual ~ArtifactStore() = default;

  // Start-up: reads the metadata, removes content no artifact refers to, and empties the
  // staging area except the staging files of `resumable_keys` (uploads of commands still
  // open, which their agents may resume).
  virtual absl::Status open(const std::vector<std::string>& resumable_keys) = 0;

  // Opens the staging of an upload, reserving its declared size against the quota:
  // RESOURCE_EXHAUSTED when the quota cannot take it.
  virtual absl::StatusOr<std::unique_ptr<ArtifactUpload>> stage(const StageRequest& request) = 0;

  virtual absl::StatusOr<model::Artifact> get(const std::string& id) = 0;  // NOT_FOUND
  // Newest first.
  virtual absl::StatusOr<std::vector<model::Artifact>> list(const model::ArtifactQuery& query) = 0;
  virtual absl::StatusOr<std::unique_ptr<ArtifactReader>> openRead(const std::string& id) = 0;
  virtual absl::Status setPinned(const std::string& id, bool pinned) = 0;
  // Removes the artifact, and its content once nothing else refers to it. NOT_FOUND.
  virtual absl::Status remove(const std::string& id) = 0;
  // Removes at most `max` unpinned artifacts created before `cutoff_ms` for which `keep`
  // is false (an open command still refers to them); returns how many.
  virtual absl::StatusOr<int64_t> sweep(
      int64_t cutoff_ms, int64_t max, const std::function<bool(const model::Artifact&)>& keep) = 0;
  // Removes the staging file of `key`, if any.
  virtual void dropStaging(const std::string& key) = 0;

  virtual ArtifactStoreStats stats() const = 0;
  // A file holding the artifact's bytes that the HTTP adapter may send directly ("" for a
  // backend without local files).
  virtual std::string localPath(const std::string& id) { return {}; }
};

}  // namespace muster::store
