// The gRPC adapter of the agent link: AgentLink.Connect streams and Enroll, mapped onto the
// core's Session and ControlPlane. gRPC headers stay inside the .cc files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/worker_pool.h"
#include "crypto/server_identity.h"
#include "server/core/artifact_service.h"
#include "server/core/control_plane.h"

namespace muster::server::grpcadapter {

struct AgentLinkOptions {
  std::vector<std::string> listen = {"127.0.0.1:7443"};
  int max_message_bytes = 4 << 20;
  // Agent connections are refused (closed at once, counted in muster_agents_refused_total)
  // while the process holds this many descriptors, so it never runs out. 0: no ceiling.
  int fd_ceiling = 0;
  // An agent's outgoing queue (commands, cancels, acks waiting behind the write in flight):
  // past either bound the stream ends with RESOURCE_EXHAUSTED; the agent reconnects and gets
  // its open commands again.
  size_t max_send_queue_messages = 4096;
  size_t max_send_queue_bytes = 32u << 20;
  // A write that has not completed after this long (a peer that answers pings but never
  // reads its stream) cancels the stream. 0: never.
  int64_t stuck_write_timeout_ms = 60'000;
  // A connection with no call open this long (never opened a stream, or stopped) is closed.
  int64_t max_connection_idle_ms = 30'000;
  // Enroll calls waiting for a worker; past it RESOURCE_EXHAUSTED (an Enroll flood is
  // refused, not queued for hours).
  size_t max_pending_enrolls = 256;
  // TLS on the agent port (musterd's default); null: plaintext (--insecure-plaintext).
  std::shared_ptr<crypto::ServerIdentity> tls;
  // A TLS handshake not finished within this is dropped (its descriptor freed).
  int64_t handshake_timeout_ms = 10'000;
  // UploadArtifact / DownloadArtifact (null: UNIMPLEMENTED), and the threads doing their
  // disk work.
  ArtifactService* artifacts = nullptr;
  size_t artifact_io_threads = 4;
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
