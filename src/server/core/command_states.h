// The command state machine as one table: a row per legal (state, event) -> (next, action).
// Every change of a command's state goes through transition(), and every "only if the command
// is still X" guard (in memory, and the store's conditional UpdateCommand) is derived from the
// rows, never written by hand at a call site.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "model/command.h"

namespace muster::server {

enum class CommandEvent : uint8_t {
  kDispatch,         // sent to its agent; again on every reconnect
  kAccept,           // CommandAccepted: the process has run for 200 ms
  kAgentResult,      // the agent's result for a command still open
  kAgentCorrection,  // the agent's result for a command whose outcome the server inferred
  kCancelQueued,     // an operator's cancel of a command that never left the server
  kCancelRequest,    // an operator's cancel of a command its agent has: it is sent Cancel
  kHostRemoved,      // its host was decommissioned
  kExpire,           // its deadline passed before the host took it
  kServerTimeout,    // no result by timeout + kill grace + server grace
};
inline constexpr int kCommandEvents = 9;
std::string_view toString(CommandEvent event);

// What applying a row does besides setting the state.
enum class CommandAction : uint8_t {
  kFirstSend,    // stamps dispatched_at; the store gets the mark later, in a batch
  kResend,       // nothing: the agent's journal recognises a second delivery
  kStart,        // stamps started_at (and dispatched_at, if no mark came before)
  kAskCancel,    // sets cancel_requested; the agent is sent Cancel
  kEndByAgent,   // takes the agent's outcome and figures; result_source = agent
  kEndByServer,  // ends now with the server's reason as error; result_source = server
};

struct CommandTransition {
  model::CommandState from;
  CommandEvent event;
  // The next state; nullopt: the outcome the agent reported (one of kAgentOutcomes).
  std::optional<model::CommandState> to;
  CommandAction action;
};

// What an agent may report as a command's outcome (expired is only ever the server's).
inline constexpr model::CommandState kAgentOutcomes[] = {
    model::CommandState::kSucceeded, model::CommandState::kFailed, model::CommandState::kTimedOut,
    model::CommandState::kCancelled};
bool isAgentOutcome(model::CommandState state);

// Every row, in the order of the table.
std::span<const CommandTransition> commandTransitions();
// The row for (from, event); null when the table has none (the event does not apply).
const CommandTransition* findTransition(model::CommandState from, CommandEvent event);
// The state `event` moves a command in `from` to; nullopt when no row allows it. Rows that
// take the agent's outcome need `reported` (nullopt without it, or for a state an agent
// cannot report).
std::optional<model::CommandState> next(model::CommandState from, CommandEvent event,
                                        std::optional<model::CommandState> reported = std::nullopt);
// The states `event` applies in, in the table's order.
std::vector<model::CommandState> statesAccepting(CommandEvent event);
// The only_if_state_in of the store's UpdateCommand that writes `event`'s transition:
// statesAccepting(event), plus queued wherever dispatched is accepted. A command dispatched
// in memory is still queued in the store until its dispatch mark is stored, which is
// deferred (CommandService::markDispatched); this is the one place that knows it.
std::vector<model::CommandState> storeGuard(CommandEvent event);

// The payload of an event: what the row's action writes besides the state.
struct EventInput {
  int64_t now_ms = 0;
  const model::CommandResult* result = nullptr;  // kEndByAgent rows: the agent's report
  std::string_view reason = {};                  // kEndByServer rows: stored as the error
};
// The transition function: applies (command.state, event)'s row to `command` and returns it,
// or returns null and leaves `command` as it was when the table has no such row.
const CommandTransition* transition(model::Command& command, CommandEvent event,
                                    const EventInput& in);

}  // namespace muster::server
