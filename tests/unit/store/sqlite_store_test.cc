// Tests of SqliteStore: every mutation and read round-trips through a real SQLite file.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sqlite_store_fixture.h"

namespace muster::store::test {
namespace {

TEST_F(SqliteStoreTest, UpsertHostRoundTripsEveryField) {
  model::Host host = makeHost("h1");
  WriteResult r = put(UpsertHost{host});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 1);

  auto hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 1u);
  const model::Host& got = hosts->front();
  EXPECT_EQ(got.id, "h1");
  EXPECT_EQ(got.status, model::HostStatus::kOnline);
  EXPECT_EQ(got.version, "1.2.3");
  EXPECT_EQ(got.facts, host.facts);
  EXPECT_EQ(got.labels, host.labels);
  EXPECT_EQ(got.metrics.load1, 0.5);
  EXPECT_EQ(got.metrics.load5, 1.25);
  EXPECT_EQ(got.metrics.load15, 2.0);
  EXPECT_EQ(got.metrics.mem_total_bytes, 16ull << 30);
  EXPECT_EQ(got.metrics.mem_available_bytes, 8ull << 30);
  EXPECT_EQ(got.metrics.disk_total_bytes, 1ull << 40);
  EXPECT_EQ(got.metrics.disk_free_bytes, 1ull << 39);
  EXPECT_EQ(got.metrics.uptime_seconds, 123456u);
  EXPECT_EQ(got.enrolled_at_ms, 1000);
  EXPECT_EQ(got.last_seen_ms, 2000);
  EXPECT_EQ(got.status_changed_at_ms, 1500);
  EXPECT_EQ(got.credential_hash, "ab12");
  EXPECT_EQ(got.pinned_labels, host.pinned_labels);
  EXPECT_EQ(got.enroll_attempt_hash, "cd34");

  host.labels = {};
  host.version = "2.0";
  host.status = model::HostStatus::kRevoked;
  ASSERT_TRUE(put(UpsertHost{host}).status.ok());
  hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_TRUE(hosts->front().labels.empty());
  EXPECT_EQ(hosts->front().version, "2.0");
  EXPECT_EQ(hosts->front().status, model::HostStatus::kRevoked);
}

TEST_F(SqliteStoreTest, SetHostStatusAndHeartbeatUpdateOnlyTheirFields) {
  ASSERT_TRUE(put(UpsertHost{makeHost("h1")}).status.ok());
  WriteResult r = put(SetHostStatus{"h1", model::HostStatus::kOffline, 7000});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.rows, 1);
  model::Metrics m{3, 2, 1, 100, 50, 1000, 500, 42};
  r = put(RecordHeartbeat{"h1", m, 8000});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.rows, 1);
  EXPECT_EQ(put(SetHostStatus{"ghost", model::HostStatus::kOnline, 1}).rows, 0);
  EXPECT_EQ(put(RecordHeartbeat{"ghost", m, 1}).rows, 0);

  auto hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  const model::Host& got = hosts->front();
  EXPECT_EQ(got.status, model::HostStatus::kOffline);
  EXPECT_EQ(got.status_changed_at_ms, 7000);
  EXPECT_EQ(got.last_seen_ms, 8000);
  EXPECT_EQ(got.metrics.load1, 3);
  EXPECT_EQ(got.metrics.uptime_seconds, 42u);
  EXPECT_EQ(got.facts, makeHost("h1").facts);
  EXPECT_EQ(got.credential_hash, "ab12");
}

TEST_F(SqliteStoreTest, InsertRunStoresRunAndCommands) {
  InsertRun run = makeRun("r1", "key-1", {{"c1", "h1"}, {"c2", "h2"}});
  WriteResult r = put(run);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 3);

  auto got_run = store_->getRun("r1");
  ASSERT_TRUE(got_run.ok());
  ASSERT_TRUE(got_run->has_value());
  EXPECT_EQ((*got_run)->idempotency_key, "key-1");
  EXPECT_EQ((*got_run)->request_fingerprint, "fp-r1");
  EXPECT_EQ((*got_run)->created_by, "alice");
  EXPECT_EQ((*got_run)->created_at_ms, 5);

  auto by_key = store_->findRunByIdempotencyKey("key-1");
  ASSERT_TRUE(by_key.ok());
  ASSERT_TRUE(by_key->has_value());
  EXPECT_EQ((*by_key)->id, "r1");
  EXPECT_FALSE(store_->findRunByIdempotencyKey("nope")->has_value());
  EXPECT_FALSE(store_->findRunByIdempotencyKey("")->has_value());
  EXPECT_FALSE(store_->getRun("r2")->has_value());

  for (const model::Command& want : run.commands) {
    auto got = store_->getCommand(want.id);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    expectSameCommand(**got, want);
  }
  EXPECT_FALSE(store_->getCommand("c9")->has_value());
}

