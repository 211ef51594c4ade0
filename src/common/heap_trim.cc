#include "common/heap_trim.h"

#include <chrono>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace muster::common {

bool HeapTrimPolicy::due(uint64_t opened, int64_t now_ms) {
  if (!started_) {
    started_ = true;
    next_look_ms_ = now_ms + o_.window_ms;
    seen_ = opened;
    trimmed_ = opened;
    return false;
  }
  if (now_ms < next_look_ms_) return false;
  next_look_ms_ = now_ms + o_.window_ms;
  const bool quiet = opened == seen_;
  seen_ = opened;
  const uint64_t since = opened - trimmed_;
  if ((quiet && since >= o_.min_streams) || since >= o_.max_streams) {
    trimmed_ = opened;
    return true;
  }
  return false;
}

double trimHeap() {
  auto t0 = std::chrono::steady_clock::now();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace muster::common
