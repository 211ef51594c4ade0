// Parsing and printing of operator durations.
#include "common/duration.h"

#include <cctype>

#include "absl/strings/str_cat.h"

namespace muster::common {

absl::StatusOr<int64_t> parseDurationMs(std::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid duration '", std::string(text),
                     "': use a number with a unit, like 30s, 5m, 24h or 1h30m"));
  };
  if (text.empty()) return bad();
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return bad();
    int64_t value = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      value = value * 10 + (text[i] - '0');
      if (value > 1'000'000'000'000) return bad();
      ++i;
    }
    size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t scale;
    if (unit == "ms")
      scale = 1;
    else if (unit == "s")
      scale = 1000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "h")
      scale = 3'600'000;
    else if (unit == "d")
      scale = 86'400'000;
    else
      return bad();
    total += value * scale;
  }
  return total;
}

std::string formatDurationMs(int64_t ms) {
  if (ms < 1000) return absl::StrCat(ms, "ms");
  if (ms < 60'000) {
    if (ms % 1000 == 0) return absl::StrCat(ms / 1000, "s");
    return absl::StrCat(ms / 1000, ".", (ms % 1000) / 100, "s");
  }
  int64_t s = ms / 1000;
  std::string out;
  if (s >= 3600) absl::StrAppend(&out, s / 3600, "h");
  if (s % 3600 >= 60) absl::StrAppend(&out, (s % 3600) / 60, "m");
  if (s % 60) absl::StrAppend(&out, s % 60, "s");
  return out;
}

}  // namespace muster::common
