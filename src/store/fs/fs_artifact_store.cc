// Content-addressed artifacts on the local filesystem.
#include "store/fs/fs_artifact_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/fmt_absl.h"
#include "common/fs.h"
#include "common/ids.h"
#include "crypto/secrets.h"

namespace muster::store::fs {
namespace {

absl::Status errnoStatus(std::string_view what, const std::string& path, int err = errno) {
  std::string msg = absl::StrCat(common::sv(what), " ", path, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(
        absl::StrCat(msg, " (the artifact store's disk is full: free space and retry)"));
  }
  if (err == ENOENT) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

std::string escapeValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '%' || c == '\n' || c == '\r') {
      absl::StrAppend(&out, "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> unescapeValue(std::string_view v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '%') {
      out.push_back(v[i]);
      continue;
    }
    if (i + 2 >= v.size()) return absl::InvalidArgumentError("truncated %-escape");
    int hi = hexDigit(v[i + 1]), lo = hexDigit(v[i + 2]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("bad %-escape");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

bool writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

// --- sidecar -----------------------------------------------------------------------------

std::string FsArtifactStore::encodeMeta(const model::Artifact& a) {
  return absl::StrCat(
      "version=1\nid=", escapeValue(a.id), "\nname=", escapeValue(a.name), "\nsize=", a.size,
      "\nsha256=", a.sha256, "\npurpose=", common::sv(model::toString(a.purpose)),
      "\nhost=", escapeValue(a.host_id), "\ncommand=", escapeValue(a.command_id),
      "\ncreated_by=", escapeValue(a.created_by), "\ncreated_at_ms=", a.created_at_ms,
      "\npinned=", a.pinned ? 1 : 0, "\nexpectation=", a.expectation, "\n");
}

absl::StatusOr<model::Artifact> FsArtifactStore::decodeMeta(std::string_view text) {
  model::Artifact a;
  bool have_id = false, have_size = false, have_sha = false, have_version = false;
  for (absl::string_view piece : absl::StrSplit(common::sv(text), '\n', absl::SkipEmpty())) {
    std::string_view line(piece.data(), piece.size());
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return absl::InvalidArgumentError("line without '='");
    std::string_view key = line.substr(0, eq);
    auto value = unescapeValue(line.substr(eq + 1));
    if (!value.ok()) return value.status();
    if (key == "version") {
      if (*value != "1") return absl::InvalidArgumentError("unknown sidecar version");
      have_version = true;
    } else if (key == "id") {
      a.id = *value;
      have_id = true;
    } else if (key == "name") {
      a.name = *value;
    } else if (key == "size") {
      if (!absl::SimpleAtoi(*value, &a.size)) return absl::InvalidArgumentError("bad size");
      have_size = true;
    } else if (key == "sha256") {
      if (!crypto::isSha256Hex(*value)) return absl::InvalidArgumentError("bad sha256");
      a.sha256 = *value;
      have_sha = true;
    } else if (key == "purpose") {
      if (!model::parseArtifactPurpose(*value, &a.purpose)) {
        return absl::InvalidArgumentError("bad purpose");
      }
    } else if (key == "host") {
      a.host_id = *value;
    } else if (key == "command") {
      a.command_id = *value;
    } else if (key == "created_by") {
      a.created_by = *value;
    } else if (key == "created_at_ms") {
      if (!absl::SimpleAtoi(*value, &a.created_at_ms)) {
        return absl::InvalidArgumentError("bad created_at_ms");
      }
    } else if (key == "pinned") {
      a.pinned = *value == "1";
    } else if (key == "expectation") {
      if (!absl::SimpleAtoi(*value, &a.expectation) || a.expectation < -1 || a.expectation > 1024) {
        return absl::InvalidArgumentError("bad expectation");
      }
    }  // unknown keys: written by a newer musterd, ignored
  }
  if (!have_version || !have_id || !have_size || !have_sha || !isValidKey(a.id)) {
    return absl::InvalidArgumentError("sidecar lacks version, id, size or sha256");
  }
  return a;
}

bool FsArtifactStore::isValidKey(std::string_view key) {
  if (key.empty() || key.size() > 128 || key.front() == '.') return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// --- uploads -----------------------------------------------------------------------------

class FsArtifactStore::Upload final : public ArtifactUpload {
 public:
  Upload(FsArtifactStore& store, std::string key, std::string path, int fd, uint64_t offset,
         uint64_t declared_size, std::string declared_sha256, uint64_t reserved)
      : store_(store),
        key_(std::move(key)),
        path_(std::move(path)),
        fd_(fd),
        offset_(offset),
        declared_size_(declared_size),
        declared_sha256_(std::move(declared_sha256)),
        reserved_(reserved) {}

  ~Upload() override {
    bool kept = fd_ >= 0;  // neither committed nor discarded: staged bytes stay to resume
    if (fd_ >= 0) ::close(fd_);
    store_.release(key_, reserved_, kept ? offset_ : 0, path_);
  }

  uint64_t offset() const override { return offset_; }

  // Resume: keeps the first `offset` staged bytes (fewer if fewer are staged), hashing them
  // again for the hash state, and drops the rest.
  absl::Status resumeAt(uint64_t offset) {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return errnoStatus("cannot stat staging file", path_);
    offset = std::min<uint64_t>(offset, static_cast<uint64_t>(st.st_size));
    std::string buf(1 << 20, '\0');
    uint64_t at = 0;
    while (at < offset) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), offset - at));
      ssize_t n = ::pread(fd_, buf.data(), want, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return errnoStatus("cannot read staging file", path_, n == 0 ? EIO : errno);
      hash_.update(std::string_view(buf.data(), static_cast<size_t>(n)));
      at += static_cast<uint64_t>(n);
    }
    if (::ftruncate(fd_, static_cast<off_t>(offset)) != 0 ||
        ::lseek(fd_, static_cast<off_t>(offset), SEEK_SET) < 0) {
      return errnoStatus("cannot truncate staging file", path_);
    }
    offset_ = offset;
    written_back_ = offset;
    return absl::OkStatus();
  }

  absl::Status append(std::string_view bytes) override {
    if (fd_ < 0) return absl::FailedPreconditionError("upload already finished");
    if (bytes.size() > declared_size_ - offset_) {
      return absl::InvalidArgumentError(
          absl::StrCat("more bytes than declared: ", offset_ + bytes.size(), " received, ",
                       declared_size_, " declared"));
    }
    if (!writeAll(fd_, bytes)) return errnoStatus("cannot write staging file", path_);
    hash_.update(bytes);
    offset_ += bytes.size();
    // Start writeback of what is written as it comes, so the fsync at commit waits for the
    // last few MiB instead of the whole file (and dirty pages do not pile up).
    if (offset_ - written_back_ >= kWritebackBytes) {
      ::sync_file_range(fd_, static_cast<off_t>(written_back_),
                        static_cast<off_t>(offset_ - written_back_), SYNC_FILE_RANGE_WRITE);
      written_back_ = offset_;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<model::Artifact> commit(model::Artifact meta) override {
    if (fd_ < 0) return absl::FailedPreconditionError("upload already finished");
    if (offset_ != declared_size_) {
      discard();
      return absl::InvalidArgumentError(absl::StrCat("fewer bytes than declared: ", offset_,
                                                     " received, ", declared_size_, " declared"));
    }
    std::string got = hash_.finishHex();
    if (got != declared_sha256_) {
      discard();
      return absl::InvalidArgumentError(
          absl::StrCat("sha256 mismatch: declared ", declared_sha256_, ", received ", got));
    }
    if (::fsync(fd_) != 0) {
      auto st = errnoStatus("cannot fsync staging file", path_);
      discard();
      return st;
    }
    ::close(fd_);
    fd_ = -1;
    meta.size = declared_size_;
    meta.sha256 = declared_sha256_;
    auto stored = store_.promote(path_, std::move(meta));
    if (!stored.ok()) ::unlink(path_.c_str());
    return stored;
  }

  void discard() override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(path_.c_str());
  }

 private:
  static constexpr uint64_t kWritebackBytes = 8u << 20;
  crypto::Sha256Stream hash_;
  uint64_t written_back_ = 0;
  FsArtifactStore& store_;
  const std::string key_;
  const std::string path_;
  int fd_;
  uint64_t offset_;
  const uint64_t declared_size_;
  const std::string declared_sha256_;
  const uint64_t reserved_;
};

class FsArtifactStore::Reader final : public ArtifactReader {
 public:
  Reader(model::Artifact artifact, int fd) : artifact_(std::move(artifact)), fd_(fd) {}
  ~Reader() override { ::close(fd_); }
  const model::Artifact& artifact() const override { return artifact_; }
  absl::Status read(uint64_t offset, size_t max, std::string* out) override {
    out->clear();
    if (offset >= artifact_.size) return absl::OkStatus();
    size_t n = static_cast<size_t>(std::min<uint64_t>(max, artifact_.size - offset));
    out->resize(n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, out->data() + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        out->clear();
        return r == 0 ? absl::DataLossError(absl::StrCat("artifact ", artifact_.id,
                                                         " is shorter on disk than its size"))
                      : errnoStatus("cannot read artifact", artifact_.id);
      }
      done += static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }

 private:
  const model::Artifact artifact_;
  const int fd_;
};

// --- the store ---------------------------------------------------------------------------

FsArtifactStore::FsArtifactStore(FsArtifactStoreOptions options, const common::Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

FsArtifactStore::~FsArtifactStore() = default;

std::string FsArtifactStore::blobPath(const std::string& sha256) const {
  return absl::StrCat(options_.dir, "/blobs/", sha256.substr(0, 2), "/", sha256);
}
std::string FsArtifactStore::metaPath(const std::string& id) const {
  return absl::StrCat(options_.dir, "/meta/", id, ".meta");
}
std::string FsArtifactStore::stagingPath(const std::string& key) const {
  return absl::StrCat(options_.dir, "/staging/", key, ".part");
}

absl::Status FsArtifactStore::open(const std::vector<std::string>& resumable_keys) {
  namespace stdfs = std::filesystem;
  for (const char* sub : {"/blobs", "/meta", "/staging"}) {
    if (auto st = common::makeDirs(options_.dir + sub, 0700); !st.ok()) return st;
  }
  uint64_t quota = options_.quota_bytes;
  if (quota == 0) {
    struct statvfs vfs {};
    if (::statvfs(options_.dir.c_str(), &vfs) != 0) {
      return errnoStatus("cannot measure the filesystem of", options_.dir);
    }
    quota = static_cast<uint64_t>(static_cast<double>(vfs.f_blocks) *
                                  static_cast<double>(vfs.f_frsize) * options_.quota_fraction);
  }
  std::map<std::string, model::Artifact> by_id;
  std::unordered_map<std::string, Blob> blobs;
  uint64_t stored = 0, logical = 0;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(options_.dir + "/meta", ec)) {
    std::string path = entry.path().string();
    if (entry.path().extension() != ".meta") {
      ::unlink(path.c_str());  // a sidecar's temporary file from a crash
      continue;
    }
    auto text = common::readFile(path);
    auto meta = text.ok() ? decodeMeta(*text) : text.status();
    if (!meta.ok() || entry.path().stem().string() != meta->id) {
      spdlog::error("artifact store: ignoring unreadable sidecar {}: {}", path,
                    meta.ok() ? "its id differs from its name" : meta.status().message());
      continue;
    }
    struct stat st {};
    if (::stat(blobPath(meta->sha256).c_str(), &st) != 0 ||
        static_cast<uint64_t>(st.st_size) != meta->size) {
      spdlog::error("artifact store: artifact {} ({}) has lost its content; removing its sidecar",
                    meta->id, meta->name);
      ::unlink(path.c_str());
      continue;
    }
    Blob& b = blobs[meta->sha256];
    if (b.refs++ == 0) {
      b.size = meta->size;
      stored += meta->size;
    }
    logical += meta->size;
    by_id.emplace(meta->id, *std::move(meta));
  }
  if (ec)
    return absl::InternalError(absl::StrCat("cannot list ", options_.dir, "/meta: ", ec.message()));
  for (const auto& dir : stdfs::directory_iterator(options_.dir + "/blobs", ec)) {
    for (const auto& entry : stdfs::directory_iterator(dir.path(), ec)) {
      if (!blobs.contains(entry.path().filename().string())) {
        ::unlink(entry.path().c_str());  // promoted, but its sidecar never written
      }
    }
  }
  std::set<std::string> keep;
  for (const auto& key : resumable_keys) keep.insert(key + ".part");
  std::map<std::string, uint64_t> kept;
  uint64_t kept_total = 0;
  for (const auto& entry : stdfs::directory_iterator(options_.dir + "/staging", ec)) {
    std::string file = entry.path().filename().string();
    if (!keep.contains(file)) {
      ::unlink(entry.path().c_str());
      continue;
    }
    std::error_code size_ec;
    uint64_t bytes = entry.file_size(size_ec);
    if (size_ec) continue;
    kept[file.substr(0, file.size() - 5)] = bytes;
    kept_total += bytes;
  }
  std::lock_guard lock(mu_);
  kept_staging_ = std::move(kept);
  kept_bytes_ = kept_total;
  quota_bytes_ = quota;
  by_id_ = std::move(by_id);
  blobs_ = std::move(blobs);
  stored_bytes_ = stored;
  logical_bytes_ = logical;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArtifactUpload>> FsArtifactStore::stage(
    const StageRequest& request) {
  if (!isValidKey(request.key)) {
    return absl::InvalidArgumentError(absl::StrCat("bad staging key '", request.key, "'"));
  }
  if (!crypto::isSha256Hex(request.declared_sha256)) {
    return absl::InvalidArgumentError("declared sha256 must be 64 lower-case hex digits");
  }
  if (request.resume_offset > request.declared_size) {
    return absl::InvalidArgumentError(absl::StrCat("resume offset ", request.resume_offset,
                                                   " is past the declared size ",
                                                   request.declared_size));
  }
  // The whole declared size is reserved, whatever the content: the bytes are staged before
  // their hash is known (a declared hash of stored content proves nothing until commit).
  const uint64_t reserve = request.declared_size;
  {
    std::lock_guard lock(mu_);
    if (staging_busy_.contains(request.key)) {
      return absl::AlreadyExistsError("another transfer is writing this upload");
    }
    forgetKeptLocked(request.key);  // its staged bytes are part of this reservation now
    uint64_t used = stored_bytes_ + reserved_bytes_ + kept_bytes_;
    if (used + reserve > quota_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the artifact store is over its quota: ", used, " of ", quota_bytes_,
          " bytes stored, staged or reserved, and this upload needs ", reserve,
          " more; delete or unpin artifacts (muster artifact rm) or raise --artifact-quota"));
    }
    reserved_bytes_ += reserve;
    staging_busy_.insert(request.key);
  }
  std::string path = stagingPath(request.key);
  auto fail = [&](absl::Status st) -> absl::StatusOr<std::unique_ptr<ArtifactUpload>> {
    release(request.key, reserve, 0, path);
    return st;
  };
  int fd = -1;
  if (request.resume_offset > 0) fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  bool resuming = fd >= 0;
  if (!resuming) {
    ::unlink(path.c_str());
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fail(errnoStatus("cannot create staging file", path));
  }
  // From here the upload owns the descriptor, the reservation and the busy mark.
  auto upload = std::make_unique<Upload>(*this, request.key, path, fd, 0, request.declared_size,
                                         request.declared_sha256, reserve);
  if (resuming) {
    if (auto st = upload->resumeAt(request.resume_offset); !st.ok()) return st;
  }
  return std::unique_ptr<ArtifactUpload>(std::move(upload));
}

void FsArtifactStore::release(const std::string& key, uint64_t reserved, uint64_t kept_bytes,
                              const std::string& path) {
  std::lock_guard lock(mu_);
  reserved_bytes_ -= std::min(reserved_bytes_, reserved);
  staging_busy_.erase(key);
  if (drop_on_release_.erase(key) > 0) {
    ::unlink(path.c_str());  // its command ended while it was being written
  } else if (kept_bytes > 0) {
    kept_staging_[key] = kept_bytes;  // counted against the quota until resumed or dropped
    kept_bytes_ += kept_bytes;
  }
}

void FsArtifactStore::forgetKeptLocked(const std::string& key) {
  auto it = kept_staging_.find(key);
  if (it == kept_staging_.end()) return;
  kept_bytes_ -= std::min(kept_bytes_, it->second);
  kept_staging_.erase(it);
}

absl::StatusOr<model::Artifact> FsArtifactStore::promote(const std::string& staged_path,
                                                         model::Artifact meta) {
  meta.id = common::newUlid(clock_.nowMs());
  if (meta.created_at_ms == 0) meta.created_at_ms = clock_.nowMs();
  std::string blob = blobPath(meta.sha256);
  std::string blob_dir = blob.substr(0, blob.rfind('/'));
  std::lock_guard lock(mu_);
  auto it = blobs_.find(meta.sha256);
  bool had = it != blobs_.end();
  if (had) {
    ::unlink(staged_path.c_str());  // the same bytes are stored already
  } else {
    if (!common::fileExists(blob_dir)) {
      if (auto st = common::makeDirs(blob_dir, 0700); !st.ok()) return st;
      if (auto st = common::fsyncDir(options_.dir + "/blobs"); !st.ok()) return st;
    }
    if (::rename(staged_path.c_str(), blob.c_str()) != 0) {
      return errnoStatus("cannot promote staged upload to", blob);
    }
    if (auto st = common::fsyncDir(blob_dir); !st.ok()) return st;
  }
  if (auto st = common::writeFileAtomic(metaPath(meta.id), encodeMeta(meta), 0600); !st.ok()) {
    if (!had) ::unlink(blob.c_str());
    return st;
  }
  Blob& b = blobs_[meta.sha256];
  if (b.refs++ == 0) {
    b.size = meta.size;
    stored_bytes_ += meta.size;
  } else {
    dedup_saved_bytes_ += meta.size;
  }
  logical_bytes_ += meta.size;
  by_id_[meta.id] = meta;
  return meta;
}

absl::StatusOr<model::Artifact> FsArtifactStore::get(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end())
    return absl::NotFoundError(absl::StrCat("no artifact '", id.substr(0, 64), "'"));
  return it->second;
}

absl::StatusOr<std::vector<model::Artifact>> FsArtifactStore::list(
    const model::ArtifactQuery& query) {
  std::vector<model::Artifact> out;
  std::lock_guard lock(mu_);
  auto it = query.before_id.empty() ? by_id_.end() : by_id_.lower_bound(query.before_id);
  while (it != by_id_.begin() && out.size() < static_cast<size_t>(std::max(query.limit, 0))) {
    --it;
    const model::Artifact& a = it->second;
    if (!query.host_id.empty() && a.host_id != query.host_id) continue;
    if (!query.command_id.empty() && a.command_id != query.command_id) continue;
    if (query.purpose && a.purpose != *query.purpose) continue;
    if (query.since_ms != 0 && a.created_at_ms < query.since_ms) continue;
    if (query.until_ms != 0 && a.created_at_ms >= query.until_ms) continue;
    out.push_back(a);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ArtifactReader>> FsArtifactStore::openRead(const std::string& id) {
  auto meta = get(id);
  if (!meta.ok()) return meta.status();
  std::string path = blobPath(meta->sha256);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open the content of artifact", id);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != meta->size) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat("the content of artifact ", id,
                                            " does not have its recorded size ", meta->size));
  }
  return std::unique_ptr<ArtifactReader>(std::make_unique<Reader>(*std::move(meta), fd));
}

