// Requests answered per route and HTTP status, in lock-free counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "server/http/api.h"
#include "server/http/http_server.h"

namespace muster::server::http {

class RequestStats {
 public:
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