TEST_F(SqliteStoreTest, InsertRunWithoutKeyAllowsManyRuns) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  ASSERT_TRUE(put(makeRun("r2", "", {{"c2", "h1"}})).status.ok());
  EXPECT_TRUE(store_->getRun("r2")->has_value());
}

TEST_F(SqliteStoreTest, InsertRunWithDuplicateKeyFailsAlreadyExistsAndWritesNothing) {
  ASSERT_TRUE(put(makeRun("r1", "key-1", {{"c1", "h1"}})).status.ok());
  WriteResult r = put(makeRun("r2", "key-1", {{"c2", "h1"}, {"c3", "h2"}}));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kAlreadyExists) << r.status;
  EXPECT_NE(r.status.message().find("key-1"), absl::string_view::npos) << r.status;
  EXPECT_EQ(r.rows, 0);
  EXPECT_FALSE(store_->getRun("r2")->has_value());
  EXPECT_FALSE(store_->getCommand("c2")->has_value());
  EXPECT_FALSE(store_->getCommand("c3")->has_value());
  EXPECT_EQ((*store_->findRunByIdempotencyKey("key-1"))->id, "r1");
}

TEST_F(SqliteStoreTest, InsertRunWithDuplicateCommandRollsBackItsRun) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  WriteResult r = put(makeRun("r2", "key-2", {{"c2", "h1"}, {"c1", "h2"}}));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kAlreadyExists) << r.status;
  EXPECT_FALSE(store_->getRun("r2")->has_value());
  EXPECT_FALSE(store_->getCommand("c2")->has_value());
  EXPECT_FALSE(store_->findRunByIdempotencyKey("key-2")->has_value());
}

TEST_F(SqliteStoreTest, InsertRunWithForeignCommandFailsInvalidArgument) {
  InsertRun run = makeRun("r1", "", {{"c1", "h1"}});
  run.commands[0].run_id = "other";
  EXPECT_EQ(put(run).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->getRun("r1")->has_value());
}

