// Counters and histograms the core keeps for /metrics (rendered by the HTTP adapter).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "server/core/limits.h"

namespace muster::server {

// Fixed buckets (upper bounds, seconds), cumulative on read like Prometheus.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // bounds_.size() + 1
  std::atomic<uint64_t> sum_micros_{0};
};

struct CoreMetrics {
  CoreMetrics();
  // From CommandAccepted (or dispatch) to the stored result.
  Histogram dispatch_to_result_seconds;
  // Terminal results stored since start, by model::CommandState value.
  std::array<std::atomic<uint64_t>, 8> results_by_state{};
  std::atomic<uint64_t> commands_created{0};
  // Agent streams that asked to open (authenticated or not), over any transport.
  std::atomic<uint64_t> streams_opened{0};
  // Agent streams opened over TLS, by whether their connection resumed a TLS session
  // (an abbreviated handshake: no certificate sent or verified) or made a full handshake.
  std::atomic<uint64_t> tls_streams_resumed{0};
  std::atomic<uint64_t> tls_streams_full{0};
  // Bounds peers ran into (queues, backlogs, stuck writes).
  Limits limits;
};

}  // namespace muster::server
