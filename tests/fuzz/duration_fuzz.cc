// Fuzz target: operator durations (common::parseDurationMs: "30s", "1h30m", request fields
// like "timeout", flags like --heartbeat-interval), their range checks and printed form.
#include <cstring>

#include "common/duration.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace muster::common;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ms = parseDurationMs(text);
  if (ms.ok()) {
    // Only digits and units: never negative, never wrapped, never past the ceiling.
    MUSTER_FUZZ_CHECK(*ms >= 0 && *ms <= kMaxDurationMs);
    std::string printed = formatDurationMs(*ms);
    // Printed durations of whole seconds (and anything under a second) read back the same;
    // above a minute the milliseconds are dropped on purpose.
    if (printed.find('.') == std::string::npos) {
      auto back = parseDurationMs(printed);
      MUSTER_FUZZ_CHECK(back.ok());
      MUSTER_FUZZ_CHECK(*back == (*ms >= kMinuteMs ? *ms - *ms % kSecondMs : *ms));
    }
  } else {
    MUSTER_FUZZ_CHECK(absl::IsInvalidArgument(ms.status()) || absl::IsOutOfRange(ms.status()));
    MUSTER_FUZZ_CHECK(ms.status().message().size() < 512);  // the input is not echoed whole
  }
  auto ranged = parseDurationMsInRange("--fuzz", text, kSecondMs, kMaxCommandTimeoutMs);
  if (ranged.ok()) MUSTER_FUZZ_CHECK(*ranged >= kSecondMs && *ranged <= kMaxCommandTimeoutMs);
  // Any value prints and is range-checked, including those no parse produces.
  if (size >= 8) {
    int64_t raw;
    std::memcpy(&raw, data, 8);
    MUSTER_FUZZ_CHECK(!formatDurationMs(raw).empty());
    (void)checkDurationRange("fuzz", raw, 0, kMaxExpiryMs);
  }
  return 0;
}
