// The agent's durable memory of commands, one directory per command under state/commands/:
//   spec.pb       written (fsync) before the command runs: the journal that makes a
//                 command delivered twice run once
//   stdout/stderr head of each stream (offset = file position)
//   *.tail        the last bytes of a stream that outgrew the head: 8-byte offset + bytes
//   result.pb     the final result, kept until the server acknowledges it
//   acked         the server has the result; output files are gone, the directory stays as
//                 a tombstone (pruned after a week)
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "muster/v1/agent.pb.h"

namespace muster::agent {

class Outbox {
 public:
  enum class Known { kNew, kRunning, kFinished, kAcked };

  static absl::StatusOr<std::unique_ptr<Outbox>> open(std::string dir, const common::Clock& clock);

  // Server-supplied ids become directory names: only [A-Za-z0-9._-]{1,128}, not "." or "..".
  static bool isSafeId(const std::string& id);

  Known lookup(const std::string& id) const;
  // Journals the command durably before it runs.
  absl::Status accept(const muster::v1::Command& command);
  // Stores the final result durably (after the output files were synced).
  absl::Status finish(const muster::v1::CommandResult& result);
  absl::Status markAcked(const std::string& id);

  // After a restart: every command that has a journal entry but no result was running
  // when the agent died; it gets a failed result. Returns those ids.
  std::vector<std::string> recoverInterrupted();
  std::vector<std::string> unacked() const;
  std::vector<std::string> inFlight() const;

  // Everything the server needs again for `id`: stored output chunks (head files and
  // tails) and, if finished, the result last.
  std::vector<muster::v1::AgentMessage> replay(const std::string& id, bool include_result,
                                               size_t chunk_bytes = 256 * 1024) const;

  std::string dirFor(const std::string& id) const { return dir_ + "/" + id; }
  // Removes tombstones older than `max_age_ms`.
  void prune(int64_t max_age_ms);

 private:
  Outbox(std::string dir, const common::Clock& clock) : dir_(std::move(dir)), clock_(clock) {}
  std::vector<std::string> listIds() const;

  const std::string dir_;
  const common::Clock& clock_;
};

}  // namespace muster::agent
