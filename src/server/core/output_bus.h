// Live output and completion events for followers (CLI `run`, SSE); in memory only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "model/command.h"

namespace muster::server {

struct OutputEvent {
  enum class Kind { kChunk, kFinished };
  Kind kind = Kind::kChunk;
  model::OutputChunk chunk;  // kChunk
  model::Command command;    // kFinished: the terminal record as stored
};

class OutputBus {
 public:
  // Listeners run on the publisher's thread and must not block.
  using Listener = std::function<void(const OutputEvent&)>;

  uint64_t subscribe(const std::string& command_id, Listener listener);
  void unsubscribe(uint64_t token);
  void publishChunk(const model::OutputChunk& chunk);
  void publishFinished(const model::Command& command);

 private:
  // The listeners of a command; empty (the usual case: nobody follows it) without copying.
  std::vector<Listener> listenersOf(const std::string& command_id);

  std::mutex mu_;
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  std::unordered_map<std::string, std::map<uint64_t, Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::string> token_to_command_ ABSL_GUARDED_BY(mu_);
};

}  // namespace muster::server
