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

  // Delay before the next attempt: uniform in [0, min(cap, base * 2^attempt)].
  int64_t nextDelayMs() {
    int64_t ceiling = cap_ms_;
    if (attempt_ < 40) ceiling = std::min(cap_ms_, base_ms_ << attempt_);
    ++attempt_;
    std::uniform_int_distribution<int64_t> dist(0, std::max<int64_t>(ceiling, 0));
    return dist(rng_);
  }
  // Upper bound of the next delay (tests and logs).
  int64_t ceilingMs() const {
    return attempt_ < 40 ? std::min(cap_ms_, base_ms_ << attempt_) : cap_ms_;
  }
  void reset() { attempt_ = 0; }
  // A new base for the first window (the server's reconnect hint); never above the cap.
  void setBaseMs(int64_t base_ms) { base_ms_ = std::clamp<int64_t>(base_ms, 1, cap_ms_); }
  int64_t baseMs() const { return base_ms_; }
  int attempts() const { return attempt_; }

 private:
  int64_t base_ms_;
  int64_t cap_ms_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace muster::common
