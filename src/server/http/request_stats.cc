// RequestStats implementation.
#include "server/http/request_stats.h"

#include <string>

namespace muster::server::http {

void RequestStats::record(Route route, int status) {
  auto r = static_cast<size_t>(route);
  if (r >= kRoutes) r = 0;
  for (size_t s = 0; s + 1 < kStatuses.size(); ++s) {
    if (kStatuses[s] == status) {
      counts_[r][s].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  counts_[r][kStatuses.size() - 1].fetch_add(1, std::memory_order_relaxed);
}

std::vector<RequestCount> RequestStats::snapshot() const {
  std::vector<RequestCount> out;
  for (size_t r = 0; r < kRoutes; ++r) {
    for (size_t s = 0; s < kStatuses.size(); ++s) {
      uint64_t n = counts_[r][s].load(std::memory_order_relaxed);
      if (n == 0) continue;
      out.push_back(RequestCount{std::string(routeName(static_cast<Route>(r))), kStatuses[s], n});
    }
  }
  return out;
}

}  // namespace muster::server::http
