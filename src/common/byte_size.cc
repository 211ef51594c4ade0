// Byte sizes for flags and API fields.
#include "common/byte_size.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace muster::common {

absl::StatusOr<uint64_t> parseByteSize(std::string_view what, std::string_view text) {
  absl::string_view stripped =
      absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  std::string_view t(stripped.data(), stripped.size());
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(what.data(), what.size()), ": '",
                     absl::string_view(text.data(), std::min<size_t>(text.size(), 64)),
                     "' is not a size (a number with an optional unit: ",
                     "B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"));
  };
  uint64_t n = 0;
  if (digits == 0 || digits > 18 || !absl::SimpleAtoi(absl::string_view(t.data(), digits), &n)) {
    return bad();
  }
  std::string unit = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(t.data() + digits, t.size() - digits)));
  uint64_t mult = 0;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kb") {
    mult = 1000;
  } else if (unit == "kib") {
    mult = 1ull << 10;
  } else if (unit == "m" || unit == "mb") {
    mult = 1000'000;
  } else if (unit == "mib") {
    mult = 1ull << 20;
  } else if (unit == "g" || unit == "gb") {
    mult = 1000'000'000;
  } else if (unit == "gib") {
    mult = 1ull << 30;
  } else if (unit == "t" || unit == "tb") {
    mult = 1000'000'000'000ull;
  } else if (unit == "tib") {
    mult = 1ull << 40;
  } else {
    return bad();
  }
  if (n > (1ull << 62) / mult) return bad();
  return n * mult;
}

}  // namespace muster::common