TEST_F(SqliteStoreTest, RunStoredInSlicesListsItsTargetsUntilTheLastSliceCommits) {
  InsertRun first = makeRun("r1", "", {{"c1", "h1"}});
  first.run.pending_targets = {"h1", "h2", "h3"};
  ASSERT_TRUE(put(first).status.ok());
  ASSERT_TRUE(put(makeRun("r0", "", {{"c0", "h1"}})).status.ok());  // a complete run
  auto incomplete = store_->loadIncompleteRuns();
  ASSERT_TRUE(incomplete.ok()) << incomplete.status();
  ASSERT_EQ(incomplete->size(), 1u);
  EXPECT_EQ((*incomplete)[0].id, "r1");
  EXPECT_EQ((*incomplete)[0].pending_targets, (std::vector<std::string>{"h1", "h2", "h3"}));

  InsertCommands middle{"r1", {makeCommand("c2", "r1", "h2")}, false};
  EXPECT_EQ(put(middle).rows, 1);
  EXPECT_EQ(store_->loadIncompleteRuns()->size(), 1u);
  // A slice is all or nothing: a duplicate id rolls back the whole slice and keeps the run
  // incomplete.
  InsertCommands bad{"r1", {makeCommand("c3", "r1", "h3"), makeCommand("c1", "r1", "h1")}, true};
  EXPECT_EQ(put(bad).status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(store_->getCommand("c3")->has_value());
  EXPECT_EQ(store_->loadIncompleteRuns()->size(), 1u);
  // A slice of another run is refused.
  InsertCommands foreign{"r1", {makeCommand("c3", "r0", "h3")}, true};
  EXPECT_EQ(put(foreign).status.code(), absl::StatusCode::kInvalidArgument);

  InsertCommands last{"r1", {makeCommand("c3", "r1", "h3")}, true};
  EXPECT_EQ(put(last).rows, 1);
  EXPECT_TRUE(store_->loadIncompleteRuns()->empty());
  EXPECT_TRUE((*store_->getRun("r1"))->pending_targets.empty());
  auto hosts = store_->runHostIds("r1");
  ASSERT_TRUE(hosts.ok());
  std::sort(hosts->begin(), hosts->end());
  EXPECT_EQ(*hosts, (std::vector<std::string>{"h1", "h2", "h3"}));
  // Completing a run that does not exist stores nothing.
  InsertCommands orphan{"nope", {makeCommand("c9", "nope", "h1")}, true};
  EXPECT_FALSE(put(orphan).status.ok());
  EXPECT_FALSE(store_->getCommand("c9")->has_value());
}

TEST_F(SqliteStoreTest, UpdateCommandReplacesMutableFields) {
  InsertRun run = makeRun("r1", "", {{"c1", "h1"}});
  ASSERT_TRUE(put(run).status.ok());
  model::Command c = run.commands[0];
  c.state = CommandState::kSucceeded;
  c.dispatched_at_ms = 100;
  c.started_at_ms = 110;
  c.finished_at_ms = 120;
  c.exit_code = 0;
  c.signal = 9;
  c.error = kAwkward;
  c.output_truncated = true;
  c.stdout_bytes = 5ull << 33;
  c.stderr_bytes = 7;
  c.cancel_requested = true;
  c.result_source = model::ResultSource::kAgent;
  WriteResult r = put(UpdateCommand{c, {CommandState::kQueued, CommandState::kRunning}});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 1);
  expectSameCommand(**store_->getCommand("c1"), c);

  c.exit_code.reset();
  c.result_source = model::ResultSource::kServer;
  r = put(UpdateCommand{c, {}});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.rows, 1);
  auto got = **store_->getCommand("c1");
  EXPECT_FALSE(got.exit_code.has_value());
  EXPECT_EQ(got.result_source, model::ResultSource::kServer);
}

TEST_F(SqliteStoreTest, UpdateCommandWithUnmetConditionChangesNothing) {
  InsertRun run = makeRun("r1", "", {{"c1", "h1"}});
  ASSERT_TRUE(put(run).status.ok());
  model::Command c = run.commands[0];
  c.state = CommandState::kFailed;
  c.error = "should not be stored";
  WriteResult r = put(UpdateCommand{c, {CommandState::kRunning, CommandState::kDispatched}});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 0);
  auto got = **store_->getCommand("c1");
  EXPECT_EQ(got.state, CommandState::kQueued);
  EXPECT_EQ(got.error, "");

  c.id = "missing";
  EXPECT_EQ(put(UpdateCommand{c, {}}).rows, 0);
}

TEST_F(SqliteStoreTest, InsertRunStoresEachCommandsOwnExecSpec) {
  InsertRun run = makeRun("r1", "", {{"c1", "h1"}, {"c2", "h2"}, {"c3", "h3"}});
  run.commands[0].exec.argv = {"echo", "a"};
  run.commands[1].exec.argv = {"echo", "b"};
  run.commands[1].exec.env = {{"K", "V"}};
  run.commands[2].exec.argv = {"echo", "a"};
  ASSERT_TRUE(put(run).status.ok());
  for (const model::Command& want : run.commands) {
    auto got = store_->getCommand(want.id);
    ASSERT_TRUE(got.ok() && got->has_value());
    expectSameCommand(**got, want);
  }
}

// Run `round` with `n` commands whose scripts are `script_bytes` long.
InsertRun bulkRun(int round, int n, size_t script_bytes) {
  std::vector<std::pair<std::string, std::string>> commands;
  for (int i = 0; i < n; ++i) {
    commands.emplace_back("c" + std::to_string(round) + "-" + std::to_string(i),
                          "h" + std::to_string(i));
  }
  InsertRun run = makeRun("r" + std::to_string(round), "", commands);
  for (auto& c : run.commands) c.exec.script = std::string(script_bytes, 'x');
  return run;
}

