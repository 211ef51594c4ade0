// The command transition table and the transition function.
#include "server/core/command_states.h"

#include <algorithm>
#include <array>

namespace muster::server {
namespace {
using S = model::CommandState;
using E = CommandEvent;
using A = CommandAction;
constexpr std::optional<S> kReported = std::nullopt;

constexpr CommandTransition kTable[] = {
    // Delivery. The first send moves a queued command on; later ones (every reconnect) do not.
    {S::kQueued, E::kDispatch, S::kDispatched, A::kFirstSend},
    {S::kDispatched, E::kDispatch, S::kDispatched, A::kResend},
    {S::kRunning, E::kDispatch, S::kRunning, A::kResend},
    // CommandAccepted, also for a command still queued: one the agent took before a restart
    // of the server (which lost its dispatch mark) and that was not sent again since.
    {S::kQueued, E::kAccept, S::kRunning, A::kStart},
    {S::kDispatched, E::kAccept, S::kRunning, A::kStart},
    // The agent's result; quick commands go from dispatched straight to their outcome.
    {S::kQueued, E::kAgentResult, kReported, A::kEndByAgent},
    {S::kDispatched, E::kAgentResult, kReported, A::kEndByAgent},
    {S::kRunning, E::kAgentResult, kReported, A::kEndByAgent},
    // What the process really did replaces what the server inferred (result_source=server).
    {S::kTimedOut, E::kAgentCorrection, kReported, A::kEndByAgent},
    {S::kCancelled, E::kAgentCorrection, kReported, A::kEndByAgent},
    {S::kExpired, E::kAgentCorrection, kReported, A::kEndByAgent},
    // Operators: a command that never left the server ends on the spot; one its agent has
    // is asked to stop (the agent reports how it ended).
    {S::kQueued, E::kCancelQueued, S::kCancelled, A::kEndByServer},
    {S::kDispatched, E::kCancelRequest, S::kDispatched, A::kAskCancel},
    {S::kRunning, E::kCancelRequest, S::kRunning, A::kAskCancel},
    // Decommission: the host will never report again.
    {S::kQueued, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    {S::kDispatched, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    {S::kRunning, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    // Sweeps (CommandService::tick).
    {S::kQueued, E::kExpire, S::kExpired, A::kEndByServer},
    {S::kDispatched, E::kExpire, S::kExpired, A::kEndByServer},
    {S::kRunning, E::kServerTimeout, S::kTimedOut, A::kEndByServer},
};

constexpr bool wellFormed() {
  for (size_t i = 0; i < std::size(kTable); ++i) {
    const CommandTransition& row = kTable[i];
    for (size_t j = i + 1; j < std::size(kTable); ++j) {
      if (kTable[j].from == row.from && kTable[j].event == row.event) return false;  // ambiguous
    }
    // Only the agent's outcome comes from the event's payload; everything else is fixed.
    if ((row.to == kReported) != (row.action == A::kEndByAgent)) return false;
    // Ended commands take only the agent's correction of a server-inferred outcome.
    const bool from_ended =
        row.from != S::kQueued && row.from != S::kDispatched && row.from != S::kRunning;
    if (from_ended != (row.event == E::kAgentCorrection)) return false;
  }
  return true;
}
static_assert(wellFormed(), "one row per (state, event); ended commands only take corrections");

// statesAccepting() of every event, computed once.
const std::array<std::vector<S>, kCommandEvents>& accepting() {
  static const auto* table = [] {
    auto* out = new std::array<std::vector<S>, kCommandEvents>();
    for (const auto& row : kTable) (*out)[static_cast<size_t>(row.event)].push_back(row.from);
    return out;
  }();
  return *table;
}
}  // namespace

std::string_view toString(CommandEvent event) {
  switch (event) {
    case E::kDispatch: return "dispatch";
    case E::kAccept: return "accept";
    case E::kAgentResult: return "agent_result";
    case E::kAgentCorrection: return "agent_correction";
    case E::kCancelQueued: return "cancel_queued";
    case E::kCancelRequest: return "cancel_request";
    case E::kHostRemoved: return "host_removed";
    case E::kExpire: return "expire";
    case E::kServerTimeout: return "server_timeout";
  }
  return "unknown";
}

bool isAgentOutcome(model::CommandState state) {
  return std::find(std::begin(kAgentOutcomes), std::end(kAgentOutcomes), state) !=
         std::end(kAgentOutcomes);
}

std::span<const CommandTransition> commandTransitions() { return kTable; }

const CommandTransition* findTransition(model::CommandState from, CommandEvent event) {
  for (const auto& row : kTable) {
    if (row.from == from && row.event == event) return &row;
  }
  return nullptr;
}

std::optional<model::CommandState> next(model::CommandState from, CommandEvent event,
                                        std::optional<model::CommandState> reported) {
  const CommandTransition* row = findTransition(from, event);
  if (row == nullptr) return std::nullopt;
  if (row->to) return row->to;
  if (!reported || !isAgentOutcome(*reported)) return std::nullopt;
  return reported;
}

std::vector<model::CommandState> statesAccepting(CommandEvent event) {
  return accepting()[static_cast<size_t>(event)];
}

std::vector<model::CommandState> storeGuard(CommandEvent event) {
  std::vector<S> states = statesAccepting(event);
  auto has = [&states](S s) { return std::find(states.begin(), states.end(), s) != states.end(); };
  if (has(S::kDispatched) && !has(S::kQueued)) states.push_back(S::kQueued);
  return states;
}

const CommandTransition* transition(model::Command& c, CommandEvent event, const EventInput& in) {
  const CommandTransition* row = findTransition(c.state, event);
  if (row == nullptr) return nullptr;
  const auto to = next(c.state, event, in.result ? std::optional(in.result->state) : std::nullopt);
  if (!to) return nullptr;
  c.state = *to;
  switch (row->action) {
    case A::kFirstSend: c.dispatched_at_ms = in.now_ms; break;
    case A::kResend: break;
    case A::kStart:
      c.started_at_ms = in.now_ms;
      if (c.dispatched_at_ms == 0) c.dispatched_at_ms = c.started_at_ms;
      break;
    case A::kAskCancel: c.cancel_requested = true; break;
    case A::kEndByAgent: {
      const model::CommandResult& r = *in.result;  // next() refused rows without one
      c.exit_code = r.exit_code;
      c.signal = r.signal;
      c.error = r.error;
      c.output_truncated = r.output_truncated;
      c.stdout_bytes = r.stdout_bytes;
      c.stderr_bytes = r.stderr_bytes;
      if (c.started_at_ms == 0) c.started_at_ms = in.now_ms;
      if (c.dispatched_at_ms == 0) c.dispatched_at_ms = c.started_at_ms;
      c.finished_at_ms = in.now_ms;
      c.result_source = model::ResultSource::kAgent;
      break;
    }
    case A::kEndByServer:
      c.error = std::string(in.reason);
      c.finished_at_ms = in.now_ms;
      c.result_source = model::ResultSource::kServer;
      break;
  }
  return row;
}

}  // namespace muster::server
