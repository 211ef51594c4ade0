#include "store/sqlite/checkpointer.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "common/fmt_absl.h"

namespace muster::store::sqlite {
namespace {
// A WAL this long (about 256 MiB) means checkpoints cannot keep up, or a reader holds an old
// snapshot for a long time; say so.
constexpr int kWalWarnFrames = 65'536;

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Checkpointer::Checkpointer(std::unique_ptr<Connection> conn, int64_t interval_ms)
    : conn_(std::move(conn)), interval_ms_(interval_ms) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "sqlite-ckpt");
}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

uint64_t Checkpointer::checkpoints() const {
  std::lock_guard lock(mu_);
  return checkpoints_;
}

void Checkpointer::run() {
  std::unique_lock lock(mu_);
  while (true) {
    bool stop = cv_.wait_for(lock, std::chrono::milliseconds(interval_ms_),
                             [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; });
    lock.unlock();
    checkpointOnce();
    lock.lock();
    ++checkpoints_;
    if (stop) return;
  }
}

void Checkpointer::checkpointOnce() {
  int wal_frames = 0, copied = 0;
  // PASSIVE: copies what no reader still needs, never waits for the writer or readers.
  auto st = conn_->checkpoint(SQLITE_CHECKPOINT_PASSIVE, &wal_frames, &copied);
  if (!st.ok()) {
    // BUSY just means another checkpoint is running; anything else is worth a line.
    if (!absl::IsUnavailable(st)) spdlog::warn("WAL checkpoint failed: {}", st.message());
    return;
  }
  int64_t now = steadyMs();
  if (wal_frames > kWalWarnFrames && now - last_warning_ms_ > 60'000) {
    last_warning_ms_ = now;
    spdlog::warn(
        "the database WAL holds {} pages ({} copied back): checkpoints are falling behind the "
        "writes, or a long read holds an old snapshot",
        wal_frames, copied);
  }
}

}  // namespace muster::store::sqlite
