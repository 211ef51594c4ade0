// OutputBus implementation.
#include "server/core/output_bus.h"

#include <vector>

namespace muster::server {

uint64_t OutputBus::subscribe(const std::string& command_id, Listener listener) {
  std::lock_guard lock(mu_);
  uint64_t token = next_token_++;
  listeners_[command_id][token] = std::move(listener);
  token_to_command_[token] = command_id;
  return token;
}

void OutputBus::unsubscribe(uint64_t token) {
  std::lock_guard lock(mu_);
  auto it = token_to_command_.find(token);
  if (it == token_to_command_.end()) return;
  auto lit = listeners_.find(it->second);
  if (lit != listeners_.end()) {
    lit->second.erase(token);
    if (lit->second.empty()) listeners_.erase(lit);
  }
  token_to_command_.erase(it);
}

void OutputBus::publishChunk(const model::OutputChunk& chunk) {
  OutputEvent event;
  event.kind = OutputEvent::Kind::kChunk;
  event.chunk = chunk;
  publish(chunk.command_id, event);
}

void OutputBus::publishFinished(const model::Command& command) {
  OutputEvent event;
  event.kind = OutputEvent::Kind::kFinished;
  event.command = command;
  publish(command.id, event);
}

void OutputBus::publish(const std::string& command_id, const OutputEvent& event) {
  std::vector<Listener> targets;
  {
    std::lock_guard lock(mu_);
    auto it = listeners_.find(command_id);
    if (it == listeners_.end()) return;
    for (const auto& [token, listener] : it->second) targets.push_back(listener);
  }
  for (const auto& listener : targets) listener(event);
}

}  // namespace muster::server
