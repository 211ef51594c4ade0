// Tests of SqliteStore's writer and lifecycle: batching, isolation, flush, reopen, migrations.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sqlite_store_fixture.h"

namespace muster::store::test {
namespace {

// The schema version a freshly opened store has (migrations.cc's last migration).
constexpr char kLatest[] = "8";

// An EventQuery with only what a test sets (designated initializers warn about the rest).
struct Q {
  model::EventQuery q;
  Q& kind(std::string v) {
    q.kind = std::move(v);
    return *this;
  }
  Q& host(std::string v) {
    q.host_id = std::move(v);
    return *this;
  }
  Q& actor(std::string v) {
    q.actor = std::move(v);
    return *this;
  }
  Q& since(int64_t v) {
    q.since_ms = v;
    return *this;
  }
  Q& until(int64_t v) {
    q.until_ms = v;
    return *this;
  }
  Q& before(std::string v) {
    q.before_id = std::move(v);
    return *this;
  }
  Q& after(std::string v) {
    q.after_id = std::move(v);
    return *this;
  }
  Q& limit(int v) {
    q.limit = v;
    return *this;
  }
  operator model::EventQuery() const { return q; }
};

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
  // One row per migration, each applied once.
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM schema_migrations"), kLatest);
  EXPECT_EQ(rawQuery("SELECT COUNT(DISTINCT version) FROM schema_migrations"), kLatest);
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  EXPECT_EQ(rawQuery("PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(store_->ping().ok());
}

// Turns the freshly migrated database back into a version-4 one (before host-bound tokens and
// pinned labels) or a version-3 one (before large runs left the per-host index).
class SqliteStoreUpgradeTest : public SqliteStoreTest {
 protected:
  void downgradeToVersion7() {
    store_.reset();
    rawQuery("ALTER TABLE commands DROP COLUMN artifacts");
    rawQuery("DELETE FROM schema_migrations WHERE version = 8");
  }
  void downgradeToVersion6() {
    downgradeToVersion7();
    rawQuery("ALTER TABLE hosts DROP COLUMN client_cert_sha256");
    rawQuery("ALTER TABLE hosts DROP COLUMN client_cert_not_after_ms");
    rawQuery("ALTER TABLE hosts DROP COLUMN prev_client_cert_sha256");
    rawQuery("DELETE FROM schema_migrations WHERE version = 7");
  }
  void downgradeToVersion5() {
    downgradeToVersion6();
    rawQuery("DROP TABLE events");
    rawQuery("DELETE FROM schema_migrations WHERE version = 6");
  }
  void downgradeToVersion4() {
    downgradeToVersion5();
    rawQuery("ALTER TABLE enroll_tokens DROP COLUMN host_id");
    rawQuery("ALTER TABLE hosts DROP COLUMN pinned_labels");
    rawQuery("ALTER TABLE hosts DROP COLUMN enroll_attempt_hash");
    rawQuery("ALTER TABLE commands DROP COLUMN exec_secret_env");
    rawQuery("DELETE FROM schema_migrations WHERE version = 5");
  }
  void downgradeToVersion3() {
    downgradeToVersion4();
    rawQuery("DROP INDEX runs_large");
    rawQuery("DROP INDEX commands_large_run_host");
    rawQuery("DROP INDEX commands_host_id");
    rawQuery("CREATE INDEX commands_host_id ON commands (host_id, id)");
    rawQuery("ALTER TABLE commands DROP COLUMN large_run");
    rawQuery("ALTER TABLE runs DROP COLUMN host_count");
    rawQuery("DELETE FROM schema_migrations WHERE version = 4");
  }
};

TEST_F(SqliteStoreUpgradeTest, FromVersion7GivesCommandsNoArtifactExpectations) {
  ASSERT_TRUE(put(UpsertHost{makeHost("h1")}).status.ok());
  ASSERT_TRUE(put(makeRun("r1", "", {{"c1", "h1"}})).status.ok());
  downgradeToVersion7();
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  auto got = store_->getCommand("c1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_TRUE((*got)->artifacts.empty());
  // New commands keep theirs.
  model::Command d = makeCommand("c2", "r1", "h1");
  d.artifacts = {{.direction = model::TransferDirection::kDownload,
                  .purpose = model::ArtifactPurpose::kPackage,
                  .artifact_id = "01JA",
                  .device = "bmc",
                  .max_bytes = 9,
                  .sha256 = std::string(64, 'e'),
                  .size = 7}};
  ASSERT_TRUE(put(InsertCommands{"r1", {d}}).status.ok());
  got = store_->getCommand("c2");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->artifacts, d.artifacts);
}

TEST_F(SqliteStoreUpgradeTest, FromVersion6GivesHostsNoClientCertificate) {
  model::Host h = makeHost("h1");
  h.credential_hash = "c1";
  ASSERT_TRUE(put(UpsertHost{h}).status.ok());
  downgradeToVersion6();
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  auto hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].credential_hash, "c1");
  EXPECT_EQ((*hosts)[0].client_cert_sha256, "");
  EXPECT_EQ((*hosts)[0].client_cert_not_after_ms, 0);
  // And the new columns round-trip.
  h.client_cert_sha256 = "aa";
  h.client_cert_not_after_ms = 42;
  h.prev_client_cert_sha256 = "bb";
  ASSERT_TRUE(put(UpsertHost{h}).status.ok());
  reopen();
  hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_EQ((*hosts)[0].client_cert_sha256, "aa");
  EXPECT_EQ((*hosts)[0].client_cert_not_after_ms, 42);
  EXPECT_EQ((*hosts)[0].prev_client_cert_sha256, "bb");
}

TEST_F(SqliteStoreUpgradeTest, FromVersion5AddsAnEmptyEventsTable) {
  ASSERT_TRUE(put(UpsertHost{makeHost("h1")}).status.ok());
  downgradeToVersion5();
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM events"), "0");
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM hosts"), "1");
  model::Event e{.id = "01E",
                 .at_ms = 5,
                 .kind = "link.enrolled",
                 .actor = "h1",
                 .actor_id = "",
                 .source = "",
                 .target = "h1",
                 .host_id = "h1",
                 .result = "ok",
                 .detail = {}};
  ASSERT_TRUE(put(InsertEvent{e}).status.ok());
  auto page = store_->listEvents(Q().kind("link"));
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 1u);
}