TEST_F(SqliteStoreTest, CheckpointThreadKeepsTheWalFromGrowing) {
  SqliteStoreOptions options;
  options.checkpoint_interval_ms = 5;
  reopen(options);
  const std::string wal = path_ + "-wal";
  uint64_t written_bytes = 0;
  for (int round = 0; round < 30; ++round) {
    ASSERT_TRUE(put(bulkRun(round, 300, 200)).status.ok());
    written_bytes += 300 * 200;
    // Let the checkpoint thread copy this round back before the next one.
    uint64_t seen = store_->checkpoints();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (store_->checkpoints() < seen + 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_GE(store_->checkpoints(), seen + 2) << "the checkpoint thread is not running";
  }
  // Without checkpoints the WAL would hold every round (more than the scripts alone); with
  // them it is reused from the start and stays near one round's size.
  ASSERT_TRUE(std::filesystem::exists(wal));
  EXPECT_LT(std::filesystem::file_size(wal), written_bytes / 4);
  EXPECT_EQ(rawQuery("SELECT count(*) FROM commands"), "9000");
}

TEST_F(SqliteStoreTest, WalIsRestartedWhenItOutgrowsTheRestartThreshold) {
  SqliteStoreOptions options;
  options.checkpoint_interval_ms = 3'600'000;  // the background thread stays out of it
  options.wal_restart_pages = 256;             // 1 MiB
  reopen(options);
  const std::string wal = path_ + "-wal";
  uint64_t written_bytes = 0;
  for (int round = 0; round < 40; ++round) {
    ASSERT_TRUE(put(bulkRun(round, 200, 500)).status.ok());  // one transaction per round
    written_bytes += 200 * 500;
  }
  // Without the writer's own checkpoint the WAL would hold all 40 rounds (more than the
  // scripts alone); with it, about the threshold plus one round.
  EXPECT_LT(std::filesystem::file_size(wal), written_bytes / 2);
  EXPECT_EQ(rawQuery("SELECT count(*) FROM commands"), "8000");
}

TEST_F(SqliteStoreTest, MarkDispatchedMovesOnlyQueuedCommands) {
  InsertRun run = makeRun("r1", "", {{"c1", "h1"}, {"c2", "h2"}, {"c3", "h3"}});
  ASSERT_TRUE(put(run).status.ok());
  model::Command c3 = run.commands[2];
  c3.state = CommandState::kSucceeded;
  ASSERT_EQ(put(UpdateCommand{c3, {}}).rows, 1);

  WriteResult r = put(MarkDispatched{{"c1", "c2", "c3", "missing"}, 77});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 2);
  EXPECT_EQ((**store_->getCommand("c1")).state, CommandState::kDispatched);
  EXPECT_EQ((**store_->getCommand("c2")).dispatched_at_ms, 77);
  EXPECT_EQ((**store_->getCommand("c3")).state, CommandState::kSucceeded);
  EXPECT_EQ((**store_->getCommand("c3")).dispatched_at_ms, 0);
}

TEST_F(SqliteStoreTest, AppendOutputKeepsTheLongestChunkAtAnOffset) {
  // Live output went out as "begin\n" and "end\n"; the second was lost with the link, and the
  // agent's replay merges both into one chunk at offset 0. Nothing of it may be dropped.
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  ASSERT_EQ(put(chunk("c1", OutputStream::kStdout, 0, "begin\n")).rows, 1);
  EXPECT_EQ(put(chunk("c1", OutputStream::kStdout, 0, "begin\nend\n")).rows, 1);
  EXPECT_EQ(put(chunk("c1", OutputStream::kStdout, 0, "begin\n")).rows, 0);  // shorter: kept
  EXPECT_EQ(put(chunk("c1", OutputStream::kStdout, 6, "end\n")).rows, 1);    // overlaps: fine
  auto out = store_->readOutput("c1", OutputStream::kStdout, 0, 1000);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].data, "begin\nend\n");
}

