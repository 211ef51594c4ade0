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
#include "server/core/control_plane.h"

namespace muster::server::http {

struct HttpOptions {
  std::string listen = "127.0.0.1:7080";    // HOST:PORT; port 0 picks a free one
  int threads = 1;                          // io threads (never block; blocking work hops out)
  uint64_t max_body_bytes = 1 << 20;        // larger request bodies get 413
  int64_t header_timeout_ms = 10'000;       // from the first byte of a request to its last header
  int64_t idle_timeout_ms = 60'000;         // keep-alive connection without a request; body reads
  int64_t drain_timeout_ms = 10'000;        // shutdown: how long in-flight requests may take
  int64_t sse_keepalive_ms = 15'000;        // comment line on quiet event streams
  uint64_t sse_max_queued_bytes = 8 << 20;  // a follower further behind is dropped
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

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace muster::server::http
