// Operator-facing durations: "30s", "5m", "24h", "1h30m", "250ms", "7d".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace muster::common {

absl::StatusOr<int64_t> parseDurationMs(std::string_view text);
std::string formatDurationMs(int64_t ms);

}  // namespace muster::common
