// Logging set-up shared by the binaries: text or JSON lines on stderr.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"

namespace muster::common {

// format: "text" or "json"; level: trace|debug|info|warn|error.
absl::Status setupLogging(const std::string& format, const std::string& level);

// `text` escaped for use inside a JSON string (quotes, backslashes, control characters).
std::string jsonEscape(std::string_view text);

// An impossible state: logged loudly and counted; aborts in debug builds.
void reportBug(const char* file, int line, const std::string& what);
uint64_t bugCount();

// Lets one line through per interval (10 s by default) and counts the ones it holds back, so
// a flood of refusals cannot flood the log; the next line says how many were held back:
//
//   uint64_t skipped = 0;
//   if (refusals_log_.allow(&skipped)) spdlog::warn("... ({} more since the last)", skipped);
//
// Thread-safe; one instance per limit.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(int64_t interval_ms = 10'000) : interval_ms_(interval_ms) {}
  // `now_ms`: any monotonic clock; the overload without it reads the steady clock.
  bool allow(int64_t now_ms, uint64_t* suppressed);
  bool allow(uint64_t* suppressed);

 private:
  const int64_t interval_ms_;
  std::mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  int64_t last_ms_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace muster::common

#define MUSTER_BUG(what) ::muster::common::reportBug(__FILE__, __LINE__, (what))
