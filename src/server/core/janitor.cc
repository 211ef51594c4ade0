// Janitor: the hourly schedule and the batch loop of every sweep task.
#include "server/core/janitor.h"

#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "common/fmt_absl.h"

namespace muster::server {

Janitor::Janitor(const common::Clock& clock, int64_t interval_ms)
    : clock_(clock), interval_ms_(interval_ms) {}

void Janitor::add(SweepTask task) {
  std::lock_guard lock(mu_);
  tasks_.push_back(std::move(task));
  swept_.push_back(0);
}

void Janitor::tick() {
  if (executor_ == nullptr || stopping_) return;
  const int64_t now = clock_.steadyMs();
  int64_t last = last_run_steady_ms_.load();
  if (last >= 0 && now - last < interval_ms_) return;
  bool idle = false;
  if (!running_.compare_exchange_strong(idle, true)) return;
  last_run_steady_ms_ = now;
  executor_->post([this] {
    sweepNow();
    running_ = false;
  });
}

std::vector<SweepResult> Janitor::sweepNow() {
  std::vector<SweepResult> results;
  runs_++;
  for (size_t i = 0; i < tasks_.size(); ++i) {
    const SweepTask& task = tasks_[i];
    SweepResult result{.task = task.name, .swept = 0, .status = absl::OkStatus()};
    if (task.retention_ms <= 0 || !task.sweep_batch) {
      results.push_back(std::move(result));
      continue;
    }
    // The cutoff is fixed for the whole run: what ages meanwhile waits for the next one.
    const int64_t cutoff = clock_.nowMs() - task.retention_ms;
    while (!stopping_) {
      auto rows = task.sweep_batch(cutoff, task.batch_rows);
      if (!rows.ok()) {
        result.status = rows.status();
        break;
      }
      result.swept += *rows;
      {
        std::lock_guard lock(mu_);
        swept_[i] += static_cast<uint64_t>(*rows);
      }
      if (*rows < task.batch_rows) break;
    }
    if (!result.status.ok()) {
      spdlog::error(
          "janitor: sweeping {} older than {} stopped after {} rows: {}; retrying in an "
          "hour",
          task.name, common::formatDurationMs(task.retention_ms), result.swept,
          result.status.message());
    } else if (result.swept > 0) {
      spdlog::info("janitor: swept {} {} older than {}", result.swept, task.name,
                   common::formatDurationMs(task.retention_ms));
    }
    results.push_back(std::move(result));
  }
  return results;
}

uint64_t Janitor::swept(const std::string& task) const {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < tasks_.size(); ++i) {
    if (tasks_[i].name == task) return swept_[i];
  }
  return 0;
}

std::vector<std::pair<std::string, uint64_t>> Janitor::sweptByTask() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (size_t i = 0; i < tasks_.size(); ++i) out.emplace_back(tasks_[i].name, swept_[i]);
  return out;
}

}  // namespace muster::server
