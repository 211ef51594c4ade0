// Copies the WAL back into the database file on its own thread and connection, so that the
// writer's COMMIT never runs a checkpoint (SQLite's automatic one runs inside the COMMIT that
// crosses 1,000 WAL pages: a page copy and an fsync of the database file that every caller
// waiting on that commit — a run being created, results waiting for their ack — would pay).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "store/sqlite/connection.h"

namespace muster::store::sqlite {

class Checkpointer {
 public:
  // `conn` is a connection of its own to the database; checkpoints run every `interval_ms`.
  Checkpointer(std::unique_ptr<Connection> conn, int64_t interval_ms);
  // Stops the thread after one last checkpoint.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Checkpoint attempts made so far (each one either copied or found nothing to copy).
  uint64_t checkpoints() const;

 private:
  void run();
  void checkpointOnce();

  std::unique_ptr<Connection> conn_;  // checkpoint thread only
  const int64_t interval_ms_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t checkpoints_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_warning_ms_ = 0;  // checkpoint thread only
  std::thread thread_;
};

}  // namespace muster::store::sqlite
