// The filesystem adapter of the artifact port, under the data dir:
//
//   artifacts/blobs/<sha256[0:2]>/<sha256>   content, once however many artifacts share it
//   artifacts/meta/<id>.meta                 the sidecar: name, size, SHA-256, purpose, ...
//   artifacts/staging/<key>.part             uploads in progress (O_EXCL, 0600)
//
// Content is promoted before its sidecar is written, so a crash between the two leaves
// content no sidecar names, which open() removes; a sidecar always names stored content.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/clock.h"
#include "store/artifact_store.h"

namespace muster::store::fs {

struct FsArtifactStoreOptions {
  std::string dir;  // DATA/artifacts
  // Total bytes of distinct content (plus uploads' reservations); 0: `quota_fraction` of
  // the filesystem's size, measured at open().
  uint64_t quota_bytes = 0;
  double quota_fraction = 0.8;
};

class FsArtifactStore final : public ArtifactStore {
 public:
  FsArtifactStore(FsArtifactStoreOptions options, const common::Clock& clock);
  ~FsArtifactStore() override;

  absl::Status open(const std::vector<std::string>& resumable_keys) override;
  absl::StatusOr<std::unique_ptr<ArtifactUpload>> stage(const StageRequest& request) override;
  absl::StatusOr<model::Artifact> get(const std::string& id) override;
  absl::StatusOr<std::vector<model::Artifact>> list(const model::ArtifactQuery& query) override;
  absl::StatusOr<std::unique_ptr<ArtifactReader>> openRead(const std::string& id) override;
  absl::Status setPinned(const std::string& id, bool pinned) override;
  absl::Status remove(const std::string& id) override;
  absl::StatusOr<int64_t> sweep(int64_t cutoff_ms, int64_t max,
                                const std::function<bool(const model::Artifact&)>& keep) override;
  void dropStaging(const std::string& key) override;
  ArtifactStoreStats stats() const override;
  std::string localPath(const std::string& id) override;

  // The sidecar's text form (tests and the fuzz target of the reader).
  static std::string encodeMeta(const model::Artifact& a);
  static absl::StatusOr<model::Artifact> decodeMeta(std::string_view text);
  static bool isValidKey(std::string_view key);

 private:
  class Upload;
  class Reader;
  friend class Upload;

  std::string blobPath(const std::string& sha256) const;
  std::string metaPath(const std::string& id) const;
  std::string stagingPath(const std::string& key) const;
  // Upload::commit: stores the staged file (verified) as content and writes the sidecar.
  absl::StatusOr<model::Artifact> promote(const std::string& staged_path, model::Artifact meta);
  // An Upload ends: its reservation goes; `kept_bytes` staged bytes stay (to resume) unless
  // its staging was dropped meanwhile.
  void release(const std::string& key, uint64_t reserved, uint64_t kept_bytes,
               const std::string& path);
  void forgetKeptLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status removeLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FsArtifactStoreOptions options_;
  const common::Clock& clock_;
  mutable std::mutex mu_;
  uint64_t quota_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, model::Artifact> by_id_ ABSL_GUARDED_BY(mu_);  // ULIDs: creation order
  struct Blob {
    uint64_t size = 0;
    uint32_t refs = 0;
  };
  std::unordered_map<std::string, Blob> blobs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> staging_busy_ ABSL_GUARDED_BY(mu_);  // keys with an open Upload
  std::set<std::string> drop_on_release_ ABSL_GUARDED_BY(mu_);
  // Staged bytes left for a resume (no Upload open), by key; counted against the quota.
  std::map<std::string, uint64_t> kept_staging_ ABSL_GUARDED_BY(mu_);
  uint64_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t stored_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t logical_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dedup_saved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t swept_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace muster::store::fs
