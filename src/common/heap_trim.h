// Giving the allocator's free pages back after a burst of connections.
//
// Every TLS handshake leaves short-lived buffers (certificates, key shares, handshake
// messages) between the connection's long-lived state; once a burst of thousands settles,
// glibc holds the freed pages in the holes. HeapTrimPolicy says when a trim is worth it: a
// burst of at least `min_streams` streams since the last trim, followed by a quiet window with
// no new stream; or, under steady churn that is never quiet, every `max_streams`.
#pragma once

#include <cstdint>

namespace muster::common {

class HeapTrimPolicy {
 public:
  struct Options {
    int64_t window_ms = 5000;  // how often the count is looked at; one quiet window ends a burst
    uint64_t min_streams = 500;
    uint64_t max_streams = 20000;
  };
  HeapTrimPolicy() : HeapTrimPolicy(Options{}) {}
  explicit HeapTrimPolicy(Options o) : o_(o) {}

  // `opened`: streams opened since start (monotonic). True when the caller should trim now.
  bool due(uint64_t opened, int64_t now_ms);

 private:
  Options o_;
  int64_t next_look_ms_ = 0;
  bool started_ = false;
  uint64_t seen_ = 0;     // the count at the last look
  uint64_t trimmed_ = 0;  // the count at the last trim
};

// malloc_trim(0) where glibc has it (a no-op elsewhere); returns the milliseconds it took.
double trimHeap();

}  // namespace muster::common
