// The agent's identity in its state dir: agent id and credential (mode 0600).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace muster::agent {

struct Identity {
  std::string agent_id;
  std::string credential;
};

// Missing file: nullopt. A corrupt or wrongly-permissioned file is an error.
absl::StatusOr<std::optional<Identity>> loadIdentity(const std::string& state_dir);
absl::Status saveIdentity(const std::string& state_dir, const Identity& identity);

// The id to use: --id if given, else the machine id. Errors say how to fix it.
absl::StatusOr<std::string> chooseAgentId(const std::string& flag_id);

}  // namespace muster::agent