TEST_F(SqliteStoreTest, AppendOutputKeepsTheFirstChunkAtAnOffset) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  std::string binary("\0\xff\x01zz", 5);
  WriteResult r = put(chunk("c1", OutputStream::kStdout, 0, binary));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 1);
  r = put(chunk("c1", OutputStream::kStdout, 0, "other"));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.rows, 0);
  ASSERT_TRUE(put(chunk("c1", OutputStream::kStderr, 0, "err")).status.ok());
  ASSERT_TRUE(put(chunk("c1", OutputStream::kStdout, 5, "")).status.ok());

  auto out = store_->readOutput("c1", OutputStream::kStdout, 0, 1000);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].data, binary);
  EXPECT_EQ((*out)[0].command_id, "c1");
  EXPECT_EQ((*out)[0].stream, OutputStream::kStdout);
  EXPECT_EQ((*out)[1].offset, 5u);
  EXPECT_EQ((*out)[1].data, "");
  auto err = store_->readOutput("c1", OutputStream::kStderr, 0, 1000);
  ASSERT_EQ(err->size(), 1u);
  EXPECT_EQ((*err)[0].data, "err");
}

TEST_F(SqliteStoreTest, AppendOutputForUnknownCommandFailsNotFound) {
  WriteResult r = put(chunk("ghost", OutputStream::kStdout, 0, "x"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
}

TEST_F(SqliteStoreTest, ReadOutputStartsAtTheChunkHoldingTheOffset) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  for (uint64_t off : {0, 10, 20}) {
    ASSERT_TRUE(put(chunk("c1", OutputStream::kStdout, off, std::string(10, 'a'))).status.ok());
  }
  ASSERT_TRUE(put(chunk("c1", OutputStream::kStdout, 40, "tail!")).status.ok());
  auto offsets = [&](uint64_t from, uint64_t max) {
    std::vector<uint64_t> out;
    auto chunks = store_->readOutput("c1", OutputStream::kStdout, from, max);
    EXPECT_TRUE(chunks.ok()) << chunks.status();
    for (const auto& c : *chunks) out.push_back(c.offset);
    return out;
  };
  using V = std::vector<uint64_t>;
  EXPECT_EQ(offsets(0, 1000), (V{0, 10, 20, 40}));
  EXPECT_EQ(offsets(15, 1000), (V{10, 20, 40}));
  EXPECT_EQ(offsets(10, 1000), (V{10, 20, 40}));
  EXPECT_EQ(offsets(29, 1000), (V{20, 40}));
  EXPECT_EQ(offsets(30, 1000), (V{40}));  // in the gap: the first chunk after it
  EXPECT_EQ(offsets(44, 1000), (V{40}));
  EXPECT_EQ(offsets(45, 1000), V{});
  EXPECT_EQ(offsets(0, 15), (V{0, 10}));  // stops once 15 bytes are gathered
  EXPECT_EQ(offsets(0, 10), (V{0}));
  EXPECT_EQ(offsets(0, 1), (V{0}));  // never less than one chunk
  EXPECT_TRUE(store_->readOutput("c2", OutputStream::kStdout, 0, 100)->empty());
}

// A replay merged into a long chunk beside short live ones: the page that starts at 100 must
// start at the long chunk at 10 (which holds bytes 100..209), not at the short one at 20 (the
// last at or below 100, which ends at 30). Read that way, the bytes past 100 were skipped.
TEST_F(SqliteStoreTest, ReadOutputStartsAtTheFirstChunkCoveringTheOffsetWhenChunksNest) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  for (auto [off, len] : {std::pair<uint64_t, size_t>{0, 100}, {10, 200}, {20, 10}}) {
    ASSERT_TRUE(put(chunk("c1", OutputStream::kStdout, off, std::string(len, 'a'))).status.ok());
  }
  auto offsets = [&](uint64_t from) {
    std::vector<uint64_t> out;
    auto chunks = store_->readOutput("c1", OutputStream::kStdout, from, 1000);
    EXPECT_TRUE(chunks.ok()) << chunks.status();
    for (const auto& c : *chunks) out.push_back(c.offset);
    return out;
  };
  using V = std::vector<uint64_t>;
  EXPECT_EQ(offsets(100), (V{10, 20}));
  EXPECT_EQ(offsets(25), (V{0, 10, 20}));
  EXPECT_EQ(offsets(209), (V{10, 20}));
  EXPECT_EQ(offsets(210), V{});
}

