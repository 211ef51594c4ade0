// Group commit: one writer thread owns the write connection and turns everything queued into
// one transaction (one fsync), isolating each mutation's failure with a savepoint.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "store/sqlite/connection.h"
#include "store/store.h"

namespace muster::store::sqlite {

class GroupCommitWriter {
 public:
  static constexpr size_t kDefaultMaxBatch = 4096;

  // Starts the writer thread; `conn` must be migrated already.
  GroupCommitWriter(std::unique_ptr<Connection> conn, size_t max_batch = kDefaultMaxBatch);
  // Applies everything still queued, then stops the thread.
  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // Never blocks on I/O. `done` runs on the writer thread once the batch is committed (or
  // failed); it must not wait for the store (flush, writeAndWait) or it waits for itself.
  void submit(Mutation mutation, WriteDone done);
  // Waits until everything submitted before the call was committed and its `done` ran.
  // Fails with the error of a transaction that failed meanwhile.
  absl::Status flush();
  StoreStats stats() const;
  // Submitted and not yet applied.
  size_t pending() const;

 private:
  struct Pending {
    Mutation mutation;
    WriteDone done;
  };

  void run();
  // One transaction; fills `results` (same order as `batch`). Returns the transaction's
  // status: when it failed, every result carries that error.
  absl::Status commitBatch(std::vector<Pending>& batch, std::vector<WriteResult>& results);
  // Runs a cached no-result statement (BEGIN, SAVEPOINT, ...).
  absl::Status execCached(const char* sql);

  std::unique_ptr<Connection> conn_;  // writer thread only
  const size_t max_batch_;

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees through it with the system absl.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;       // queue not empty, or stopping
  std::condition_variable processed_cv_;  // processed_ advanced
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;  // mutations ever submitted
  uint64_t processed_ ABSL_GUARDED_BY(mu_) = 0;  // of those, committed or failed, done run
  absl::Status last_failure_ ABSL_GUARDED_BY(mu_);
  StoreStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace muster::store::sqlite