TEST_F(SqliteStoreUpgradeTest, FromVersion3ListsAHostsOldAndNewCommandsOfLargeRuns) {
  // A version-3 database holding a large run stored the old way (in the per-host index).
  downgradeToVersion3();
  rawQuery("INSERT INTO runs (id, created_by, created_at_ms) VALUES ('r1', 'bob', 7)");
  for (int i = 0; i < 70; ++i) {
    rawQuery(absl::StrCat("INSERT INTO commands (id, run_id, host_id, state) VALUES ('c1-", 100 + i,
                          "', 'r1', 'h", i, "', 'succeeded')"));
  }
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  // Stored before: still in the per-host index.
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM commands WHERE large_run = 1"), "0");
  std::vector<std::pair<std::string, std::string>> targets;
  for (int i = 0; i < 70; ++i)
    targets.emplace_back(absl::StrCat("c2-", 100 + i), absl::StrCat("h", i));
  ASSERT_TRUE(put(makeRun("r2", "", targets)).status.ok());
  EXPECT_EQ(rawQuery("SELECT COUNT(*) FROM commands WHERE large_run = 1"), "70");
  auto listed = store_->listCommands(where("", "h5"));
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "c2-105");
  EXPECT_EQ((*listed)[1].id, "c1-105");
  EXPECT_EQ((*listed)[1].state, CommandState::kSucceeded);
}

