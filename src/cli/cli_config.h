// Where the CLI finds its server and token: flags, then MUSTER_SERVER / MUSTER_TOKEN, then
// ~/.config/muster/config.toml (keys `server` and `token`).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "cli/http_client.h"

namespace muster::cli {

inline constexpr char kDefaultServer[] = "https://127.0.0.1:7080";

struct GlobalFlags {
  std::string server;
  std::string token;
  std::string token_file;           // --token-file: the token read from a file (not in `ps`)
  std::string config_path;          // empty: $XDG_CONFIG_HOME/muster/config.toml or ~/.config/...
  std::string ca_file;              // --ca, then MUSTER_CA, then `ca` in the config file
  bool insecure_plaintext = false;  // http:// URLs only with this (or MUSTER_INSECURE_PLAINTEXT=1)
};

// Resolves the server URL (adding https:// when no scheme is given), the CA and the token.
// An http:// URL is refused unless insecure_plaintext: the token would cross in the clear.
absl::StatusOr<ClientConfig> resolveClientConfig(const GlobalFlags& flags);

std::string defaultConfigPath();

}  // namespace muster::cli
