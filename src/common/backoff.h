// Exponential backoff with full jitter, so a restarted server is not stampeded.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace muster::common {

class Backoff {
 public:
  Backoff(int64_t base_ms, int64_t cap_ms, uint64_t seed = std::random_device{}())
      : base_ms_(base_ms), cap_ms_(cap_ms), rng_(seed) {}

  // Delay before the next attempt: uniform in [0, ceilingMs()].
  int64_t nextDelayMs() {
    int64_t ceiling = ceilingMs();
    ++attempt_;
    std::uniform_int_distribution<int64_t> dist(0, std::max<int64_t>(ceiling, 0));
    return dist(rng_);
  }
  // Upper bound of the next delay: the first window for the first attempt (when set and
  // wider than the base), then min(cap, base * 2^attempt).
  int64_t ceilingMs() const {
    if (attempt_ == 0 && first_window_ms_ > base_ms_) return first_window_ms_;
    return attempt_ < 40 ? std::min(cap_ms_, base_ms_ << attempt_) : cap_ms_;
  }
  void reset() { attempt_ = 0; }
  // Widens only the first attempt's window (the server's fleet-sized reconnect hint): the
  // fleet's first attempts spread over it; an agent whose first attempt fails (the server
  // not up yet) goes on with its own schedule, so it is not pushed out to twice the window.
  // Never above the cap; 0 clears it.
  void setFirstWindowMs(int64_t window_ms) {
    first_window_ms_ = std::clamp<int64_t>(window_ms, 0, cap_ms_);
  }
  int attempts() const { return attempt_; }

 private:
  int64_t base_ms_;
  int64_t cap_ms_;
  int64_t first_window_ms_ = 0;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace muster::common
