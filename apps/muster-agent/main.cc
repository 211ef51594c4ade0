// muster-agent: wiring only. Parses flags (or a TOML config), runs the agent until
// SIGINT/SIGTERM, then lets it drain.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <iostream>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "agent/agent.h"
#include "common/duration.h"
#include "common/fmt_absl.h"
#include "common/fs.h"
#include "common/ids.h"
#include "common/log.h"

int main(int argc, char** argv) {
  using namespace muster;
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app{"muster-agent: runs Muster commands on this host"};
  app.set_config("--config", "", "TOML file with any of the flags below (flag names as keys)");
  app.allow_config_extras(CLI::config_extras_mode::error);
  agent::AgentConfig config;
  std::vector<std::string> labels;
  std::string max_output = "16777216", shutdown_grace = "10s", log_format = "text",
              log_level = "info", backoff_cap = "60s";
  app.add_option("--server", config.server, "musterd agent address HOST:PORT")
      ->capture_default_str();
  app.add_option("--state-dir", config.state_dir, "credential, journal and outbox")
      ->capture_default_str();
  std::string token_file;
  app.add_option("--enroll-token", config.enroll_token,
                 "token to enroll with (shows in ps: prefer --enroll-token-file or "
                 "MUSTER_ENROLL_TOKEN)");
  app.add_option("--enroll-token-file", token_file, "file holding the enrollment token");
  app.add_flag("--insecure-plaintext", config.insecure_plaintext,
               "talk to musterd WITHOUT TLS (only if musterd runs with --insecure-plaintext)");
  app.add_option("--ca", config.ca_file,
                 "musterd's CA (PEM) instead of the one the enrollment token pins");
  app.add_flag("--rotate-credential", config.rotate_credential,
               "enrolled already: get a new credential (with --enroll-token), proving the old one");
  app.add_option("--id", config.id, "agent id (default: /etc/machine-id)");
  app.add_option("--label", labels, "k=v label of this host (repeatable)");
  app.add_option("--max-output-bytes", max_output, "output kept per command and stream")
      ->capture_default_str();
  app.add_option("--shutdown-grace", shutdown_grace,
                 "on SIGTERM, how long running commands may finish before they are killed")
      ->capture_default_str();
  app.add_option("--backoff-cap", backoff_cap,
                 "longest wait between reconnect attempts (full jitter below it)")
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "muster-agent: " << e.what() << "\nRun 'muster-agent --help' for the flags.\n";
    return 2;
  }
  if (!token_file.empty() && !config.enroll_token.empty()) {
    std::cerr << "muster-agent: give --enroll-token or --enroll-token-file, not both\n";
    return 2;
  }
  if (!token_file.empty()) {
    auto token = common::readFile(token_file);
    if (!token.ok()) {
      std::cerr << "muster-agent: --enroll-token-file " << token_file << ": "
                << token.status().message() << "\n";
      return 2;
    }
    config.enroll_token = *token;
  } else if (config.enroll_token.empty()) {
    if (const char* env = std::getenv("MUSTER_ENROLL_TOKEN"); env != nullptr) {
      config.enroll_token = env;
    }
  }
  if (config.insecure_plaintext && !config.ca_file.empty()) {
    std::cerr << "muster-agent: --insecure-plaintext turns TLS off: drop it or --ca\n";
    return 2;
  }
  for (const auto& label : labels) {
    auto eq = label.find('=');
    std::string key = label.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : label.substr(eq + 1);
    if (eq == std::string::npos || !common::isValidLabelKey(key) ||
        !common::isValidLabelValue(value)) {
      std::cerr << "muster-agent: invalid --label '" << label
                << "': use key=value, key of [A-Za-z0-9._/-]\n";
      return 2;
    }
    config.labels[key] = value;
  }
  // Ranges: a grace past an hour or a backoff cap past a day is a typo, and both feed
  // millisecond arithmetic that must not overflow.
  auto grace = common::parseDurationMsInRange("--shutdown-grace", shutdown_grace, 0, 3'600'000);
  if (!grace.ok()) {
    std::cerr << "muster-agent: " << grace.status().message() << "\n";
    return 2;
  }
  auto cap_ms = common::parseDurationMsInRange("--backoff-cap", backoff_cap, 100, 86'400'000);
  if (!cap_ms.ok()) {
    std::cerr << "muster-agent: " << cap_ms.status().message() << "\n";
    return 2;
  }
  config.backoff_cap_ms = *cap_ms;
  config.backoff_base_ms = std::min<int64_t>(config.backoff_base_ms, *cap_ms);
  char* end = nullptr;
  errno = 0;
  unsigned long long cap = std::strtoull(max_output.c_str(), &end, 10);
  if (end == max_output.c_str() || *end != '\0' || errno == ERANGE || cap < 1024 ||
      cap > (1ull << 40) || max_output[0] == '-') {
    std::cerr << "muster-agent: invalid --max-output-bytes '" << max_output
              << "': use a byte count from 1024 to 1099511627776\n";
    return 2;
  }
  config.shutdown_grace_ms = *grace;
  config.max_output_bytes = cap;
  if (auto st = common::setupLogging(log_format, log_level); !st.ok()) {
    std::cerr << "muster-agent: " << st.message() << "\n";
    return 2;
  }

  auto created = agent::Agent::create(config, common::SystemClock::instance());
  if (!created.ok()) {
    spdlog::error("{}", created.status().message());
    return 1;
  }
  auto& agent = **created;
  absl::Status result;
  std::thread runner([&] {
    result = agent.run();
    // Wake the signal wait if run() ended by itself (e.g. enrollment refused).
    kill(getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&signals, &sig);
  agent.requestStop();
  runner.join();
  if (!result.ok()) {
    spdlog::error("{}", result.message());
    return 1;
  }
  return 0;
}
