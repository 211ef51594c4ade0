// JSON text for the string maps (labels, facts, env) and string lists (argv) kept in columns.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/host.h"

namespace muster::store::sqlite {

// Quotes, backslashes and control characters are escaped; other bytes (UTF-8 or not) are
// copied as they are, so any byte string round-trips through encode and decode.
std::string encodeStringList(const std::vector<std::string>& values);
std::string encodeStringMap(const model::StringMap& values);

absl::StatusOr<std::vector<std::string>> decodeStringList(std::string_view text);
absl::StatusOr<model::StringMap> decodeStringMap(std::string_view text);

}  // namespace muster::store::sqlite
