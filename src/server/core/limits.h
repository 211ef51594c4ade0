// Bounds on what a peer can fill (queues, buffers, backlogs): one counter per limit for
// /metrics and one log line per limit at most every 10 s, however hard it is hit.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace muster::server {

enum class Limit : uint8_t {
  kSendQueue,      // an agent's outgoing queue is full: the stream ends (RESOURCE_EXHAUSTED)
  kStuckWrite,     // a write to an agent made no progress past the deadline: stream cancelled
  kEnrollBacklog,  // too many Enroll calls waiting for a worker: RESOURCE_EXHAUSTED
  kStoreBacklog,   // the store's writer is too far behind: agent results wait (stream ends)
  kLateBacklog,    // too much resent output/results for ended commands waiting: stream ends
  kOutputLost,     // an output write failed (disk full): its result is not acked
  kOutputBudget,   // an agent sent more output for a command than it may keep: dropped
  kCount,
};

class Limits {
 public:
  // Counts one hit; logs `what` (warn) unless this limit was logged in the last 10 s, adding
  // how many hits that line stands for.
  void hit(Limit limit, int64_t steady_ms, std::string_view what);
  uint64_t hits(Limit limit) const {
    return hits_[static_cast<size_t>(limit)].load(std::memory_order_relaxed);
  }
  static std::string_view name(Limit limit);

 private:
  static constexpr size_t kN = static_cast<size_t>(Limit::kCount);
  std::array<std::atomic<uint64_t>, kN> hits_{};
  std::array<std::atomic<uint64_t>, kN> logged_hits_{};
  std::array<std::atomic<int64_t>, kN> last_log_ms_{};
};

}  // namespace muster::server
