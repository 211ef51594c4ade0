// Parsing, printing and range checks of operator durations.
#include "common/duration.h"

#include <cctype>

#include "absl/strings/str_cat.h"

namespace muster::common {

absl::StatusOr<int64_t> parseDurationMs(std::string_view text) {
  // Echo at most this much of what was given: the text may be a megabyte of digits.
  std::string shown(text.substr(0, 64));
  if (text.size() > 64) shown += "...";
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid duration '", shown, "': use a number with a unit, like 30s, 5m, 24h or 1h30m"));
  };
  auto too_long = [&] {
    return absl::OutOfRangeError(absl::StrCat("duration '", shown, "' is too long: at most ",
                                              formatDurationMs(kMaxDurationMs)));
  };
  if (text.empty()) return bad();
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return bad();
    // Digits past the limit still have to be a well-formed duration to get the "too long"
    // message rather than "invalid".
    bool over = false;
    int64_t value = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (!over) {
        value = value * 10 + (text[i] - '0');
        over = value > kMaxDurationMs;
      }
      ++i;
    }
    size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t scale;
    if (unit == "ms")
      scale = 1;
    else if (unit == "s")
      scale = kSecondMs;
    else if (unit == "m")
      scale = kMinuteMs;
    else if (unit == "h")
      scale = kHourMs;
    else if (unit == "d")
      scale = kDayMs;
    else
      return bad();
    // value <= kMaxDurationMs < 2^42 here, so the division cannot be fooled by a wrap.
    if (over || value > (kMaxDurationMs - total) / scale) over = true;
    if (over) {
      // Keep checking the syntax of what follows, then say it is too long.
      while (i < text.size()) {
        if (!std::isalnum(static_cast<unsigned char>(text[i]))) return bad();
        ++i;
      }
      return too_long();
    }
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
  if (s >= 86'400 && s % 86'400 == 0) return absl::StrCat(s / 86'400, "d");
  if (s >= 3600) absl::StrAppend(&out, s / 3600, "h");
  if (s % 3600 >= 60) absl::StrAppend(&out, (s % 3600) / 60, "m");
  if (s % 60) absl::StrAppend(&out, s % 60, "s");
  return out;
}

absl::Status checkDurationRange(std::string_view what, int64_t ms, int64_t min_ms, int64_t max_ms) {
  if (ms >= min_ms && ms <= max_ms) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), " is ", ms, " ms (",
                   ms < 0 ? "negative" : formatDurationMs(ms), "): allowed ", min_ms, "..", max_ms,
                   " ms (", formatDurationMs(min_ms), " to ", formatDurationMs(max_ms), ")"));
}

absl::StatusOr<int64_t> parseDurationMsInRange(std::string_view what, std::string_view text,
                                               int64_t min_ms, int64_t max_ms) {
  auto ms = parseDurationMs(text);
  if (!ms.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", ms.status().message(),
                                                   " (allowed ", formatDurationMs(min_ms), " to ",
                                                   formatDurationMs(max_ms), ")"));
  }
  if (auto st = checkDurationRange(what, *ms, min_ms, max_ms); !st.ok()) return st;
  return ms;
}

}  // namespace muster::common
