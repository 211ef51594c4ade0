// Operator-facing byte sizes: "4GiB", "500MB", "1048576", "64k".
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace muster::common {

// A number with an optional unit: B, k/K/KB (1000), KiB (1024), M/MB, MiB, G/GB, GiB, T/TB,
// TiB. Malformed or over 2^62: InvalidArgument naming `what`.
absl::StatusOr<uint64_t> parseByteSize(std::string_view what, std::string_view text);

}  // namespace muster::common
