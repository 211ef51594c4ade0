// Durable file helpers: atomic replace with fsync, directory fsync, whole-file reads.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace muster::common {

// Writes `data` to `path` via a temporary file, fsync, rename and directory fsync, so a
// crash leaves either the old or the new content. `mode` applies to the new file.
absl::Status writeFileAtomic(const std::string& path, std::string_view data, int mode = 0644);
absl::StatusOr<std::string> readFile(const std::string& path);
absl::Status fsyncDir(const std::string& dir);
// mkdir -p with `mode` for the directories it creates.
absl::Status makeDirs(const std::string& dir, int mode = 0755);
bool fileExists(const std::string& path);

}  // namespace muster::common
