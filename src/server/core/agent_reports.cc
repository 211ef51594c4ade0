// CommandService: what agents report — CommandAccepted, output, results (open commands in
// memory, resent reports of ended ones on the slow path) — and storing an ended command
// before its result is acknowledged; the bounds a flooding or lagging agent runs into.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/log.h"
#include "server/core/command_service.h"

namespace muster::server {
namespace {
using model::CommandState;

// Output stored for an ended command, per stream, in max_output_bytes: the open budget (8)
// and two replays of what an agent keeps (head and tail, at most max_output_bytes each).
constexpr uint64_t kLateOutputBudgetFactor = 10;

absl::Status notItsCommand(const std::string& command_id, const Session& session) {
  return absl::PermissionDeniedError(
      absl::StrCat("command ", command_id, " does not belong to agent ", session.agentId()));
}
}  // namespace

void CommandService::onAccepted(const std::shared_ptr<Session>& session,
                                const std::string& command_id) {
  // Ignored for a command not open, of another host, or running already.
  if (session->redeliveryLeft() > 0) topUpRedelivery(session);
  OpenCommands::Applied accepted = open_.apply(command_id, CommandEvent::kAccept,
                                               {.now_ms = clock_.nowMs()}, session->agentId());
  if (!accepted.ok()) return;
  store_.write(store::UpdateCommand{std::move(accepted.command), std::move(accepted.only_if)}, {});
}

bool CommandService::admitFromAgent(const std::shared_ptr<Session>& session) {
  size_t backlog = store_.pendingWrites();
  if (backlog <= config_.max_store_backlog) return true;
  metrics_.limits.hit(Limit::kStoreBacklog, clock_.steadyMs(),
                      absl::StrCat("the store is ", backlog,
                                   " writes behind: agents' results wait in their outboxes "
                                   "(streams end with UNAVAILABLE; check the data disk)"));
  session->close(absl::UnavailableError(
      absl::StrCat("server store is ", backlog, " writes behind; keep results and retry later")));
  return false;
}

bool CommandService::postLate(const std::shared_ptr<Session>& session, std::function<void()> fn) {
  if (slow_path_.tryPost(std::move(fn), config_.max_late_backlog)) return true;
  metrics_.limits.hit(Limit::kLateBacklog, clock_.steadyMs(),
                      absl::StrCat("more than ", config_.max_late_backlog,
                                   " resent reports of ended commands wait to be checked; ending "
                                   "the streams that send more (they resend later)"));
  session->close(
      absl::UnavailableError("server busy checking resent reports; keep them and retry later"));
  return false;
}

store::WriteDone CommandService::outputWritten(std::shared_ptr<Session> session,
                                               std::string command_id) {
  return [this, session = std::move(session),
          command_id = std::move(command_id)](store::WriteResult r) {
    if (r.status.ok()) return;
    // Output must be durable no later than the result whose ack lets the agent delete it: no
    // result of this stream is acked from now on, and the stream ends so that the agent sends
    // both again (from its outbox) on the next one.
    session->markOutputLost();
    metrics_.limits.hit(
        Limit::kOutputLost, clock_.steadyMs(),
        absl::StrCat("cannot store output of command ", command_id, ": ", r.status.message(),
                     "; its agent keeps it and resends it after reconnecting"));
    session->close(absl::UnavailableError(
        absl::StrCat("server cannot store output right now: ", r.status.message())));
  };
}

void CommandService::onOutput(const std::shared_ptr<Session>& session, model::OutputChunk chunk) {
  if (!admitFromAgent(session)) return;
  if (chunk.data.size() > config_.max_output_chunk_bytes) {
    session->close(absl::InvalidArgumentError(
        absl::StrCat("output chunk of ", chunk.data.size(), " bytes for command ", chunk.command_id,
                     " exceeds the limit of ", config_.max_output_chunk_bytes)));
    return;
  }
  // Readers compute offset + size: an offset near 2^64 would wrap.
  constexpr uint64_t kMaxOutputOffset = uint64_t{1} << 53;
  if (chunk.offset > kMaxOutputOffset) {
    session->close(absl::InvalidArgumentError(absl::StrCat(
        "output offset ", chunk.offset, " for command ", chunk.command_id, " is past 2^53")));
    return;
  }
  enum { kNotOpen, kTaken, kOtherHost } found = kNotOpen;
  open_.with([&](OpenCommands::Tx& tx) {
    const model::Command* c = tx.find(chunk.command_id);
    if (c == nullptr) return;
    if (c->host_id != session->agentId()) {
      found = kOtherHost;
      return;
    }
    found = kTaken;
    // The agent keeps head and tail within max_output_bytes per stream; allow resends.
    if (tx.countOutput(chunk.command_id, chunk.data.size()) > 8 * config_.max_output_bytes) {
      metrics_.limits.hit(
          Limit::kOutputBudget, clock_.steadyMs(),
          absl::StrCat("agent ", session->agentId(), " sent more output for command ",
                       chunk.command_id, " than it may keep; dropping the rest"));
      return;
    }
    // Under the table's lock, so the chunk is queued before a result that ends the command.
    bus_.publishChunk(chunk);
    auto done = outputWritten(session, chunk.command_id);
    store_.write(store::AppendOutput{std::move(chunk)}, std::move(done));
  });
  if (found == kOtherHost) session->close(notItsCommand(chunk.command_id, *session));
  if (found != kNotOpen) return;
  // Output for a command that is no longer open (a resend after a reconnect).
  postLate(session, [this, session, chunk = std::move(chunk)]() mutable {
    auto stored = store_.getCommand(chunk.command_id);
    if (!stored.ok()) {
      // Not dropped: the agent resends it with its result once the store answers again.
      session->markOutputLost();
      session->close(absl::UnavailableError(
          absl::StrCat("cannot read command ", chunk.command_id, ": ", stored.status().message())));
      return;
    }
    if (!stored->has_value()) return;
    if ((*stored)->host_id != session->agentId()) {
      session->close(notItsCommand(chunk.command_id, *session));
      return;
    }
    // An ended command's output grows only by what its agent kept and had not delivered
    // (head and tail, replayed at offsets of its own, so they may overlap the live chunks
    // without replacing them). Past the open budget (8 x max_output_bytes received) plus two
    // replays it is an agent filling the disk through its finished commands. Waited for, so
    // the size read for the next chunk includes this one.
    auto bytes = store_.outputBytes(chunk.command_id, chunk.stream);
    if (!bytes.ok()) {
      session->markOutputLost();
      session->close(absl::UnavailableError(absl::StrCat(
          "cannot read output of command ", chunk.command_id, ": ", bytes.status().message())));
      return;
    }
    if (*bytes + chunk.data.size() > kLateOutputBudgetFactor * config_.max_output_bytes) {
      metrics_.limits.hit(
          Limit::kOutputBudget, clock_.steadyMs(),
          absl::StrCat("agent ", session->agentId(), " resent more output for ended command ",
                       chunk.command_id, " than it may keep; dropping the rest"));
      return;
    }
    std::string id = chunk.command_id;
    outputWritten(session, id)(store_.writeAndWait(store::AppendOutput{std::move(chunk)}));
  });
}

void CommandService::onResult(const std::shared_ptr<Session>& session,
                              model::CommandResult result) {
  if (!isAgentOutcome(result.state)) {
    session->close(absl::InvalidArgumentError(
        absl::StrCat("result for command ", result.command_id, " has no final outcome")));
    return;
  }
  if (!admitFromAgent(session)) return;
  if (session->redeliveryLeft() > 0) topUpRedelivery(session);
  const std::string& agent = session->agentId();
  if (result.state == CommandState::kSucceeded && result_check_) {
    if (std::string missing = result_check_(result.command_id); !missing.empty()) {
      result.state = CommandState::kFailed;
      result.error = std::move(missing);
    }
  }
  OpenCommands::Applied ended = open_.apply(result.command_id, CommandEvent::kAgentResult,
                                            {.now_ms = clock_.nowMs(), .result = &result}, agent);
  switch (ended.outcome) {
    case OpenCommands::Outcome::kApplied:
      storeTerminal(std::move(ended.command), ended.from, std::move(ended.only_if), session);
      return;
    case OpenCommands::Outcome::kNotOpen:
      postLate(session, [this, session, result = std::move(result)]() mutable {
        resultSlowPath(session, std::move(result));
      });
      return;
    case OpenCommands::Outcome::kOtherHost:
      session->close(notItsCommand(result.command_id, *session));
      return;
    case OpenCommands::Outcome::kNotAccepted:
      // Every open state takes an agent outcome (command_states.cc).
      MUSTER_BUG(absl::StrCat("command ", result.command_id, ": result refused in state ",
                              std::string(model::toString(ended.from))));
      return;
  }
}

void CommandService::resultSlowPath(const std::shared_ptr<Session>& session,
                                    model::CommandResult result) {
  auto stored = store_.getCommand(result.command_id);
  if (!stored.ok()) {
    session->close(absl::UnavailableError(
        absl::StrCat("cannot read command ", result.command_id, ": ", stored.status().message())));
    return;
  }
  if (!stored->has_value()) {
    spdlog::warn("agent {} reported a result for unknown command {}; telling it to drop it",
                 session->agentId(), result.command_id);
    session->send(ResultAckMsg{result.command_id, true, "unknown command id"});
    return;
  }
  model::Command c = **stored;
  if (c.host_id != session->agentId()) {
    session->close(notItsCommand(result.command_id, *session));
    return;
  }
  const CommandState was = c.state;
  // Still open in the store (its end is being stored, or failed to be): the result as for an
  // open command. Ended by the server's inference (expired, timed out, cancelled by the
  // server): what the process did wins. Ended by the agent: this is a resend.
  const bool agents_own = model::isTerminal(was) && c.result_source == model::ResultSource::kAgent;
  const CommandEvent event =
      model::isTerminal(was) ? CommandEvent::kAgentCorrection : CommandEvent::kAgentResult;
  if (agents_own ||
      transition(c, event, {.now_ms = clock_.nowMs(), .result = &result}) == nullptr) {
    if (!agents_own) {
      MUSTER_BUG(absl::StrCat("command ", c.id, ": stored as ", std::string(model::toString(was)),
                              " by the server, which never infers that; keeping it"));
    }
    // A resend of a stored result: the agent resent its output before it, and the ack lets
    // it delete both, so the ack waits until those writes are applied (and is not sent if
    // one of them failed).
    store_.write(store::Barrier{}, [this, session, id = c.id](store::WriteResult r) {
      if (session->outputLost()) return;  // that write's failure ended the stream already
      if (!r.status.ok()) {
        // Not acked: the stream ends so the agent resends on its next one (it would wait for
        // this ack for as long as the stream lived).
        session->close(absl::UnavailableError(
            absl::StrCat("server cannot confirm stored writes right now: ", r.status.message())));
        return;
      }
      queueAck(session, id);
    });
    return;
  }
  // Compare-and-set on the state just read (this thread is the only one that writes ended
  // commands not in memory).
  storeTerminal(std::move(c), was, {was}, session);
}

void CommandService::storeTerminal(model::Command updated, CommandState from,
                                   std::vector<CommandState> only_if,
                                   std::shared_ptr<Session> ack_to) {
  // The callback keeps the command (for the bus and the ack); the store's queue gets only
  // the fields UpdateCommand writes, not a second copy of the run, host, spec and creator.
  auto command = std::make_shared<const model::Command>(std::move(updated));
  store::UpdateCommand mutation = store::UpdateCommand::of(*command, std::move(only_if));
  auto done = [this, command, from, ack_to](store::WriteResult r) mutable {
    const model::Command& updated = *command;
    if (!r.status.ok()) {
      spdlog::error("command {}: cannot store its result: {}", updated.id, r.status.message());
      // Still open in the store: keep it open here so sweeps and resends apply.
      open_.reopen(updated, from);
      // The agent keeps the result in its outbox and sends it again after reconnecting.
      if (ack_to) {
        ack_to->close(absl::UnavailableError(
            absl::StrCat("server cannot store results right now: ", r.status.message())));
      }
      return;
    }
    if (r.rows == 0) {
      // The stored state moved under us (e.g. expired concurrently); reconcile from the store.
      if (!ack_to) {
        // A server-side end (timeout, expiry, cancel) whose guard missed: the store holds a
        // state memory had moved past (an earlier write failed). Still open there, it is open
        // here again, as stored, so the sweeps apply to it instead of it being forgotten.
        slow_path_.post([this, id = updated.id] {
          auto stored = store_.getCommand(id);
          if (!stored.ok() || !stored->has_value() || model::isTerminal((*stored)->state)) return;
          open_.reopen(**stored, (*stored)->state);
        });
        return;
      }
      if (updated.result_source == model::ResultSource::kAgent) {
        model::CommandResult again;
        again.command_id = updated.id;
        again.state = updated.state;
        again.exit_code = updated.exit_code;
        again.signal = updated.signal;
        again.error = updated.error;
        again.output_truncated = updated.output_truncated;
        again.stdout_bytes = updated.stdout_bytes;
        again.stderr_bytes = updated.stderr_bytes;
        slow_path_.post([this, ack_to, again] { resultSlowPath(ack_to, again); });
      }
      return;
    }
    // debug: at fleet scale one line per command would cost the writer thread more than the
    // commit; runs are logged when created, and every result is in the store.
    if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("command {} on {}: {}{}", updated.id, updated.host_id,
                    model::toString(updated.state),
                    updated.exit_code ? absl::StrCat(" (exit ", *updated.exit_code, ")") : "");
    }
    bus_.publishFinished(updated);
    metrics_.results_by_state[static_cast<size_t>(updated.state) % 8].fetch_add(1);
    if (updated.result_source == model::ResultSource::kAgent && updated.started_at_ms > 0) {
      metrics_.dispatch_to_result_seconds.observe(
          static_cast<double>(updated.finished_at_ms - updated.dispatched_at_ms) / 1000.0);
    }
    // An output write of this stream failed (it was applied before this result): the agent
    // must keep the result, and resends it with the output on its next stream.
    if (ack_to && ack_to->outputLost()) return;
    if (ack_to) queueAck(std::move(ack_to), updated.id);
  };
  store_.write(std::move(mutation), std::move(done));
}

}  // namespace muster::server
