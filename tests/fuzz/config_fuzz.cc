// Fuzz target: configuration files. The first byte picks whose: the CLI's config.toml
// (toml++ through cli::resolveClientConfig, the real loader), or musterd's / muster-agent's
// --config file (CLI11's config reader behind app.set_config, with each binary's options and
// the checks its main() applies to the values).
//
// The two option tables below mirror apps/musterd/main.cc and apps/muster-agent/main.cc,
// which keep them inside main(); keep them in step (or move them into a library that both
// use).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <map>

#include "cli/cli_config.h"
#include "common/duration.h"
#include "common/ids.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using namespace muster;

std::string writeConfig(const std::string& name, std::string_view bytes) {
  std::string path = fuzz::scratchDir("config") + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// main() catches CLI::ParseError only: anything else CLI11 throws would kill the binary.
bool parseWithConfig(CLI::App& app, const char* binary, const std::string& path) {
  app.set_config("--config", "", "TOML file with any of the flags below (flag names as keys)");
  app.allow_config_extras(CLI::config_extras_mode::error);
  const char* argv[] = {binary, "--config", path.c_str()};
  try {
    app.parse(3, argv);
  } catch (const CLI::ParseError&) {
    return false;
  }
  return true;
}

void cliConfig(std::string_view bytes) {
  cli::GlobalFlags flags;
  flags.config_path = writeConfig("config.toml", bytes);
  auto config = cli::resolveClientConfig(flags);
  if (!config.ok()) {
    MUSTER_FUZZ_CHECK(absl::IsInvalidArgument(config.status()) ||
                      absl::IsUnauthenticated(config.status()));
    return;
  }
  MUSTER_FUZZ_CHECK(!config->token.empty());
  MUSTER_FUZZ_CHECK(config->server.find("://") != std::string::npos);
}

void musterdConfig(std::string_view bytes) {
  std::string data_dir = "./muster-data", http_listen = "127.0.0.1:7080";
  std::vector<std::string> grpc_listen = {"127.0.0.1:7443"};
  std::string heartbeat_interval = "10s", default_expiry = "24h";
  int64_t max_agents = 0, reconnect_rate = 1000;
  std::string log_format = "text", log_level = "info";
  bool allow_remote_plaintext = false;
  CLI::App app{"musterd: the Muster control plane"};
  app.add_option("--data-dir", data_dir)->capture_default_str();
  app.add_option("--http-listen", http_listen)->capture_default_str();
  app.add_option("--grpc-listen", grpc_listen)->capture_default_str();
  app.add_option("--heartbeat-interval", heartbeat_interval)->capture_default_str();
  app.add_option("--max-agents", max_agents);
  app.add_option("--reconnect-rate", reconnect_rate)
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--default-expiry", default_expiry)->capture_default_str();
  app.add_flag("--insecure-plaintext", allow_remote_plaintext);
  app.add_option("--log-format", log_format)->capture_default_str();
  app.add_option("--log-level", log_level)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->capture_default_str();
  if (!parseWithConfig(app, "musterd", writeConfig("musterd.toml", bytes))) return;
  // run()'s checks of the values.
  auto heartbeat = common::parseDurationMs(heartbeat_interval);
  auto expiry = common::parseDurationMs(default_expiry);
  if (!heartbeat.ok() || !expiry.ok() || *heartbeat < 100) return;
  MUSTER_FUZZ_CHECK(reconnect_rate >= 1 && reconnect_rate <= 1'000'000);
  for (const auto& listen : grpc_listen) (void)listen.rfind("127.", 0);
}

void agentConfig(std::string_view bytes) {
  std::string server = "127.0.0.1:7443", state_dir = "/var/lib/muster-agent", enroll_token, id;
  std::vector<std::string> labels;
  std::string max_output = "16777216", shutdown_grace = "10s", log_format = "text",
              log_level = "info", backoff_cap = "60s";
  CLI::App app{"muster-agent: runs Muster commands on this host"};
  app.add_option("--server", server)->capture_default_str();
  app.add_option("--state-dir", state_dir)->capture_default_str();
  app.add_option("--enroll-token", enroll_token);
  app.add_option("--id", id);
  app.add_option("--label", labels);
  app.add_option("--max-output-bytes", max_output)->capture_default_str();
  app.add_option("--shutdown-grace", shutdown_grace)->capture_default_str();
  app.add_option("--backoff-cap", backoff_cap)->capture_default_str();
  app.add_option("--log-format", log_format)->capture_default_str();
  app.add_option("--log-level", log_level)->capture_default_str();
  if (!parseWithConfig(app, "muster-agent", writeConfig("agent.toml", bytes))) return;
  // main()'s checks of the values: labels as k=v, durations, the output cap.
  std::map<std::string, std::string> accepted;
  for (const auto& label : labels) {
    auto eq = label.find('=');
    std::string key = label.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : label.substr(eq + 1);
    if (eq == std::string::npos || !common::isValidLabelKey(key) ||
        !common::isValidLabelValue(value)) {
      return;
    }
    accepted[key] = value;
  }
  auto grace = common::parseDurationMs(shutdown_grace);
  auto cap_ms = common::parseDurationMs(backoff_cap);
  if (!cap_ms.ok() || *cap_ms < 100) return;
  char* end = nullptr;
  unsigned long long cap = std::strtoull(max_output.c_str(), &end, 10);
  if (!grace.ok() || end == max_output.c_str() || *end != '\0' || cap < 1024) return;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool once = [] {
    ::unsetenv("MUSTER_SERVER");  // the file must be what resolveClientConfig reads
    ::unsetenv("MUSTER_TOKEN");
    return true;
  }();
  (void)once;
  fuzz::FuzzInput in(data, size);
  uint8_t which = in.byte();
  std::string_view bytes = in.rest();
  switch (which % 3) {
    case 0: cliConfig(bytes); break;
    case 1: musterdConfig(bytes); break;
    default: agentConfig(bytes); break;
  }
  return 0;
}
