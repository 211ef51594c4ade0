// The command transition table (command_states.h) and the in-memory table of open commands
// that applies it (open_commands.h).
#include "server/core/command_states.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "server/core/open_commands.h"

namespace muster::server {
namespace {
using model::CommandState;
using S = model::CommandState;
using E = CommandEvent;
using A = CommandAction;

constexpr S kAllStates[] = {S::kQueued, S::kDispatched, S::kRunning,   S::kSucceeded,
                            S::kFailed, S::kTimedOut,   S::kCancelled, S::kExpired};
constexpr E kAllEvents[] = {E::kDispatch,        E::kAccept,       E::kAgentResult,
                            E::kAgentCorrection, E::kCancelQueued, E::kCancelRequest,
                            E::kHostRemoved,     E::kExpire,       E::kServerTimeout};

// The lifecycle as docs/architecture.md describes it, written out independently of the table.
struct Row {
  S from;
  E event;
  std::optional<S> to;  // nullopt: the agent's outcome
  A action;
  bool operator<(const Row& o) const { return std::tie(from, event) < std::tie(o.from, o.event); }
};
const std::vector<Row> kExpected = {
    {S::kQueued, E::kDispatch, S::kDispatched, A::kFirstSend},
    {S::kDispatched, E::kDispatch, S::kDispatched, A::kResend},
    {S::kRunning, E::kDispatch, S::kRunning, A::kResend},
    {S::kQueued, E::kAccept, S::kRunning, A::kStart},
    {S::kDispatched, E::kAccept, S::kRunning, A::kStart},
    {S::kQueued, E::kAgentResult, std::nullopt, A::kEndByAgent},
    {S::kDispatched, E::kAgentResult, std::nullopt, A::kEndByAgent},
    {S::kRunning, E::kAgentResult, std::nullopt, A::kEndByAgent},
    {S::kTimedOut, E::kAgentCorrection, std::nullopt, A::kEndByAgent},
    {S::kCancelled, E::kAgentCorrection, std::nullopt, A::kEndByAgent},
    {S::kExpired, E::kAgentCorrection, std::nullopt, A::kEndByAgent},
    {S::kQueued, E::kCancelQueued, S::kCancelled, A::kEndByServer},
    {S::kDispatched, E::kCancelRequest, S::kDispatched, A::kAskCancel},
    {S::kRunning, E::kCancelRequest, S::kRunning, A::kAskCancel},
    {S::kQueued, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    {S::kDispatched, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    {S::kRunning, E::kHostRemoved, S::kCancelled, A::kEndByServer},
    {S::kQueued, E::kExpire, S::kExpired, A::kEndByServer},
    {S::kDispatched, E::kExpire, S::kExpired, A::kEndByServer},
    {S::kRunning, E::kServerTimeout, S::kTimedOut, A::kEndByServer},
};

std::string name(S from, E event) {
  return std::string(model::toString(from)) + " + " + std::string(toString(event));
}

TEST(CommandStatesTest, TableHasExactlyTheDocumentedRows) {
  std::set<Row> expected(kExpected.begin(), kExpected.end());
  ASSERT_EQ(expected.size(), kExpected.size()) << "a (state, event) pair listed twice";
  size_t rows = 0;
  for (const CommandTransition& t : commandTransitions()) {
    ++rows;
    auto it = expected.find(Row{t.from, t.event, t.to, t.action});
    ASSERT_NE(it, expected.end()) << "unexpected row " << name(t.from, t.event);
    EXPECT_EQ(t.to, it->to) << name(t.from, t.event);
    EXPECT_EQ(t.action, it->action) << name(t.from, t.event);
  }
  EXPECT_EQ(rows, kExpected.size());
}

TEST(CommandStatesTest, NextFollowsEveryRow) {
  for (const Row& row : kExpected) {
    if (row.to) {
      EXPECT_EQ(next(row.from, row.event), row.to) << name(row.from, row.event);
      continue;
    }
    // The agent's outcome: every one it may report, nothing without one.
    for (S outcome : kAgentOutcomes) {
      EXPECT_EQ(next(row.from, row.event, outcome), outcome) << name(row.from, row.event);
    }
    EXPECT_EQ(next(row.from, row.event), std::nullopt) << name(row.from, row.event);
  }
}

TEST(CommandStatesTest, PairsWithoutARowAreIllegal) {
  std::set<std::pair<S, E>> legal;
  for (const Row& row : kExpected) legal.insert({row.from, row.event});
  for (S from : kAllStates) {
    for (E event : kAllEvents) {
      if (legal.count({from, event})) continue;
      EXPECT_EQ(findTransition(from, event), nullptr) << name(from, event);
      EXPECT_EQ(next(from, event, S::kSucceeded), std::nullopt) << name(from, event);
    }
  }
  // The ones whose absence the core relies on.
  EXPECT_EQ(next(S::kRunning, E::kAccept), std::nullopt);        // a second Accepted is ignored
  EXPECT_EQ(next(S::kQueued, E::kCancelRequest), std::nullopt);  // cancelled on the spot
  EXPECT_EQ(next(S::kRunning, E::kExpire), std::nullopt);        // the host took it
  EXPECT_EQ(next(S::kSucceeded, E::kAgentCorrection, S::kFailed), std::nullopt);
  EXPECT_EQ(next(S::kSucceeded, E::kDispatch), std::nullopt);
}

TEST(CommandStatesTest, AnAgentCannotReportExpiredOrAnOpenState) {
  for (S reported : {S::kExpired, S::kQueued, S::kDispatched, S::kRunning}) {
    EXPECT_FALSE(isAgentOutcome(reported)) << model::toString(reported);
    EXPECT_EQ(next(S::kRunning, E::kAgentResult, reported), std::nullopt);
    EXPECT_EQ(next(S::kExpired, E::kAgentCorrection, reported), std::nullopt);
  }
}

TEST(CommandStatesTest, StatesAcceptingMatchesTheRows) {
  for (E event : kAllEvents) {
    std::vector<S> want;
    for (const Row& row : kExpected) {
      if (row.event == event) want.push_back(row.from);
    }
    std::vector<S> got = statesAccepting(event);
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << toString(event);
  }
  EXPECT_EQ(statesAccepting(E::kAccept), (std::vector<S>{S::kQueued, S::kDispatched}));
  EXPECT_EQ(statesAccepting(E::kServerTimeout), std::vector<S>{S::kRunning});
}

// A command dispatched in memory may still be queued in the store (its mark is deferred).
TEST(CommandStatesTest, StoreGuardAddsQueuedWhereverDispatchedIsAccepted) {
  auto sorted = [](std::vector<S> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(storeGuard(E::kCancelRequest)),
            (std::vector<S>{S::kQueued, S::kDispatched, S::kRunning}));
  EXPECT_EQ(sorted(storeGuard(E::kAgentResult)),
            (std::vector<S>{S::kQueued, S::kDispatched, S::kRunning}));
  EXPECT_EQ(sorted(storeGuard(E::kExpire)), (std::vector<S>{S::kQueued, S::kDispatched}));
  EXPECT_EQ(storeGuard(E::kCancelQueued), std::vector<S>{S::kQueued});
  EXPECT_EQ(storeGuard(E::kServerTimeout), std::vector<S>{S::kRunning});
  EXPECT_EQ(sorted(storeGuard(E::kAgentCorrection)),
            (std::vector<S>{S::kTimedOut, S::kCancelled, S::kExpired}));
}

TEST(CommandStatesTest, TransitionAppliesTheRowsAction) {
  model::Command c;
  c.id = "c1";
  ASSERT_NE(transition(c, E::kDispatch, {.now_ms = 100}), nullptr);
  EXPECT_EQ(c.state, S::kDispatched);
  EXPECT_EQ(c.dispatched_at_ms, 100);
  ASSERT_NE(transition(c, E::kDispatch, {.now_ms = 150}), nullptr);  // a resend changes nothing
  EXPECT_EQ(c.dispatched_at_ms, 100);
  ASSERT_NE(transition(c, E::kAccept, {.now_ms = 200}), nullptr);
  EXPECT_EQ(c.state, S::kRunning);
  EXPECT_EQ(c.started_at_ms, 200);
  ASSERT_NE(transition(c, E::kCancelRequest, {.now_ms = 250}), nullptr);
  EXPECT_TRUE(c.cancel_requested);
  EXPECT_EQ(c.state, S::kRunning);
  ASSERT_NE(transition(c, E::kServerTimeout, {.now_ms = 300, .reason = "no result"}), nullptr);
  EXPECT_EQ(c.state, S::kTimedOut);
  EXPECT_EQ(c.error, "no result");
  EXPECT_EQ(c.finished_at_ms, 300);
  EXPECT_EQ(c.result_source, model::ResultSource::kServer);
  // What the process did replaces the inference.
  model::CommandResult r;
  r.state = S::kFailed;
  r.exit_code = 3;
  r.stdout_bytes = 12;
  ASSERT_NE(transition(c, E::kAgentCorrection, {.now_ms = 400, .result = &r}), nullptr);
  EXPECT_EQ(c.state, S::kFailed);
  EXPECT_EQ(c.exit_code, 3);
  EXPECT_EQ(c.stdout_bytes, 12u);
  EXPECT_EQ(c.error, "");
  EXPECT_EQ(c.finished_at_ms, 400);
  EXPECT_EQ(c.result_source, model::ResultSource::kAgent);
}

TEST(CommandStatesTest, RefusedTransitionLeavesTheCommandAlone) {
  model::Command c;
  c.state = S::kRunning;
  c.started_at_ms = 5;
  EXPECT_EQ(transition(c, E::kAccept, {.now_ms = 10}), nullptr);
  EXPECT_EQ(c.started_at_ms, 5);
  model::CommandResult expired;
  expired.state = S::kExpired;
  EXPECT_EQ(transition(c, E::kAgentResult, {.now_ms = 10, .result = &expired}), nullptr);
  EXPECT_EQ(c.state, S::kRunning);
  EXPECT_EQ(c.finished_at_ms, 0);
}

TEST(CommandStatesTest, QuickResultStampsDispatchAndStartTimes) {
  model::Command c;
  c.state = S::kDispatched;  // no Accepted: the command took less than 200 ms
  model::CommandResult r;
  r.state = S::kSucceeded;
  ASSERT_NE(transition(c, E::kAgentResult, {.now_ms = 700, .result = &r}), nullptr);
  EXPECT_EQ(c.started_at_ms, 700);
  EXPECT_EQ(c.dispatched_at_ms, 700);
}

// --- OpenCommands --------------------------------------------------------------------------

model::Command command(const std::string& id, const std::string& host, S state = S::kQueued) {
  model::Command c;
  c.id = id;
  c.run_id = "r1";
  c.host_id = host;
  c.state = state;
  return c;
}

TEST(OpenCommandsTest, ApplyReturnsTheSnapshotAndTheStoreGuard) {
  OpenCommands open;
  std::vector<model::Command> cs = {command("a", "h1"), command("b", "h1", S::kDispatched)};
  open.add(cs.data(), cs.data() + cs.size());
  OpenCommands::Applied accepted = open.apply("b", E::kAccept, {.now_ms = 50}, "h1");
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(accepted.from, S::kDispatched);
  EXPECT_EQ(accepted.command.state, S::kRunning);
  EXPECT_EQ(accepted.only_if, storeGuard(E::kAccept));
  EXPECT_FALSE(accepted.ended());
  EXPECT_EQ(open.get("b")->state, S::kRunning);
  // Dispatch marks are deferred: no guard for the store.
  OpenCommands::Applied sent = open.apply("a", E::kDispatch, {.now_ms = 60});
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ(sent.action, A::kFirstSend);
  EXPECT_TRUE(sent.only_if.empty());
}

TEST(OpenCommandsTest, RefusalsSayWhy) {
  OpenCommands open;
  std::vector<model::Command> cs = {command("a", "h1", S::kRunning)};
  open.add(cs.data(), cs.data() + cs.size());
  EXPECT_EQ(open.apply("zz", E::kAccept, {.now_ms = 1}).outcome, OpenCommands::Outcome::kNotOpen);
  EXPECT_EQ(open.apply("a", E::kAccept, {.now_ms = 1}, "h2").outcome,
            OpenCommands::Outcome::kOtherHost);
  EXPECT_EQ(open.apply("a", E::kAccept, {.now_ms = 1}, "h1").outcome,
            OpenCommands::Outcome::kNotAccepted);
  EXPECT_EQ(open.get("a")->state, S::kRunning);
}

TEST(OpenCommandsTest, AnEndedCommandLeavesTheTable) {
  OpenCommands open;
  std::vector<model::Command> cs = {command("a", "h1"), command("b", "h1"), command("c", "h2")};
  open.add(cs.data(), cs.data() + cs.size());
  model::CommandResult r;
  r.state = S::kSucceeded;
  OpenCommands::Applied ended = open.apply("a", E::kAgentResult, {.now_ms = 9, .result = &r}, "h1");
  ASSERT_TRUE(ended.ended());
  EXPECT_EQ(ended.command.id, "a");
  EXPECT_EQ(ended.command.host_id, "h1");
  EXPECT_FALSE(open.get("a").has_value());
  EXPECT_EQ(open.idsOfHost("h1"), std::vector<std::string>{"b"});
  EXPECT_EQ(open.size(), 2u);
  EXPECT_EQ(open.countByState()[static_cast<size_t>(S::kQueued)], 2u);
}

TEST(OpenCommandsTest, ApplyFirstPicksTheEventTheStateTakes) {
  OpenCommands open;
  std::vector<model::Command> cs = {command("q", "h1"), command("d", "h1", S::kDispatched)};
  open.add(cs.data(), cs.data() + cs.size());
  const EventInput in{.now_ms = 5, .reason = "operator"};
  auto q = open.applyFirst("q", {E::kCancelQueued, E::kCancelRequest}, in);
  auto d = open.applyFirst("d", {E::kCancelQueued, E::kCancelRequest}, in);
  EXPECT_EQ(q.event, E::kCancelQueued);
  EXPECT_TRUE(q.ended());
  EXPECT_EQ(q.command.error, "operator");
  EXPECT_EQ(d.event, E::kCancelRequest);
  EXPECT_FALSE(d.ended());
  EXPECT_TRUE(open.get("d")->cancel_requested);
}

TEST(OpenCommandsTest, ReopenRestoresTheStateAnUnstoredEndCameFrom) {
  OpenCommands open;
  model::Command c = command("a", "h1", S::kSucceeded);
  c.exit_code = 0;
  c.finished_at_ms = 99;
  open.reopen(c, S::kQueued);  // a cancel of a queued command the store refused
  EXPECT_EQ(open.get("a")->state, S::kQueued);
  EXPECT_FALSE(open.get("a")->exit_code.has_value());
  EXPECT_EQ(open.get("a")->finished_at_ms, 0);
  c.state = S::kFailed;
  open.reopen(c, S::kRunning);  // open already: left alone
  EXPECT_EQ(open.get("a")->state, S::kQueued);
  EXPECT_EQ(open.idsOfHost("h1"), std::vector<std::string>{"a"});
  open.reopen(command("b", "h1", S::kSucceeded), S::kTimedOut);  // ended in the store
  EXPECT_FALSE(open.get("b").has_value());
}

}  // namespace
}  // namespace muster::server
