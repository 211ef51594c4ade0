// Identity persistence.
#include "agent/identity.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/system_info.h"
#include "common/fs.h"
#include "common/ids.h"

namespace muster::agent {

absl::StatusOr<std::optional<Identity>> loadIdentity(const std::string& state_dir) {
  std::string path = state_dir + "/credential";
  if (!common::fileExists(path)) return std::optional<Identity>();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    ::chmod(path.c_str(), 0600);
  }
  auto raw = common::readFile(path);
  if (!raw.ok()) return raw.status();
  std::vector<std::string> lines = absl::StrSplit(*raw, '\n', absl::SkipEmpty());
  if (lines.size() < 2 || !common::isValidAgentId(lines[0]) || lines[1].empty()) {
    return absl::DataLossError(absl::StrCat(
        path, " is corrupt: remove it and restart the agent with --enroll-token to enroll again"));
  }
  return std::optional<Identity>(Identity{lines[0], lines[1]});
}

absl::Status saveIdentity(const std::string& state_dir, const Identity& identity) {
  return common::writeFileAtomic(state_dir + "/credential",
                                 identity.agent_id + "\n" + identity.credential + "\n", 0600);
}

absl::StatusOr<std::string> chooseAgentId(const std::string& flag_id) {
  std::string id = flag_id.empty() ? machineId() : flag_id;
  if (id.empty()) {
    return absl::FailedPreconditionError(
        "no agent id: /etc/machine-id is missing; pass --id NAME ([A-Za-z0-9._-]{1,128})");
  }
  if (!common::isValidAgentId(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid agent id '", id.substr(0, 140), "': use [A-Za-z0-9._-]{1,128}"));
  }
  return id;
}

}  // namespace muster::agent