TEST_F(SqliteStoreUpgradeTest, FromVersion2KeepsRunsAndMarksThemComplete) {
  // A version-2 database: no runs.pending_targets yet, one stored run.
  downgradeToVersion3();
  rawQuery("DROP INDEX runs_incomplete");
  rawQuery("ALTER TABLE runs DROP COLUMN pending_targets");
  rawQuery("DELETE FROM schema_migrations WHERE version = 3");
  rawQuery("INSERT INTO runs (id, created_by, created_at_ms) VALUES ('old', 'bob', 7)");
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  auto run = store_->getRun("old");
  ASSERT_TRUE(run.ok() && run->has_value()) << run.status();
  EXPECT_EQ((*run)->created_by, "bob");
  EXPECT_TRUE((*run)->pending_targets.empty());
  EXPECT_TRUE(store_->loadIncompleteRuns()->empty());
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

TEST_F(SqliteStoreUpgradeTest, FromVersion4KeepsHostsAndTokensUnboundAndUnpinned) {
  ASSERT_TRUE(put(UpsertHost{[] {
                model::Host h;
                h.id = "h1";
                h.labels = {{"env", "prod"}};
                h.pinned_labels = {"env"};
                return h;
              }()})
                  .status.ok());
  downgradeToVersion4();
  rawQuery("INSERT INTO enroll_tokens (id, token_hash, uses_left) VALUES ('t-old', 'hash-old', 1)");
  reopen();
  EXPECT_EQ(rawQuery("SELECT MAX(version) FROM schema_migrations"), kLatest);
  auto hosts = store_->loadHosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].labels.at("env"), "prod");
  EXPECT_TRUE((*hosts)[0].pinned_labels.empty());
  auto token = store_->findEnrollTokenByHash("hash-old");
  ASSERT_TRUE(token.ok()) << token.status();
  ASSERT_TRUE(token->has_value());
  EXPECT_EQ((*token)->host_id, "");
}

}  // namespace
}  // namespace muster::store::test

namespace muster::store::test {
namespace {

class SqliteStoreEventsTest : public SqliteStoreTest {
 protected:
  void putEvent(const std::string& id, int64_t at, const std::string& kind,
                const std::string& host = "", const std::string& actor = "") {
    model::Event e{.id = id,
                   .at_ms = at,
                   .kind = kind,
                   .actor = actor,
                   .actor_id = "",
                   .source = "",
                   .target = "t",
                   .host_id = host,
                   .result = "ok",
                   .detail = {{"k", "v\"\n"}}};
    ASSERT_TRUE(put(InsertEvent{e}).status.ok());
  }
  std::vector<std::string> ids(model::EventQuery q) {
    auto page = store_->listEvents(q);
    EXPECT_TRUE(page.ok()) << page.status();
    std::vector<std::string> out;
    if (page.ok()) {
      for (const auto& e : *page) out.push_back(e.id);
    }
    return out;
  }
};

TEST_F(SqliteStoreEventsTest, FiltersByKindFamilyHostActorTimeAndCursor) {
  putEvent("E1", 100, "link.enrolled", "h1", "h1");
  putEvent("E2", 200, "link.credential_rotated", "h1", "h1");
  putEvent("E3", 300, "linkage.x", "h2", "h2");  // not in the "link" family
  putEvent("E4", 400, "api.token.create", "", "admin");
  putEvent("E5", 500, "api.token_x", "", "admin");  // not in "api.token"
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(Q().kind("link")), (V{"E2", "E1"}));
  EXPECT_EQ(ids(Q().kind("link.credential_rotated")), (V{"E2"}));
  EXPECT_EQ(ids(Q().kind("api.token")), (V{"E4"}));
  EXPECT_EQ(ids(Q().kind("api")), (V{"E5", "E4"}));
  EXPECT_EQ(ids(Q().host("h1")), (V{"E2", "E1"}));
  EXPECT_EQ(ids(Q().actor("admin")), (V{"E5", "E4"}));
  EXPECT_EQ(ids(Q().since(200).until(400)), (V{"E3", "E2"}));
  EXPECT_EQ(ids(Q().before("E3").limit(1)), (V{"E2"}));
  EXPECT_EQ(ids(Q().after("E3")), (V{"E4", "E5"}));  // oldest first
  auto one = store_->listEvents(Q().kind("link.enrolled"));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ((*one)[0].detail.at("k"), "v\"\n");
}

TEST_F(SqliteStoreEventsTest, SweepDeletesTheOldestInBoundedBatches) {
  for (int i = 0; i < 25; ++i) putEvent(absl::StrCat("E", 100 + i), i, "api.host.delete");
  auto r = put(DeleteEventsBefore{.before_ms = 20, .max_rows = 8});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.rows, 8);
  EXPECT_EQ(ids(Q().limit(1000)).size(), 17u);
  EXPECT_EQ(put(DeleteEventsBefore{.before_ms = 20, .max_rows = 100}).rows, 12);
  auto left = ids(Q().limit(1000));
  ASSERT_EQ(left.size(), 5u);
  EXPECT_EQ(left.back(), "E120");
}

}  // namespace
}  // namespace muster::store::test
