// What operator-facing adapters (the REST API, its event streams, /metrics, later the
// dashboard) read: commands, runs, output, tokens and the store's health, as types of the
// core. Adapters never see the store; these reads go to it (on the caller's thread, so call
// from a worker, never from an I/O thread) and see open commands as the core has them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/command.h"
#include "model/event.h"
#include "model/host.h"

namespace muster::store {
class Store;
struct EnrollToken;
struct ApiToken;
}  // namespace muster::store

namespace muster::server {

class CommandService;

using model::CommandQuery;  // a page of commands, newest first

// A run with every command stored for it so far, ordered by host id.
struct RunView {
  std::string id;
  std::string created_by;
  int64_t created_at_ms = 0;
  std::vector<model::Command> commands;
  // False while a large run is still being stored in slices; `targets` is then how many
  // hosts it targets in all (commands counts those stored so far).
  bool complete = true;
  size_t targets = 0;
};

// One stream's stored output as text for clients.
struct StoredOutput {
  std::string text;        // reassembled by offset, gaps marked, valid UTF-8
  bool truncated = false;  // a gap was marked, or the reply cap cut it
};

// Tokens as operators see them: never the secret or its hash.
struct EnrollTokenView {
  std::string id;
  int64_t uses_left = 1;  // -1: unlimited
  int64_t expires_at_ms = 0;
  model::StringMap labels;
  std::string created_by;
  int64_t created_at_ms = 0;
  bool revoked = false;
  std::string host_id;  // empty: any new (or revoked) host
};
struct ApiTokenView {
  std::string id;
  std::string role;
  std::string name;
  std::string created_by;
  int64_t created_at_ms = 0;
  int64_t expires_at_ms = 0;  // 0: never
  bool revoked = false;
};
EnrollTokenView tokenView(const store::EnrollToken& token);
ApiTokenView tokenView(const store::ApiToken& token);

struct StoreHealth {
  uint64_t transactions = 0;
  uint64_t mutations = 0;
  uint64_t failed_transactions = 0;
  double last_commit_ms = 0;
  uint64_t last_batch_size = 0;
  size_t pending_writes = 0;  // the writer's backlog
};

// A well-behaved agent stores at most CoreConfig::max_output_bytes per stream; a reply of
// stored output stops (marked) past this, if a store holds more.
inline constexpr uint64_t kMaxOutputReplyBytes = 64ull << 20;

// One stream's stored output read `page_bytes` at a time and reassembled by offset (overlaps
// dropped, gaps marked), made valid UTF-8. A free function so the fuzz target can drive it
// over any store.
absl::StatusOr<StoredOutput> assembleStoredOutput(store::Store& store,
                                                  const std::string& command_id,
                                                  model::OutputStream stream,
                                                  uint64_t page_bytes = 4ull << 20,
                                                  uint64_t max_bytes = kMaxOutputReplyBytes);

class Queries {
 public:
  Queries(store::Store& store, CommandService& commands);

  absl::StatusOr<std::vector<model::Command>> commands(const CommandQuery& query);
  // NOT_FOUND naming the id when there is no such run.
  absl::StatusOr<RunView> run(const std::string& id);

  absl::StatusOr<StoredOutput> output(const std::string& command_id, model::OutputStream stream);
  // Raw chunks of one stream ordered by offset, from the chunk that holds `from_offset` (or
  // the first after it), up to about `max_bytes`: for followers that reassemble themselves.
  absl::StatusOr<std::vector<model::OutputChunk>> outputPage(const std::string& command_id,
                                                             model::OutputStream stream,
                                                             uint64_t from_offset,
                                                             uint64_t max_bytes);
  // Returns once every write queued before the call is readable (a chunk published live
  // may still be on its way to the store).
  absl::Status settle();

  absl::StatusOr<std::vector<EnrollTokenView>> enrollTokens();
  absl::StatusOr<std::vector<ApiTokenView>> apiTokens();
  // A page of the audit log (newest first; oldest first after `after_id`). Events recorded
  // but not yet committed are not in it: settle() first to see them.
  absl::StatusOr<std::vector<model::Event>> events(const model::EventQuery& query);

  // The store is reachable and migrated (readiness).
  absl::Status ready();
  StoreHealth storeHealth() const;

 private:
  store::Store& store_;
  CommandService& commands_;
};

}  // namespace muster::server
