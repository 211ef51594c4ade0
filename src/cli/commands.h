// The `muster` subcommands. Each register* function adds its subcommands to the app and a
// runner per leaf; app.cc runs the runner of the subcommand that was parsed.
#pragma once

#include <functional>
#include <vector>

#include "cli/http_client.h"

namespace CLI {
class App;
}

namespace muster::cli {

struct Runner {
  CLI::App* command = nullptr;
  std::function<int(const ClientConfig&)> run;
};

void registerHostCommands(CLI::App& app, std::vector<Runner>* runners);
void registerCommandCommands(CLI::App& app, std::vector<Runner>* runners);
// `run` (and `run show`).
void registerRunCommands(CLI::App& app, std::vector<Runner>* runners);
void registerTokenCommands(CLI::App& app, std::vector<Runner>* runners);
// `events` (the audit log).
void registerEventCommands(CLI::App& app, std::vector<Runner>* runners);

}  // namespace muster::cli
