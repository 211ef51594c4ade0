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
  auto targets = listenersOf(chunk.command_id);
  if (targets.empty()) return;  // no event built, no chunk copied
  OutputEvent event;
  event.kind = OutputEvent::Kind::kChunk;
  event.chunk = chunk;
  for (const auto& listener : targets) listener(event);
}

void OutputBus::publishFinished(const model::Command& command) {
  auto targets = listenersOf(command.id);
  if (targets.empty()) return;  // a fan-out's results: nobody follows them one by one
  OutputEvent event;
  event.kind = OutputEvent::Kind::kFinished;
  event.command = command;
  for (const auto& listener : targets) listener(event);
}

std::vector<OutputBus::Listener> OutputBus::listenersOf(const std::string& command_id) {
  std::vector<Listener> targets;
  std::lock_guard lock(mu_);
  auto it = listeners_.find(command_id);
  if (it == listeners_.end()) return targets;
  for (const auto& [token, listener] : it->second) targets.push_back(listener);
  return targets;
}

}  // namespace muster::server
