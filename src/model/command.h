// Commands and their lifecycle: queued -> dispatched -> running -> terminal, or queued -> expired.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/artifact.h"
#include "model/host.h"

namespace muster::model {

enum class CommandState {
  kQueued = 0,
  kDispatched = 1,
  kRunning = 2,
  kSucceeded = 3,
  kFailed = 4,
  kTimedOut = 5,
  kCancelled = 6,
  kExpired = 7,
};

std::string_view toString(CommandState state);
bool parseCommandState(std::string_view text, CommandState* out);
bool isTerminal(CommandState state);

struct ExecSpec {
  std::vector<std::string> argv;  // run directly; or
  std::string script;             // run with /bin/sh -c when argv is empty
  StringMap env;
  // Added to the environment like env, but the values are never returned by the API or
  // logged: stored, and sent to the agent only.
  StringMap secret_env;
  std::string cwd;
  int64_t timeout_ms = 0;
  int64_t kill_grace_ms = 0;
};

// Who decided a terminal state: the agent (what the process did) or the server (inferred,
// e.g. expired or no report within the timeout). An agent's report replaces a server's.
enum class ResultSource { kNone = 0, kAgent = 1, kServer = 2 };

struct Command {
  std::string id;
  std::string run_id;
  std::string host_id;
  ExecSpec exec;
  // Transfers the command allows while it is in flight (server/core/artifact_service.h).
  std::vector<ArtifactExpectation> artifacts;
  CommandState state = CommandState::kQueued;
  std::string idempotency_key;
  std::string created_by;
  int64_t created_at_ms = 0;
  int64_t expires_at_ms = 0;
  int64_t dispatched_at_ms = 0;
  int64_t started_at_ms = 0;
  int64_t finished_at_ms = 0;
  std::optional<int> exit_code;
  int signal = 0;
  std::string error;
  bool output_truncated = false;
  uint64_t stdout_bytes = 0;
  uint64_t stderr_bytes = 0;
  bool cancel_requested = false;
  ResultSource result_source = ResultSource::kNone;
};

// A page of commands, newest first: what the store lists and the core's queries take.
struct CommandQuery {
  std::string run_id;   // empty: any
  std::string host_id;  // empty: any
  std::optional<CommandState> state;
  std::string before_id;  // pagination: ids strictly below this (ULIDs sort by creation)
  int limit = 100;
};

enum class OutputStream { kStdout = 1, kStderr = 2 };
std::string_view toString(OutputStream stream);

struct OutputChunk {
  std::string command_id;
  OutputStream stream = OutputStream::kStdout;
  uint64_t offset = 0;
  std::string data;
};

// What an agent reports when a command ends.
struct CommandResult {
  std::string command_id;
  CommandState state = CommandState::kFailed;  // one of the terminal states
  std::optional<int> exit_code;
  int signal = 0;
  std::string error;
  uint64_t stdout_bytes = 0;
  uint64_t stderr_bytes = 0;
  bool output_truncated = false;
  int64_t started_at_ms = 0;
  int64_t finished_at_ms = 0;
};

}  // namespace muster::model
