// Tests of SqliteStore against a real SQLite file in a temporary directory.
#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <future>
#include <string>

#include "absl/strings/str_cat.h"

namespace muster::store {
namespace {

using model::CommandState;
using model::OutputStream;

// Bytes that a careless encoder would mangle: quotes, backslashes, controls, NUL, non-UTF-8.
const std::string kAwkward = std::string("q\"b\\n\nt\tz") + '\0' + "\x01\x7f\xff\xfe é 日本 🚀";

model::Host makeHost(const std::string& id) {
  model::Host h;
  h.id = id;
  h.status = model::HostStatus::kOnline;
  h.version = "1.2.3";
  h.facts = {{"os", "debian"}, {"weird", kAwkward}, {kAwkward, "key too"}, {"empty", ""}};
  h.labels = {{"env", "prod"}, {"team/role", "db"}};
  h.metrics = {0.5, 1.25, 2.0, 16ull << 30, 8ull << 30, 1ull << 40, 1ull << 39, 123456};
  h.enrolled_at_ms = 1000;
  h.last_seen_ms = 2000;
  h.status_changed_at_ms = 1500;
  h.credential_hash = "ab12";
  return h;
}

model::Command makeCommand(const std::string& id, const std::string& run_id,
                           const std::string& host_id) {
  model::Command c;
  c.id = id;
  c.run_id = run_id;
  c.host_id = host_id;
  c.exec.argv = {"/bin/echo", kAwkward, ""};
  c.exec.script = "echo hi\n";
  c.exec.env = {{"A", "1"}, {"B", kAwkward}};
  c.exec.cwd = "/tmp";
  c.exec.timeout_ms = 60000;
  c.exec.kill_grace_ms = 5000;
  c.idempotency_key = "k-" + id;
  c.created_by = "alice";
  c.created_at_ms = 10;
  c.expires_at_ms = 20;
  return c;
}

InsertRun makeRun(const std::string& run_id, const std::string& key,
                  const std::vector<std::pair<std::string, std::string>>& commands) {
  InsertRun m;
  m.run = Run{run_id, key, "fp-" + run_id, "alice", 5};
  for (const auto& [id, host] : commands) m.commands.push_back(makeCommand(id, run_id, host));
  return m;
}

void expectSameCommand(const model::Command& a, const model::Command& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.run_id, b.run_id);
  EXPECT_EQ(a.host_id, b.host_id);
  EXPECT_EQ(a.exec.argv, b.exec.argv);
  EXPECT_EQ(a.exec.script, b.exec.script);
  EXPECT_EQ(a.exec.env, b.exec.env);
  EXPECT_EQ(a.exec.cwd, b.exec.cwd);
  EXPECT_EQ(a.exec.timeout_ms, b.exec.timeout_ms);
  EXPECT_EQ(a.exec.kill_grace_ms, b.exec.kill_grace_ms);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.created_by, b.created_by);
  EXPECT_EQ(a.created_at_ms, b.created_at_ms);
  EXPECT_EQ(a.expires_at_ms, b.expires_at_ms);
  EXPECT_EQ(a.dispatched_at_ms, b.dispatched_at_ms);
  EXPECT_EQ(a.started_at_ms, b.started_at_ms);
  EXPECT_EQ(a.finished_at_ms, b.finished_at_ms);
  EXPECT_EQ(a.exit_code, b.exit_code);
  EXPECT_EQ(a.signal, b.signal);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.output_truncated, b.output_truncated);
  EXPECT_EQ(a.stdout_bytes, b.stdout_bytes);
  EXPECT_EQ(a.stderr_bytes, b.stderr_bytes);
  EXPECT_EQ(a.cancel_requested, b.cancel_requested);
  EXPECT_EQ(a.result_source, b.result_source);
}

CommandFilter where(std::string run_id = "", std::string host_id = "",
                    std::optional<CommandState> state = std::nullopt, std::string before_id = "",
                    int limit = 100) {
  CommandFilter f;
  f.run_id = std::move(run_id);
  f.host_id = std::move(host_id);
  f.state = state;
  f.before_id = std::move(before_id);
  f.limit = limit;
  return f;
}

