// Lets spdlog/fmt format absl::string_view (Debian's abseil has its own string_view type,
// so absl::Status::message() is not a std::string_view).
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "absl/strings/string_view.h"

#if !defined(ABSL_USES_STD_STRING_VIEW)
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  template <typename Context>
  auto format(absl::string_view s, Context& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};
#endif

namespace muster::common {
// A std::string_view as Abseil's (absl::StrCat and friends take only the latter here).
inline absl::string_view sv(std::string_view s) { return {s.data(), s.size()}; }
}  // namespace muster::common