TEST_F(SqliteStoreTest, EnrollTokensRoundTripAndConsumeUntilUsedUp) {
  EnrollToken limited{"t1", "hash-1", 2, 9000, {{"env", kAwkward}}, "admin", 100, false};
  EnrollToken unlimited{"t2", "hash-2", -1, 9000, {}, "admin", 200, false, "web-1"};
  ASSERT_TRUE(put(InsertEnrollToken{limited}).status.ok());
  ASSERT_TRUE(put(InsertEnrollToken{unlimited}).status.ok());
  EnrollToken same_hash = limited;
  same_hash.id = "t3";
  EXPECT_EQ(put(InsertEnrollToken{same_hash}).status.code(), absl::StatusCode::kAlreadyExists);

  EXPECT_EQ(put(ConsumeEnrollToken{"t1"}).rows, 1);
  EXPECT_EQ(put(ConsumeEnrollToken{"t1"}).rows, 1);
  EXPECT_EQ(put(ConsumeEnrollToken{"t1"}).rows, 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(put(ConsumeEnrollToken{"t2"}).rows, 1);
  EXPECT_EQ(put(ConsumeEnrollToken{"nope"}).rows, 0);

  auto found = store_->findEnrollTokenByHash("hash-1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, "t1");
  EXPECT_EQ((*found)->uses_left, 0);
  EXPECT_EQ((*found)->labels, limited.labels);
  EXPECT_EQ((*found)->expires_at_ms, 9000);
  EXPECT_EQ((*found)->created_by, "admin");
  EXPECT_FALSE((*found)->revoked);
  EXPECT_FALSE(store_->findEnrollTokenByHash("hash-9")->has_value());

  auto all = store_->listEnrollTokens();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "t1");
  EXPECT_EQ((*all)[1].id, "t2");
  EXPECT_EQ((*all)[1].uses_left, -1);
  EXPECT_EQ((*all)[0].host_id, "");
  EXPECT_EQ((*all)[1].host_id, "web-1");
}

// Commands of runs for kLargeRunHosts hosts or more stay out of the per-host index; listing a
// host's commands still finds them, merged with its other commands newest first.
TEST_F(SqliteStoreTest, ListingAHostsCommandsMergesLargeAndSmallRuns) {
  auto large = [](const std::string& run, const std::string& prefix) {
    std::vector<std::pair<std::string, std::string>> targets;
    for (int i = 0; i < 70; ++i) {
      targets.emplace_back(absl::StrCat(prefix, "-", 100 + i), absl::StrCat("h", 100 + i));
    }
    return makeRun(run, "", targets);
  };
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h100"}, {"c1-x", "h2"}})).status.ok());
  ASSERT_TRUE(put(large("r2", "c2")).status.ok());
  ASSERT_TRUE(put(makeRun("r3", "", {{"c3", "h100"}})).status.ok());
  // A large run stored in slices: the run row lists every target, the slices follow.
  InsertRun first = makeRun("r4", "", {{"c4-100", "h100"}});
  for (int i = 0; i < 70; ++i) first.run.pending_targets.push_back(absl::StrCat("h", 100 + i));
  ASSERT_TRUE(put(first).status.ok());
  InsertCommands rest{"r4", {}, true};
  for (int i = 1; i < 70; ++i) {
    rest.commands.push_back(
        makeCommand(absl::StrCat("c4-", 100 + i), "r4", absl::StrCat("h", 100 + i)));
  }
  ASSERT_TRUE(put(rest).status.ok());
  ASSERT_TRUE(put(makeRun("r5", "", {{"c5", "h100"}})).status.ok());
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM commands WHERE large_run = 1"), "140");
  EXPECT_EQ(rawQuery("SELECT host_count FROM runs WHERE id = 'r4'"), "70");

  auto ids = [&](CommandFilter f) {
    std::vector<std::string> out;
    auto cmds = store_->listCommands(f);
    EXPECT_TRUE(cmds.ok()) << cmds.status();
    if (cmds.ok()) {
      for (const auto& cmd : *cmds) out.push_back(cmd.id);
    }
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(where("", "h100")), (V{"c5", "c4-100", "c3", "c2-100", "c1"}));
  EXPECT_EQ(ids(where("", "h100", std::nullopt, "", 2)), (V{"c5", "c4-100"}));
  EXPECT_EQ(ids(where("", "h100", std::nullopt, "c4-100", 2)), (V{"c3", "c2-100"}));
  EXPECT_EQ(ids(where("", "h100", std::nullopt, "c2-100", 2)), (V{"c1"}));
  EXPECT_EQ(ids(where("", "h169")), (V{"c4-169", "c2-169"}));
  EXPECT_EQ(ids(where("r2", "h169")), (V{"c2-169"}));
  EXPECT_EQ(ids(where("", "h2")), (V{"c1-x"}));
  model::Command done = makeCommand("c2-100", "r2", "h100");
  done.state = CommandState::kFailed;
  ASSERT_EQ(put(UpdateCommand{done, {}}).rows, 1);
  EXPECT_EQ(ids(where("", "h100", CommandState::kFailed)), (V{"c2-100"}));
  EXPECT_EQ(ids(where("", "h100", CommandState::kQueued)), (V{"c5", "c4-100", "c3", "c1"}));
  // The statement listCommands runs reaches large runs through runs_large and the (run, host)
  // index, small ones through the per-host index, and never reads every command.
  auto plan = [&](const CommandFilter& f) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    const std::string sql = "EXPLAIN QUERY PLAN " + sqlite::listCommandsSql(f);
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    std::string out;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      out += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3));
      out += "\n";
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  };
  const std::string by_host = plan(where("", "h100"));
  EXPECT_NE(by_host.find("commands_host_id"), std::string::npos) << by_host;
  EXPECT_NE(by_host.find("runs_large"), std::string::npos) << by_host;
  EXPECT_NE(by_host.find("commands_large_run_host"), std::string::npos) << by_host;
  EXPECT_EQ(by_host.find("SCAN c\n"), std::string::npos) << by_host;
  const std::string in_run = plan(where("r2", "h100"));
  EXPECT_NE(in_run.find("commands_large_run_host"), std::string::npos) << in_run;
  EXPECT_EQ(in_run.find("runs_large"), std::string::npos) << in_run;
}