absl::Status FsArtifactStore::setPinned(const std::string& id, bool pinned) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end())
    return absl::NotFoundError(absl::StrCat("no artifact '", id.substr(0, 64), "'"));
  if (it->second.pinned == pinned) return absl::OkStatus();
  model::Artifact changed = it->second;
  changed.pinned = pinned;
  if (auto st = common::writeFileAtomic(metaPath(id), encodeMeta(changed), 0600); !st.ok()) {
    return st;
  }
  it->second = std::move(changed);
  return absl::OkStatus();
}

absl::Status FsArtifactStore::removeLocked(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end())
    return absl::NotFoundError(absl::StrCat("no artifact '", id.substr(0, 64), "'"));
  if (::unlink(metaPath(id).c_str()) != 0 && errno != ENOENT) {
    return errnoStatus("cannot remove the sidecar of artifact", id);
  }
  const model::Artifact& a = it->second;
  logical_bytes_ -= std::min(logical_bytes_, a.size);
  auto b = blobs_.find(a.sha256);
  if (b != blobs_.end() && --b->second.refs == 0) {
    ::unlink(blobPath(a.sha256).c_str());  // readers holding it open keep reading
    stored_bytes_ -= std::min(stored_bytes_, b->second.size);
    blobs_.erase(b);
  }
  by_id_.erase(it);
  return absl::OkStatus();
}

