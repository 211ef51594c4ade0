// CommandService: start-up and the queries; the lifecycle is spread over one file per concept
// (see command_service.h).
#include "server/core/command_service.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"

namespace muster::server {

CommandService::CommandService(store::Store& store, HostRegistry& hosts, OutputBus& bus,
                               common::Executor& slow_path, const common::Clock& clock,
                               const CoreConfig& config)
    : store_(store),
      hosts_(hosts),
      bus_(bus),
      slow_path_(slow_path),
      clock_(clock),
      config_(config) {}

absl::Status CommandService::load() {
  completeInterruptedRuns();
  auto open = store_.loadOpenCommands();
  if (!open.ok()) return open.status();
  const size_t n = open->size();
  open_.add(*std::move(open));
  spdlog::info("{} open commands loaded", n);
  return absl::OkStatus();
}

size_t CommandService::openCount() const { return open_.size(); }

std::array<uint64_t, 8> CommandService::openByState() const { return open_.countByState(); }

absl::StatusOr<model::Command> CommandService::get(const std::string& id) {
  if (auto open = open_.get(id)) return *std::move(open);
  auto stored = store_.getCommand(id);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) {
    return absl::NotFoundError(absl::StrCat("no command with id '", id.substr(0, 140), "'"));
  }
  return **stored;
}

absl::StatusOr<std::vector<model::Command>> CommandService::list(
    const store::CommandFilter& filter) {
  auto page = store_.listCommands(filter);
  if (!page.ok()) return page.status();
  open_.refresh(*page);  // memory is ahead of the store
  return page;
}

}  // namespace muster::server