TEST_F(SqliteStoreTest, ListCommandsFiltersNewestFirstAndPaginates) {
  ASSERT_TRUE(put(makeRun("r1", "", {{"c01", "h1"}, {"c02", "h2"}, {"c03", "h1"}})).status.ok());
  ASSERT_TRUE(put(makeRun("r2", "", {{"c04", "h1"}, {"c05", "h2"}})).status.ok());
  model::Command c = makeCommand("c03", "r1", "h1");
  c.state = CommandState::kRunning;
  ASSERT_EQ(put(UpdateCommand{c, {}}).rows, 1);

  auto ids = [&](CommandFilter f) {
    std::vector<std::string> out;
    auto cmds = store_->listCommands(f);
    EXPECT_TRUE(cmds.ok()) << cmds.status();
    for (const auto& cmd : *cmds) out.push_back(cmd.id);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(where()), (V{"c05", "c04", "c03", "c02", "c01"}));
  EXPECT_EQ(ids(where("r1")), (V{"c03", "c02", "c01"}));
  EXPECT_EQ(ids(where("", "h1")), (V{"c04", "c03", "c01"}));
  EXPECT_EQ(ids(where("r1", "h1")), (V{"c03", "c01"}));
  EXPECT_EQ(ids(where("", "", CommandState::kQueued)), (V{"c05", "c04", "c02", "c01"}));
  EXPECT_EQ(ids(where("", "", CommandState::kRunning)), (V{"c03"}));
  EXPECT_EQ(ids(where("", "", std::nullopt, "c04", 2)), (V{"c03", "c02"}));
  EXPECT_EQ(ids(where("", "", std::nullopt, "c02", 2)), (V{"c01"}));
  EXPECT_EQ(ids(where("", "h2", std::nullopt, "c05")), (V{"c02"}));
  EXPECT_EQ(ids(where("", "", std::nullopt, "", 0)), (V{"c05"}));  // clamped to 1
  EXPECT_EQ(ids(where("", "", std::nullopt, "", 1'000'000)).size(), 5u);
  EXPECT_TRUE(ids(where("r9")).empty());

  auto open = store_->loadOpenCommands();
  ASSERT_TRUE(open.ok());
  EXPECT_EQ(open->size(), 5u);
  c.state = CommandState::kSucceeded;
  ASSERT_EQ(put(UpdateCommand{c, {}}).rows, 1);
  EXPECT_EQ(store_->loadOpenCommands()->size(), 4u);
}

}  // namespace
}  // namespace muster::store::test