AppendOutput chunk(const std::string& command_id, OutputStream stream, uint64_t offset,
                   std::string data) {
  return AppendOutput{model::OutputChunk{command_id, stream, offset, std::move(data)}};
}

// Keeps the writer thread inside a `done` callback until release(), so that later writes
// pile up in the queue and are committed together.
class WriterGate {
 public:
  explicit WriterGate(Store& store) {
    auto released = release_.get_future().share();
    store.write(SetHostStatus{"no-such-host", model::HostStatus::kOffline, 0},
                [this, released](WriteResult) {
                  entered_.set_value();
                  released.wait();
                });
    entered_.get_future().wait();
  }
  void release() { release_.set_value(); }

 private:
  std::promise<void> entered_;
  std::promise<void> release_;
};

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sqlite_store_test.XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/muster.db";
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void reopen(const SqliteStoreOptions& options = {}) {
    store_.reset();
    auto opened = SqliteStore::open(path_, options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(*opened);
  }

  WriteResult put(Mutation m) { return store_->writeAndWait(std::move(m)); }

  // Runs `sql` on a connection of the test's own and returns the first column as text.
  std::string rawQuery(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    std::string out;
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<SqliteStore> store_;
};

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

TEST_F(SqliteStoreTest, FailedMutationDoesNotPoisonItsBatch) {
  ASSERT_TRUE(put(makeRun("r1", "key-1", {{"c1", "h1"}})).status.ok());
  std::vector<WriteResult> results(5);
  {
    WriterGate gate(*store_);
    store_->write(makeRun("r2", "", {{"c2", "h1"}}), [&](WriteResult r) { results[0] = r; });
    store_->write(makeRun("r3", "key-1", {{"c3", "h1"}}), [&](WriteResult r) { results[1] = r; });
    store_->write(chunk("c1", OutputStream::kStdout, 0, "hello"),
                  [&](WriteResult r) { results[2] = r; });
    store_->write(chunk("ghost", OutputStream::kStdout, 0, "x"),
                  [&](WriteResult r) { results[3] = r; });
    store_->write(chunk("c2", OutputStream::kStdout, 0, "after"),
                  [&](WriteResult r) { results[4] = r; });
    gate.release();
    ASSERT_TRUE(store_->flush().ok());
  }
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
  EXPECT_EQ(results[3].status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(results[4].status.ok()) << results[4].status;
  EXPECT_EQ(store_->stats().last_batch_size, 5u);
  EXPECT_EQ(store_->readOutput("c2", OutputStream::kStdout, 0, 100)->size(), 1u);
  EXPECT_TRUE(store_->getCommand("c2")->has_value());
  EXPECT_FALSE(store_->getCommand("c3")->has_value());
  EXPECT_EQ(store_->readOutput("c1", OutputStream::kStdout, 0, 100)->size(), 1u);
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

TEST_F(SqliteStoreTest, EnrollTokensRoundTripAndConsumeUntilUsedUp) {
  EnrollToken limited{"t1", "hash-1", 2, 9000, {{"env", kAwkward}}, "admin", 100, false};
  EnrollToken unlimited{"t2", "hash-2", -1, 9000, {}, "admin", 200, false};
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

TEST_F(SqliteStoreTest, ManyQueuedWritesCommitInFewTransactions) {
  constexpr int kCommands = 100;
  std::vector<std::pair<std::string, std::string>> cmds;
  for (int i = 0; i < kCommands; ++i) cmds.push_back({absl::StrCat("c", 1000 + i), "h1"});
  InsertRun run = makeRun("r1", "", cmds);
  ASSERT_TRUE(put(run).status.ok());
  StoreStats before = store_->stats();

  constexpr int kWrites = 10'000;
  std::atomic<int> ok{0};
  auto count = [&ok](WriteResult r) {
    if (r.status.ok() && r.rows == 1) ok.fetch_add(1);
  };
  {
    WriterGate gate(*store_);
    for (int i = 0; i < kWrites / 2; ++i) {
      model::Command c = run.commands[i % kCommands];
      c.state = CommandState::kRunning;
      c.stdout_bytes = static_cast<uint64_t>(i);
      store_->write(UpdateCommand{c, {}}, count);
      store_->write(chunk(c.id, OutputStream::kStdout, static_cast<uint64_t>(i), "x"), count);
    }
    gate.release();
    ASSERT_TRUE(store_->flush().ok());
  }
  EXPECT_EQ(ok.load(), kWrites);
  StoreStats after = store_->stats();
  uint64_t transactions = after.transactions - before.transactions;
  uint64_t mutations = after.mutations - before.mutations;
  EXPECT_EQ(mutations, kWrites + 1u);  // + the gate's write
  EXPECT_LE(transactions, 5u) << "batches: 1 (gate) + ceil(10000 / 4096)";
  EXPECT_EQ(after.failed_transactions, 0u);
  std::printf("10000 writes in %llu transactions, last batch %llu in %.2f ms\n",
              static_cast<unsigned long long>(transactions),
              static_cast<unsigned long long>(after.last_batch_size), after.last_commit_ms);
  EXPECT_EQ((**store_->getCommand("c1099")).stdout_bytes, 4999u);
}

TEST_F(SqliteStoreTest, FlushWaitsForCallbacksOfEarlierWrites) {
  std::atomic<int> called{0};
  for (int i = 0; i < 100; ++i) {
    store_->write(UpsertHost{makeHost(absl::StrCat("h", i))}, [&](WriteResult) { ++called; });
  }
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(called.load(), 100);
  EXPECT_EQ(store_->loadHosts()->size(), 100u);
}

TEST_F(SqliteStoreTest, CloseDrainsQueueAndReopenKeepsData) {
  ASSERT_TRUE(put(makeRun("r1", "key", {{"c1", "h1"}})).status.ok());
  for (int i = 0; i < 500; ++i) {
    store_->write(UpsertHost{makeHost(absl::StrCat("h", i))}, nullptr);
  }
  reopen();  // destroys the store without a flush
  EXPECT_EQ(store_->loadHosts()->size(), 500u);
  EXPECT_TRUE(store_->getCommand("c1")->has_value());
  EXPECT_EQ((*store_->findRunByIdempotencyKey("key"))->id, "r1");
  EXPECT_TRUE(store_->ping().ok());
}

TEST_F(SqliteStoreTest, OpenAppliesMigrationsOnce) {
  reopen();
  reopen();
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM schema_migrations"), "1");
  EXPECT_EQ(rawQuery("SELECT version FROM schema_migrations"), "1");
  EXPECT_EQ(rawQuery("PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(store_->ping().ok());
}

TEST_F(SqliteStoreTest, OpenRefusesNewerSchema) {
  store_.reset();
  rawQuery("INSERT INTO schema_migrations VALUES (99, 'from the future', 0) RETURNING version");
  ASSERT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), "99");
  auto opened = SqliteStore::open(path_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(opened.status().message().find("schema version 99"), absl::string_view::npos)
      << opened.status();
}

TEST_F(SqliteStoreTest, OpenFailsUnavailableInMissingDirectory) {
  auto opened = SqliteStore::open(dir_ + "/missing/muster.db");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kUnavailable) << opened.status();
}

TEST_F(SqliteStoreTest, LockedDatabaseFailsTheWholeBatchUnavailable) {
  SqliteStoreOptions options;
  options.busy_timeout_ms = 50;
  reopen(options);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::vector<WriteResult> results(2);
  {
    WriterGate gate(*store_);
    store_->write(UpsertHost{makeHost("h1")}, [&](WriteResult r) { results[0] = r; });
    store_->write(UpsertHost{makeHost("h2")}, [&](WriteResult r) { results[1] = r; });
    gate.release();
    absl::Status flushed = store_->flush();
    EXPECT_EQ(flushed.code(), absl::StatusCode::kUnavailable) << flushed;
  }
  for (const WriteResult& r : results) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  }
  EXPECT_GE(store_->stats().failed_transactions, 1u);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  ASSERT_TRUE(put(UpsertHost{makeHost("h3")}).status.ok());  // the store recovers
  EXPECT_EQ(store_->loadHosts()->size(), 1u);
}

}  // namespace
}  // namespace muster::store
