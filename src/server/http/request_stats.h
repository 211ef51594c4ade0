// Requests answered per route and HTTP status, and the transport's limits (connections, event
// streams, timeouts), in lock-free counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "server/http/api.h"
#include "server/http/http_server.h"

namespace muster::server::http {

// Gauges and counters of the bounds the transport enforces (GET /metrics shows them).
struct TransportStats {
  std::atomic<int64_t> connections_open{0};
  std::atomic<uint64_t> connections_refused{0};  // at max_connections
  // Closed by a timeout, by phase (see HttpOptions).
  std::atomic<uint64_t> header_timeouts{0};
  std::atomic<uint64_t> body_timeouts{0};
  std::atomic<uint64_t> idle_timeouts{0};
  std::atomic<uint64_t> write_timeouts{0};
  std::atomic<uint64_t> tls_failures{0};            // TLS handshakes that failed
  std::atomic<int64_t> followers{0};                // live event streams
  std::atomic<uint64_t> followers_refused{0};       // at sse_max_followers
  std::atomic<uint64_t> followers_dropped{0};       // fell behind by more than sse_max_queued_bytes
  std::atomic<int64_t> follower_buffered_bytes{0};  // all followers, queued or being written
  std::atomic<uint64_t> follower_buffer_peak_bytes{0};  // of one follower, since start

  void notePeak(uint64_t bytes) {
    uint64_t seen = follower_buffer_peak_bytes.load(std::memory_order_relaxed);
    while (bytes > seen && !follower_buffer_peak_bytes.compare_exchange_weak(
                               seen, bytes, std::memory_order_relaxed)) {
    }
  }
};

class RequestStats {
 public:
  TransportStats transport;

  void record(Route route, int status);
  std::vector<RequestCount> snapshot() const;

 private:
  static constexpr std::array<int, 19> kStatuses = {100, 200, 201, 204, 400, 401, 403,
                                                    404, 405, 408, 409, 413, 415, 422,
                                                    429, 431, 500, 503, 0};  // 0: any other
  static constexpr size_t kRoutes = static_cast<size_t>(Route::kCount);
  std::array<std::array<std::atomic<uint64_t>, kStatuses.size()>, kRoutes> counts_{};
};

}  // namespace muster::server::http
