// Shared fixture and builders of the SqliteStore tests: a fresh database in a temp directory.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/sqlite/sqlite_store.h"

namespace muster::store::test {

using model::CommandState;
using model::OutputStream;

using model::CommandState;
using model::OutputStream;

// Bytes that a careless encoder would mangle: quotes, backslashes, controls, NUL, non-UTF-8.
inline const std::string kAwkward =
    std::string("q\"b\\n\nt\tz") + '\0' + "\x01\x7f\xff\xfe é 日本 🚀";

inline model::Host makeHost(const std::string& id) {
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
  h.pinned_labels = {"env", kAwkward};
  h.enroll_attempt_hash = "cd34";
  return h;
}

inline model::Command makeCommand(const std::string& id, const std::string& run_id,
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

inline InsertRun makeRun(const std::string& run_id, const std::string& key,
                         const std::vector<std::pair<std::string, std::string>>& commands) {
  InsertRun m;
  m.run = Run{run_id, key, "fp-" + run_id, "alice", 5, {}};
  for (const auto& [id, host] : commands) m.commands.push_back(makeCommand(id, run_id, host));
  return m;
}

inline void expectSameCommand(const model::Command& a, const model::Command& b) {
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

inline CommandFilter where(std::string run_id = "", std::string host_id = "",
                           std::optional<CommandState> state = std::nullopt,
                           std::string before_id = "", int limit = 100) {
  CommandFilter f;
  f.run_id = std::move(run_id);
  f.host_id = std::move(host_id);
  f.state = state;
  f.before_id = std::move(before_id);
  f.limit = limit;
  return f;
}

inline AppendOutput chunk(const std::string& command_id, OutputStream stream, uint64_t offset,
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

}  // namespace muster::store::test
