// Internal to the HTTP server: state shared by the listener and its connections, and the
// hop that runs blocking work on the worker pool and resumes the coroutine on its strand.
#pragma once

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/log.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "server/http/api.h"
#include "server/http/http_server.h"
#include "server/http/request_stats.h"

namespace muster::server::http {

namespace asio = boost::asio;
inline constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

class Connection;
struct ServerState;

// One of the sse_max_followers places of an event stream; given back when destroyed.
class FollowerSlot {
 public:
  FollowerSlot() = default;
  explicit FollowerSlot(TransportStats* stats) : stats_(stats) {}
  FollowerSlot(FollowerSlot&& other) noexcept : stats_(std::exchange(other.stats_, nullptr)) {}
  FollowerSlot& operator=(FollowerSlot&&) = delete;
  FollowerSlot(const FollowerSlot&) = delete;
  ~FollowerSlot() {
    if (stats_) stats_->followers.fetch_sub(1, std::memory_order_relaxed);
  }
  explicit operator bool() const { return stats_ != nullptr; }

 private:
  TransportStats* stats_ = nullptr;
};

struct ServerState {
  ServerState(ControlPlane& plane_in, common::Executor& workers_in, HttpOptions options_in)
      : api(plane_in, &stats, options_in.install),
        plane(plane_in),
        workers(workers_in),
        options(std::move(options_in)) {}

  RequestStats stats;  // before `api`, which reads it
  Api api;
  ControlPlane& plane;
  common::Executor& workers;
  const HttpOptions options;
  std::atomic<bool> stopping{false};

  // The TLS context of the identity's current certificate (made again after a renewal);
  // null without TLS or when the certificate cannot be loaded.
  std::shared_ptr<asio::ssl::context> tlsContext();
  std::mutex tls_mu;
  std::shared_ptr<asio::ssl::context> tls_context;  // guarded by tls_mu
  uint64_t tls_generation = 0;                      // guarded by tls_mu
  std::atomic<int> refusing{0};  // connections being answered 503 (over max_connections)
  // One warning per 10 s and limit, however hard a flood pushes.
  common::RateLimitedLog connections_log;
  common::RateLimitedLog followers_log;
  common::RateLimitedLog drops_log;
  common::RateLimitedLog timeouts_log;
  common::RateLimitedLog tls_log;

  TransportStats& transport() { return stats.transport; }
  // A place for one more event stream; empty (false) at sse_max_followers.
  FollowerSlot tryAcquireFollower();

  // False (and not added) at max_connections.
  bool tryAddConnection(const std::shared_ptr<Connection>& connection);
  void removeConnection(const Connection* connection);
  std::vector<std::shared_ptr<Connection>> connections() const;
  size_t connectionCount() const;

  void blockingStarted();
  void blockingFinished();
  int blockingJobs() const;
  // Waits until no connection and no blocking job is left, or until `deadline_ms` passed.
  bool waitIdle(int64_t timeout_ms, bool connections_too);

 private:
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::unordered_map<const Connection*, std::weak_ptr<Connection>> connections_
      ABSL_GUARDED_BY(mu_);
  int blocking_jobs_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs `fn` (which may block) on the worker pool and resumes the awaiting coroutine on its
// own executor with the result. The io thread never waits.
//
// Pass a named lambda (`co_await runBlocking<R>(state, std::move(job))`): GCC 12 copies a
// closure prvalue written inside a co_await expression bitwise into the coroutine frame,
// which corrupts captured std::strings (seen as free(): invalid pointer).
template <typename R, typename Fn>
asio::awaitable<R> runBlocking(std::shared_ptr<ServerState> state, Fn fn) {
  auto initiate = [state, fn = std::move(fn)](auto handler) mutable {
    using Handler = decltype(handler);
    using Executor = asio::associated_executor_t<Handler>;
    struct Job {
      Fn fn;
      std::shared_ptr<Handler> handler;
      Executor executor;
    };
    auto executor = asio::get_associated_executor(handler);
    auto job = std::make_shared<Job>(
        Job{std::move(fn), std::make_shared<Handler>(std::move(handler)), std::move(executor)});
    state->blockingStarted();
    state->workers.post([state, job]() mutable {
      {
        R result = job->fn();
        asio::post(job->executor,
                   [handler = std::move(job->handler), result = std::move(result)]() mutable {
                     (*handler)(std::move(result));
                   });
        // Drop every reference into the io_context before shutdown may destroy it.
        job.reset();
      }
      state->blockingFinished();
    });
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      std::move(initiate), asio::use_awaitable);
}

}  // namespace muster::server::http
