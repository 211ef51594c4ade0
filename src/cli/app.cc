// The `muster` command line: global flags, subcommands, usage errors (exit 2).
#include "cli/app.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/cli_config.h"
#include "cli/commands.h"
#include "cli/format.h"

namespace muster::cli {

int runMuster(int argc, char** argv) {
  CLI::App app{"muster: operate a Muster fleet (hosts, commands, tokens) over the REST API"};
  app.require_subcommand(1);
  GlobalFlags flags;
  app.add_option("--server", flags.server,
                 "musterd HTTP URL (default: $MUSTER_SERVER, config file, then " +
                     std::string(kDefaultServer) + ")");
  app.add_option("--token", flags.token,
                 "API token (default: $MUSTER_TOKEN, then config file); visible in `ps`: prefer "
                 "--token-file or MUSTER_TOKEN");
  app.add_option("--token-file", flags.token_file, "read the API token from this file");
  app.add_option("--ca", flags.ca_file,
                 "CA that signed musterd's certificate (default: $MUSTER_CA, config `ca`, then "
                 "the system's CAs); musterd's own CA is DATA/tls/ca.crt");
  app.add_flag("--insecure-plaintext", flags.insecure_plaintext,
               "allow an http:// server URL (musterd --insecure-plaintext): the token crosses "
               "in the clear");
  app.add_option("--config", flags.config_path,
                 "config file with `server` and `token` (default ~/.config/muster/config.toml)");

  std::vector<Runner> runners;
  registerHostCommands(app, &runners);
  registerCommandCommands(app, &runners);
  registerRunCommands(app, &runners);
  registerTokenCommands(app, &runners);
  registerEventCommands(app, &runners);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }

  // Runners are registered children first, so the most specific parsed one wins.
  for (const auto& runner : runners) {
    if (!runner.command->parsed()) continue;
    auto config = resolveClientConfig(flags);
    if (!config.ok()) return reportError(config.status());
    return runner.run(*config);
  }
  std::cerr << app.help();
  return kExitUsage;
}

}  // namespace muster::cli
