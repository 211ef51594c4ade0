// Logging set-up shared by the binaries: text or JSON lines on stderr.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace muster::common {

// format: "text" or "json"; level: trace|debug|info|warn|error.
absl::Status setupLogging(const std::string& format, const std::string& level);

// `text` escaped for use inside a JSON string (quotes, backslashes, control characters).
std::string jsonEscape(std::string_view text);

// An impossible state: logged loudly and counted; aborts in debug builds.
void reportBug(const char* file, int line, const std::string& what);
uint64_t bugCount();

}  // namespace muster::common

#define MUSTER_BUG(what) ::muster::common::reportBug(__FILE__, __LINE__, (what))
