// The writer thread of the SQLite store: batch, BEGIN IMMEDIATE, savepoint per mutation, COMMIT.
#include "store/sqlite/group_commit.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/log.h"
#include "store/sqlite/mutations.h"

namespace muster::store::sqlite {

GroupCommitWriter::GroupCommitWriter(std::unique_ptr<Connection> conn, size_t max_batch)
    : conn_(std::move(conn)), max_batch_(std::max<size_t>(max_batch, 1)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "sqlite-writer");
}

GroupCommitWriter::~GroupCommitWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

void GroupCommitWriter::submit(Mutation mutation, WriteDone done) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Pending{std::move(mutation), std::move(done)});
    ++submitted_;
  }
  work_cv_.notify_one();
}

absl::Status GroupCommitWriter::flush() {
  if (std::this_thread::get_id() == thread_.get_id()) {
    MUSTER_BUG("SqliteStore::flush() called from a write callback; it would wait for itself");
    return absl::FailedPreconditionError("flush() called on the store's writer thread");
  }
  std::unique_lock lock(mu_);
  const uint64_t target = submitted_;
  const uint64_t failed_before = stats_.failed_transactions;
  processed_cv_.wait(lock,
                     [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return processed_ >= target; });
  if (stats_.failed_transactions != failed_before) return last_failure_;
  return absl::OkStatus();
}

size_t GroupCommitWriter::pending() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(submitted_ - processed_);
}

StoreStats GroupCommitWriter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

absl::Status GroupCommitWriter::execCached(const char* sql) {
  auto stmt = conn_->prepare(sql);
  if (!stmt.ok()) return stmt.status();
  return stmt->run();
}

void GroupCommitWriter::run() {
  std::vector<Pending> batch;
  std::vector<WriteResult> results;
  for (;;) {
    batch.clear();
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_;
      });
      if (queue_.empty()) return;  // stopping, and everything queued is applied
      size_t n = std::min(queue_.size(), max_batch_);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }

    results.assign(batch.size(), WriteResult{});
    auto started = std::chrono::steady_clock::now();
    absl::Status txn = commitBatch(batch, results);
    double elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
    {
      std::lock_guard lock(mu_);
      stats_.mutations += batch.size();
      stats_.last_batch_size = batch.size();
      stats_.last_commit_ms = elapsed_ms;
      if (txn.ok()) {
        ++stats_.transactions;
      } else {
        ++stats_.failed_transactions;
        last_failure_ = txn;
      }
    }
    if (!txn.ok()) spdlog::error("{}", std::string(txn.message()));

    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].done) continue;
      try {
        batch[i].done(std::move(results[i]));
      } catch (const std::exception& e) {
        MUSTER_BUG(absl::StrCat("store write callback threw: ", e.what()));
      } catch (...) {
        MUSTER_BUG("store write callback threw a non-standard exception");
      }
    }
    batch.clear();  // callbacks may own resources; release them before waking flush()

    {
      std::lock_guard lock(mu_);
      processed_ += results.size();
    }
    processed_cv_.notify_all();
  }
}

absl::Status GroupCommitWriter::commitBatch(std::vector<Pending>& batch,
                                            std::vector<WriteResult>& results) {
  absl::Status txn = execCached("BEGIN IMMEDIATE");
  for (size_t i = 0; txn.ok() && i < batch.size(); ++i) {
    // A failed statement undoes its own changes (SQLite's statement rollback), so only a
    // mutation of several statements needs a savepoint to fail as a whole; skipping it for
    // the rest saves ~10% of the writer's time.
    const bool savepoint = !isSingleStatement(batch[i].mutation);
    if (savepoint) txn = execCached("SAVEPOINT mutation");
    if (!txn.ok()) break;
    auto rows = applyMutation(*conn_, batch[i].mutation);
    if (rows.ok()) {
      results[i].rows = *rows;
      if (savepoint) txn = execCached("RELEASE mutation");
      continue;
    }
    results[i].status = rows.status();
    if (!conn_->inTransaction()) {
      // SQLite rolled the whole transaction back (disk full, I/O error): nothing survived.
      txn = rows.status();
      break;
    }
    if (savepoint) {
      txn = execCached("ROLLBACK TO mutation");
      if (txn.ok()) txn = execCached("RELEASE mutation");
    }
  }
  if (txn.ok()) txn = execCached("COMMIT");
  if (txn.ok()) return txn;

  if (conn_->inTransaction()) (void)execCached("ROLLBACK");
  txn = annotate(
      txn, absl::StrCat("database ", conn_->path(), ": a transaction of ", batch.size(),
                        batch.size() == 1 ? " write" : " writes", " failed and was rolled back"));
  for (WriteResult& r : results) r = WriteResult{txn, 0};
  return txn;
}

}  // namespace muster::store::sqlite
