// The operator-facing HTTP server: REST API (/api/v1), health endpoints and Server-Sent
// Events on Boost.Beast coroutines. Beast and Asio stay inside the .cc files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/worker_pool.h"
#include "crypto/server_identity.h"
#include "server/core/control_plane.h"

namespace muster::server::http {

// Every bound a client can push against, with musterd's flag (docs/api.md "Limits").
class AgentInstall;

struct HttpOptions {
  std::string listen = "127.0.0.1:7080";  // HOST:PORT; port 0 picks a free one
  int threads = 1;                        // io threads (never block; blocking work hops out)
  // HTTPS with this identity's certificate (renewals take effect for new connections);
  // null: plaintext (musterd --insecure-plaintext).
  std::shared_ptr<crypto::ServerIdentity> tls;
  uint64_t max_body_bytes = 1 << 20;  // --http-max-body-bytes; larger request bodies get 413
  // --http-max-connections: one more is answered 503 and closed. Event streams count too.
  size_t max_connections = 1024;
  // --http-header-timeout: from accept (or a keep-alive request's first byte) to the last
  // header line, however slowly it trickles in.
  int64_t header_timeout_ms = 10'000;
  int64_t body_timeout_ms = 30'000;  // --http-body-timeout: from the last header to the body's end
  // --http-idle-timeout: a keep-alive connection without a request; also how long a write
  // may wait for a client that does not read.
  int64_t idle_timeout_ms = 60'000;
  int64_t drain_timeout_ms = 10'000;  // shutdown: how long in-flight requests may take
  // --http-max-followers: live event streams (?follow=1) at once; one more is answered 503.
  // Below max_connections, so followers cannot lock operators out of the API.
  size_t sse_max_followers = 512;
  int64_t sse_keepalive_ms = 15'000;  // comment line on quiet event streams
  // --http-follower-buffer-bytes: output a follower may have queued or in flight; one
  // further behind is dropped (with an event saying how to resume) instead of queueing more.
  uint64_t sse_max_queued_bytes = 8 << 20;
  // GET /install/agent.sh and /install/muster-agent (null: 404 saying how to turn them on).
  std::shared_ptr<const AgentInstall> install;
};

// Requests answered, by route pattern ("GET /api/v1/hosts/{id}") and HTTP status.
struct RequestCount {
  std::string route;
  int status = 0;
  uint64_t count = 0;
};

class HttpServer {
 public:
  // Binds `options.listen` and starts serving on its own io threads. Store work (token
  // checks included) runs on `blocking_workers`; shut that executor down only after
  // this server, and destroy `plane` after both.
  static absl::StatusOr<std::unique_ptr<HttpServer>> start(ControlPlane& plane,
                                                           common::Executor& blocking_workers,
                                                           HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // Stops accepting, lets in-flight requests finish (up to drain_timeout_ms), ends event
  // streams, closes idle connections and joins the io threads. Idempotent.
  void shutdown();

  // Non-zero counters; safe from any thread.
  std::vector<RequestCount> requestCounts() const;
  // Live connections and event streams, as /metrics reports them; safe from any thread.
  int64_t openConnections() const;
  int64_t followers() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace muster::server::http
