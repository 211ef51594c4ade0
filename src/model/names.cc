// String forms of model enums (API, storage, CLI).
#include "model/command.h"
#include "model/host.h"

namespace muster::model {

std::string_view toString(HostStatus status) {
  switch (status) {
    case HostStatus::kOnline: return "online";
    case HostStatus::kOffline: return "offline";
    case HostStatus::kRevoked: return "revoked";
  }
  return "unknown";
}

bool parseHostStatus(std::string_view text, HostStatus* out) {
  for (auto s : {HostStatus::kOnline, HostStatus::kOffline, HostStatus::kRevoked}) {
    if (toString(s) == text) {
      *out = s;
      return true;
    }
  }
  return false;
}

std::string_view toString(CommandState state) {
  switch (state) {
    case CommandState::kQueued: return "queued";
    case CommandState::kDispatched: return "dispatched";
    case CommandState::kRunning: return "running";
    case CommandState::kSucceeded: return "succeeded";
    case CommandState::kFailed: return "failed";
    case CommandState::kTimedOut: return "timed_out";
    case CommandState::kCancelled: return "cancelled";
    case CommandState::kExpired: return "expired";
  }
  return "unknown";
}

bool parseCommandState(std::string_view text, CommandState* out) {
  for (int i = 0; i <= static_cast<int>(CommandState::kExpired); ++i) {
    auto s = static_cast<CommandState>(i);
    if (toString(s) == text) {
      *out = s;
      return true;
    }
  }
  return false;
}

bool isTerminal(CommandState state) {
  return state != CommandState::kQueued && state != CommandState::kDispatched &&
         state != CommandState::kRunning;
}

std::string_view toString(OutputStream stream) {
  return stream == OutputStream::kStderr ? "stderr" : "stdout";
}

}  // namespace muster::model
