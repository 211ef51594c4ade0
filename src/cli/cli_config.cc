// Resolution of the CLI's server URL and token.
#include "cli/cli_config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace muster::cli {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

std::string defaultConfigPath() {
  std::string xdg = env("XDG_CONFIG_HOME");
  if (!xdg.empty()) return xdg + "/muster/config.toml";
  std::string home = env("HOME");
  if (home.empty()) return "";
  return home + "/.config/muster/config.toml";
}

absl::StatusOr<ClientConfig> resolveClientConfig(const GlobalFlags& flags) {
  ClientConfig config{flags.server, flags.token, flags.ca_file};
  if (!flags.token_file.empty()) {
    if (!flags.token.empty()) {
      return absl::InvalidArgumentError("give --token or --token-file, not both");
    }
    std::ifstream in(flags.token_file);
    if (!in || !std::getline(in, config.token) || config.token.empty()) {
      return absl::NotFoundError(absl::StrCat("--token-file ", flags.token_file,
                                              ": cannot read a token from it (one line)"));
    }
    while (!config.token.empty() && (config.token.back() == '\r' || config.token.back() == ' ')) {
      config.token.pop_back();
    }
  }
  if (config.server.empty()) config.server = env("MUSTER_SERVER");
  if (config.token.empty()) config.token = env("MUSTER_TOKEN");
  if (config.ca_file.empty()) config.ca_file = env("MUSTER_CA");
  bool insecure = flags.insecure_plaintext || env("MUSTER_INSECURE_PLAINTEXT") == "1";

  std::string path = flags.config_path.empty() ? defaultConfigPath() : flags.config_path;
  if ((config.server.empty() || config.token.empty() || config.ca_file.empty()) && !path.empty()) {
    std::error_code ec;
    bool exists = std::filesystem::exists(path, ec);
    if (!exists && !flags.config_path.empty()) {
      return absl::NotFoundError(absl::StrCat("config file ", path, " does not exist"));
    }
    if (exists) {
      try {
        toml::table table = toml::parse_file(path);
        if (config.server.empty()) config.server = table["server"].value_or(std::string());
        if (config.token.empty()) config.token = table["token"].value_or(std::string());
        if (config.ca_file.empty()) config.ca_file = table["ca"].value_or(std::string());
      } catch (const toml::parse_error& e) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot read ", path, ": ", std::string(e.description()), " at line ",
                         e.source().begin.line, "; fix the file or pass --server and --token"));
      }
    }
  }
  if (config.server.empty()) config.server = kDefaultServer;
  if (!absl::StrContains(config.server, "://")) config.server = "https://" + config.server;
  while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
  if (absl::StartsWith(config.server, "http://") && !insecure) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.server,
        " is plaintext: the API token would cross the network in the clear. "
        "Use https:// (musterd's default), or pass --insecure-plaintext if musterd runs with "
        "--insecure-plaintext on purpose"));
  }
  if (!config.ca_file.empty() && ::access(config.ca_file.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("CA file ", config.ca_file,
                                            " cannot be read (--ca, MUSTER_CA or `ca` in ",
                                            path.empty() ? std::string("the config") : path, ")"));
  }
  if (config.token.empty()) {
    return absl::UnauthenticatedError(
        "no API token: pass --token, set MUSTER_TOKEN, or put token = \"...\" in " +
        (path.empty() ? std::string("~/.config/muster/config.toml") : path) +
        " (musterd writes the admin token to <data-dir>/admin.token)");
  }
  return config;
}

}  // namespace muster::cli
