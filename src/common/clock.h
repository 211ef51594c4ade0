// Time source for every deadline, heartbeat, TTL and backoff; injectable for tests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace muster::common {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall time, Unix epoch milliseconds (persisted, shown to operators).
  virtual int64_t nowMs() const = 0;
  // Monotonic milliseconds (deadlines); never goes back.
  virtual int64_t steadyMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t nowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t steadyMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t nowMs() const override { return now_.load(); }
  int64_t steadyMs() const override { return now_.load(); }
  void advanceMs(int64_t ms) { now_ += ms; }
  void setMs(int64_t ms) { now_ = ms; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace muster::common
