// Operator-facing durations: "30s", "5m", "24h", "1h30m", "250ms", "7d", and their limits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace muster::common {

inline constexpr int64_t kSecondMs = 1000;
inline constexpr int64_t kMinuteMs = 60 * kSecondMs;
inline constexpr int64_t kHourMs = 60 * kMinuteMs;
inline constexpr int64_t kDayMs = 24 * kHourMs;

// No duration Muster takes is longer. It keeps `now_ms + duration` far from int64 overflow
// for the next few thousand years, whatever a request or a flag says.
inline constexpr int64_t kMaxDurationMs = 36'500 * kDayMs;  // 100 years

// The documented ceilings (docs/api.md "Limits"). The agent link carries a command's timeout
// and kill grace as uint32 milliseconds (at most 49.7 days): both stay well below.
inline constexpr int64_t kMaxCommandTimeoutMs = 7 * kDayMs;
inline constexpr int64_t kMaxKillGraceMs = kHourMs;
inline constexpr int64_t kMaxExpiryMs = 365 * kDayMs;
inline constexpr int64_t kMaxTokenTtlMs = 3650 * kDayMs;

// A sum of <number><unit> terms (units ms, s, m, h, d). Malformed: InvalidArgument; more
// than kMaxDurationMs: OutOfRange. Never overflows.
absl::StatusOr<int64_t> parseDurationMs(std::string_view text);
std::string formatDurationMs(int64_t ms);

// OK when min_ms <= ms <= max_ms; otherwise an InvalidArgument naming `what`, the value and
// the allowed range (`what` is the flag or field, like "--ttl" or "\"timeout_ms\"").
absl::Status checkDurationRange(std::string_view what, int64_t ms, int64_t min_ms, int64_t max_ms);
// parseDurationMs, then checkDurationRange.
absl::StatusOr<int64_t> parseDurationMsInRange(std::string_view what, std::string_view text,
                                               int64_t min_ms, int64_t max_ms);

}  // namespace muster::common
