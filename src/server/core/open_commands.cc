// OpenCommands: the in-memory table of open commands and its transitions.
#include "server/core/open_commands.h"

namespace muster::server {

OpenCommands::Applied OpenCommands::Tx::apply(const std::string& id, CommandEvent event,
                                              const EventInput& in, std::string_view agent_id) {
  return applyFirst(id, {event}, in, agent_id);
}

OpenCommands::Applied OpenCommands::Tx::applyFirst(const std::string& id,
                                                   std::initializer_list<CommandEvent> events,
                                                   const EventInput& in,
                                                   std::string_view agent_id) {
  Applied out;
  auto it = table_.open_.find(id);
  if (it == table_.open_.end()) return out;
  model::Command& c = it->second.command;
  out.from = c.state;
  if (!agent_id.empty() && c.host_id != agent_id) {
    out.outcome = Outcome::kOtherHost;
    return out;
  }
  for (CommandEvent event : events) {
    const CommandTransition* row = transition(c, event, in);
    if (row == nullptr) continue;
    out.outcome = Outcome::kApplied;
    out.event = event;
    out.action = row->action;
    if (event != CommandEvent::kDispatch) out.only_if = storeGuard(event);
    if (model::isTerminal(c.state)) {
      // Leaves the table now: moved out, not copied (this runs once per result).
      out.command = std::move(c);
      table_.removeLocked(it, out.command.host_id);
    } else {
      out.command = c;
    }
    return out;
  }
  out.outcome = Outcome::kNotAccepted;
  return out;
}

const model::Command* OpenCommands::Tx::find(const std::string& id) const {
  auto it = table_.open_.find(id);
  return it == table_.open_.end() ? nullptr : &it->second.command;
}

uint64_t OpenCommands::Tx::countOutput(const std::string& id, uint64_t bytes) {
  auto it = table_.open_.find(id);
  if (it == table_.open_.end()) return 0;
  return it->second.received_bytes += bytes;
}

std::vector<std::string> OpenCommands::Tx::idsOfHost(const std::string& host_id) const {
  auto it = table_.by_host_.find(host_id);
  if (it == table_.by_host_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<std::string> OpenCommands::Tx::idsOfRun(const std::string& run_id) const {
  std::vector<std::string> ids;
  for (const auto& [id, entry] : table_.open_) {
    if (entry.command.run_id == run_id) ids.push_back(id);
  }
  return ids;
}

OpenCommands::Applied OpenCommands::apply(const std::string& id, CommandEvent event,
                                          const EventInput& in, std::string_view agent_id) {
  return with([&](Tx& tx) { return tx.apply(id, event, in, agent_id); });
}

OpenCommands::Applied OpenCommands::applyFirst(const std::string& id,
                                               std::initializer_list<CommandEvent> events,
                                               const EventInput& in, std::string_view agent_id) {
  return with([&](Tx& tx) { return tx.applyFirst(id, events, in, agent_id); });
}

void OpenCommands::add(const model::Command* first, const model::Command* last) {
  std::lock_guard lock(mu_);
  for (const model::Command* c = first; c != last; ++c) addLocked(*c);
}

void OpenCommands::add(std::vector<model::Command> commands) {
  std::lock_guard lock(mu_);
  for (auto& c : commands) addLocked(std::move(c));
}

void OpenCommands::reopen(model::Command command, model::CommandState from) {
  std::lock_guard lock(mu_);
  // Ended in the store already (a late agent result replacing a server-side timeout):
  // nothing is open, the agent resends its result.
  if (open_.count(command.id) || model::isTerminal(from)) return;
  command.state = from;
  command.finished_at_ms = 0;
  command.exit_code.reset();
  command.signal = 0;
  command.error.clear();
  command.result_source = model::ResultSource::kNone;
  command.output_truncated = false;
  command.stdout_bytes = command.stderr_bytes = 0;
  addLocked(std::move(command));
}

void OpenCommands::addLocked(model::Command command) {
  by_host_[command.host_id].insert(command.id);
  std::string id = command.id;
  open_[id] = Entry{std::move(command), 0};
}

void OpenCommands::removeLocked(Map::iterator it, const std::string& host_id) {
  auto hit = by_host_.find(host_id);
  if (hit != by_host_.end()) {
    hit->second.erase(it->first);
    if (hit->second.empty()) by_host_.erase(hit);
  }
  open_.erase(it);
}

std::optional<model::Command> OpenCommands::get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = open_.find(id);
  if (it == open_.end()) return std::nullopt;
  return it->second.command;
}

void OpenCommands::refresh(std::vector<model::Command>& commands) const {
  std::lock_guard lock(mu_);
  for (auto& c : commands) {
    auto it = open_.find(c.id);
    if (it != open_.end()) c = it->second.command;
  }
}

std::vector<std::string> OpenCommands::idsOfHost(const std::string& host_id) const {
  std::lock_guard lock(mu_);
  auto it = by_host_.find(host_id);
  if (it == by_host_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

size_t OpenCommands::size() const {
  std::lock_guard lock(mu_);
  return open_.size();
}

std::array<uint64_t, 8> OpenCommands::countByState() const {
  std::array<uint64_t, 8> out{};
  std::lock_guard lock(mu_);
  for (const auto& [id, entry] : open_) out[static_cast<size_t>(entry.command.state) % 8]++;
  return out;
}

}  // namespace muster::server
