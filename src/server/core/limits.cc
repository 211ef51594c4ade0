// Limits: counters and rate-limited log lines of the bounds peers run into.
#include "server/core/limits.h"

#include <spdlog/spdlog.h>

namespace muster::server {

void Limits::hit(Limit limit, int64_t steady_ms, std::string_view what) {
  size_t i = static_cast<size_t>(limit);
  uint64_t total = hits_[i].fetch_add(1, std::memory_order_relaxed) + 1;
  int64_t last = last_log_ms_[i].load(std::memory_order_relaxed);
  if (last != 0 && steady_ms - last < 10'000) return;
  if (!last_log_ms_[i].compare_exchange_strong(last, steady_ms == 0 ? 1 : steady_ms)) return;
  uint64_t before = logged_hits_[i].exchange(total);
  uint64_t since = total - before;
  if (since > 1) {
    spdlog::warn("{} ({} times since the last such line; muster_limit_hits_total{{limit=\"{}\"}})",
                 what, since, name(limit));
  } else {
    spdlog::warn("{} (muster_limit_hits_total{{limit=\"{}\"}})", what, name(limit));
  }
}

std::string_view Limits::name(Limit limit) {
  switch (limit) {
    case Limit::kSendQueue: return "agent_send_queue";
    case Limit::kStuckWrite: return "agent_stuck_write";
    case Limit::kEnrollBacklog: return "enroll_backlog";
    case Limit::kStoreBacklog: return "store_backlog";
    case Limit::kLateBacklog: return "late_report_backlog";
    case Limit::kOutputLost: return "output_write_failed";
    case Limit::kOutputBudget: return "output_budget";
    case Limit::kCount: break;
  }
  return "unknown";
}

}  // namespace muster::server
