// CommandService: cancelling a command, a run (one store transaction), and every open
// command of a decommissioned host.
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "server/core/command_service.h"

namespace muster::server {

void CommandService::reopenAndDeliver(model::Command command, model::CommandState from) {
  std::string id = command.id, host = command.host_id;
  open_.reopen(std::move(command), from);
  // Its host may have connected while it was out of the table (and missed it).
  if (auto session = hosts_.sessionFor(host)) deliver(session, {id});
}

absl::StatusOr<model::Command> CommandService::cancel(const std::string& id,
                                                      const std::string& reason) {
  // A command that never left the server ends right here; one its agent has is asked to stop.
  OpenCommands::Applied cancelled =
      open_.applyFirst(id, {CommandEvent::kCancelQueued, CommandEvent::kCancelRequest},
                       {.now_ms = clock_.nowMs(), .reason = reason});
  if (cancelled.outcome == OpenCommands::Outcome::kNotOpen) {
    auto c = get(id);
    if (!c.ok()) return c.status();
    return absl::FailedPreconditionError(absl::StrCat("command ", id, " already finished (",
                                                      std::string(model::toString(c->state)),
                                                      "); nothing to cancel"));
  }
  if (!cancelled.ok()) {
    // Every open state takes one of the two (command_states.cc).
    MUSTER_BUG(absl::StrCat("command ", id, ": cancel refused in state ",
                            std::string(model::toString(cancelled.from))));
    return absl::InternalError(absl::StrCat("command ", id, " cannot be cancelled in state ",
                                            std::string(model::toString(cancelled.from))));
  }
  const model::Command& snapshot = cancelled.command;
  auto r = store_.writeAndWait(store::UpdateCommand{snapshot, std::move(cancelled.only_if)});
  if (!r.status.ok()) {
    // Still open in the store: open here again (a cancel request stays in memory, ahead of
    // the store, and is sent again with the next delivery).
    if (cancelled.ended()) reopenAndDeliver(snapshot, cancelled.from);
    return r.status;
  }
  if (cancelled.ended()) {
    bus_.publishFinished(snapshot);
    metrics_.results_by_state[static_cast<size_t>(snapshot.state) % 8].fetch_add(1);
    return snapshot;
  }
  if (auto session = hosts_.sessionFor(snapshot.host_id)) {
    session->send(CancelMsg{id, reason});
  }
  return snapshot;
}

absl::StatusOr<std::vector<model::Command>> CommandService::cancelRun(const std::string& run_id,
                                                                      const std::string& reason) {
  auto run = store_.getRun(run_id);
  if (!run.ok()) return run.status();
  if (!run->has_value()) {
    return absl::NotFoundError(absl::StrCat("no run with id '", run_id.substr(0, 140), "'"));
  }
  // A run still being stored in slices: no further slice is stored, and the slices already
  // queued are open when this returns, so the loop below cancels them too.
  stopSlicesOfCancelledRun(run_id);
  // Every open command of the run changes in memory under one lock and in the store in one
  // transaction (not one writeAndWait per command: 10,000 fsyncs for a large run).
  std::vector<model::Command> out;
  std::vector<std::pair<model::Command, model::CommandState>> finished_now;  // and `from`
  std::vector<std::pair<std::string, std::string>> ask;  // (host, command) to send Cancel to
  store::UpdateCommands batch;
  open_.with([&](OpenCommands::Tx& tx) {
    const EventInput in{.now_ms = clock_.nowMs(), .reason = reason};
    std::vector<std::string> ids = tx.idsOfRun(run_id);
    batch.updates.reserve(ids.size());
    for (const auto& id : ids) {
      OpenCommands::Applied c =
          tx.applyFirst(id, {CommandEvent::kCancelQueued, CommandEvent::kCancelRequest}, in);
      if (!c.ok()) continue;  // not reached: every open state takes one of the two
      batch.updates.push_back(store::UpdateCommand::of(c.command, std::move(c.only_if)));
      if (c.ended()) {
        finished_now.emplace_back(c.command, c.from);
      } else {
        ask.emplace_back(c.command.host_id, c.command.id);
      }
      out.push_back(std::move(c.command));
    }
  });
  if (batch.updates.empty()) return out;
  auto r = store_.writeAndWait(std::move(batch));
  if (!r.status.ok()) {
    for (auto& [c, from] : finished_now) reopenAndDeliver(std::move(c), from);
    return r.status;
  }
  for (const auto& [c, from] : finished_now) {
    bus_.publishFinished(c);
    metrics_.results_by_state[static_cast<size_t>(c.state) % 8].fetch_add(1);
  }
  for (const auto& [host, id] : ask) {
    if (auto session = hosts_.sessionFor(host)) session->send(CancelMsg{id, reason});
  }
  return out;
}

void CommandService::cancelAllForHost(const std::string& host_id, const std::string& reason) {
  std::vector<OpenCommands::Applied> ended;
  open_.with([&](OpenCommands::Tx& tx) {
    const EventInput in{.now_ms = clock_.nowMs(), .reason = reason};
    for (const auto& id : tx.idsOfHost(host_id)) {
      OpenCommands::Applied c = tx.apply(id, CommandEvent::kHostRemoved, in);
      if (c.ok()) ended.push_back(std::move(c));
    }
  });
  for (auto& c : ended) {
    storeTerminal(std::move(c.command), c.from, std::move(c.only_if), nullptr);
  }
}

}  // namespace muster::server
