// The janitor: named sweep tasks (old audit events today; artifacts and old command output
// later), each with its own retention, run in bounded batches once an hour.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/worker_pool.h"

namespace muster::server {

struct SweepTask {
  std::string name;          // "events": the metric's label and the log's word
  int64_t retention_ms = 0;  // kept this long; 0 keeps everything (the task never runs)
  // Deletes at most `max_rows` of what is older than `cutoff_ms` (wall-clock ms) and
  // returns how many it deleted; fewer than `max_rows` means nothing older is left. Blocking.
  std::function<absl::StatusOr<int64_t>(int64_t cutoff_ms, int64_t max_rows)> sweep_batch;
  int64_t batch_rows = 1000;
};

struct SweepResult {
  std::string task;
  int64_t swept = 0;
  absl::Status status;
};

class Janitor {
 public:
  static constexpr int64_t kDefaultIntervalMs = 3600 * 1000;

  Janitor(const common::Clock& clock, int64_t interval_ms = kDefaultIntervalMs);

  // Before start only (not synchronised with a sweep in progress).
  void add(SweepTask task);
  // Where sweeps run (a thread of their own: a sweep waits on the store batch after batch).
  // Without one, tick() does nothing and only sweepNow() sweeps.
  void setExecutor(common::Executor* executor) { executor_ = executor; }

  // Cheap; call often (ControlPlane::tick). Posts a sweep of every task when none ran for
  // the interval (the first at once) and none is running.
  void tick();
  // Runs every task now on the caller's thread, batch after batch until nothing old is left
  // or stop() is called.
  std::vector<SweepResult> sweepNow();
  // Shutdown: a sweep in progress stops after its current batch; no new one starts.
  void stop() { stopping_ = true; }

  // Rows swept by `task` since start (0 for an unknown task).
  uint64_t swept(const std::string& task) const;
  std::vector<std::pair<std::string, uint64_t>> sweptByTask() const;
  uint64_t runs() const { return runs_.load(); }

 private:
  const common::Clock& clock_;
  const int64_t interval_ms_;
  common::Executor* executor_ = nullptr;
  std::vector<SweepTask> tasks_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> running_{false};
  std::atomic<int64_t> last_run_steady_ms_{-1};
  std::atomic<uint64_t> runs_{0};
  mutable std::mutex mu_;
  std::vector<uint64_t> swept_ ABSL_GUARDED_BY(mu_);  // by task index
};

}  // namespace muster::server