absl::Status FsArtifactStore::remove(const std::string& id) {
  std::lock_guard lock(mu_);
  return removeLocked(id);
}

absl::StatusOr<int64_t> FsArtifactStore::sweep(
    int64_t cutoff_ms, int64_t max, const std::function<bool(const model::Artifact&)>& keep) {
  // Candidates are judged without the store's lock: `keep` asks the core.
  std::vector<model::Artifact> old;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, a] : by_id_) {
      if (a.created_at_ms >= cutoff_ms) continue;
      if (!a.pinned) old.push_back(a);
    }
  }
  int64_t removed = 0;
  for (const auto& a : old) {
    if (removed >= max) break;
    if (keep && keep(a)) continue;
    std::lock_guard lock(mu_);
    auto it = by_id_.find(a.id);
    if (it == by_id_.end() || it->second.pinned) continue;  // changed meanwhile
    if (auto st = removeLocked(a.id); !st.ok()) return st;
    ++removed;
    ++swept_;
  }
  return removed;
}

void FsArtifactStore::dropStaging(const std::string& key) {
  if (!isValidKey(key)) return;
  std::lock_guard lock(mu_);
  if (staging_busy_.contains(key)) {
    drop_on_release_.insert(key);  // being written: removed when its upload lets go
    return;
  }
  forgetKeptLocked(key);
  ::unlink(stagingPath(key).c_str());
}

std::string FsArtifactStore::localPath(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? std::string() : blobPath(it->second.sha256);
}

ArtifactStoreStats FsArtifactStore::stats() const {
  std::lock_guard lock(mu_);
  ArtifactStoreStats s;
  s.artifacts = by_id_.size();
  s.stored_bytes = stored_bytes_;
  s.logical_bytes = logical_bytes_;
  s.reserved_bytes = reserved_bytes_ + kept_bytes_;
  s.quota_bytes = quota_bytes_;
  s.dedup_saved_bytes = dedup_saved_bytes_;
  s.swept = swept_;
  return s;
}

}  // namespace muster::store::fs
