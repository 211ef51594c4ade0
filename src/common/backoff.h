// Exponential backoff with jitter, so a restarted server is not stampeded.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace muster::common {

class Backoff {
 public:
  Backoff(int64_t base_ms, int64_t cap_ms, uint64_t seed = std::random_device{}())
      : base_ms_(base_ms), cap_ms_(cap_ms), rng_(seed) {}

  // Delay before the next attempt. The first attempt after a lost link is uniform in
  // [0, ceilingMs()] (full jitter: a fleet that lost the server at the same instant spreads
  // over the whole window); every retry after a failed attempt is uniform in
  // [ceilingMs() / 2, ceilingMs()], so no agent ever retries sooner than half its backoff
  // (500 ms, 1 s, 2 s, ... with the 1 s base) and the floor can be checked from outside.
  int64_t nextDelayMs() {
    int64_t ceiling = std::max<int64_t>(ceilingMs(), 0);
    int64_t floor = minDelayMs();
    ++attempt_;
    std::uniform_int_distribution<int64_t> dist(floor, ceiling);
    return dist(rng_);
  }
  // The shortest delay the next attempt can get.
  int64_t minDelayMs() const { return attempt_ == 0 ? 0 : std::max<int64_t>(ceilingMs(), 0) / 2; }
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
