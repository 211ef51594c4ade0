// The gRPC adapter of the agent link: AgentLink.Connect streams and Enroll, mapped onto the
// core's Session and ControlPlane. gRPC headers stay inside the .cc files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"

namespace muster::server::grpcadapter {

struct AgentLinkOptions {
  std::vector<std::string> listen = {"127.0.0.1:7443"};
  int max_message_bytes = 4 << 20;
  // Agent connections are refused (closed at once, counted in muster_agents_refused_total)
  // while the process holds this many descriptors, so it never runs out. 0: no ceiling.
  int fd_ceiling = 0;
};

class AgentLinkServer {
 public:
  // Binds and starts serving. `workers` runs blocking work (enrollment store round trips).
  static absl::StatusOr<std::unique_ptr<AgentLinkServer>> start(ControlPlane& plane,
                                                                common::Executor& workers,
                                                                const AgentLinkOptions& options);
  ~AgentLinkServer();

  int port() const;
  // Ends every stream (agents reconnect elsewhere or later) and stops, waiting up to
  // `deadline_ms` for in-flight calls.
  void shutdown(int64_t deadline_ms);

 private:
  struct Impl;
  explicit AgentLinkServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace muster::server::grpcadapter
