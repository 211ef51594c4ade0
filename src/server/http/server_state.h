// Internal to the HTTP server: state shared by the listener and its connections, and the
// hop that runs blocking work on the worker pool and resumes the coroutine on its strand.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "server/http/api.h"
#include "server/http/http_server.h"
#include "server/http/request_stats.h"

namespace muster::server::http {

namespace asio = boost::asio;
inline constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

class Connection;

struct ServerState {
  ServerState(ControlPlane& plane_in, common::Executor& workers_in, HttpOptions options_in)
      : api(plane_in, options_in.authenticate),
        plane(plane_in),
        workers(workers_in),
        options(std::move(options_in)) {}

  Api api;
  ControlPlane& plane;
  common::Executor& workers;
  const HttpOptions options;
  RequestStats stats;
  std::atomic<bool> stopping{false};

  void addConnection(const std::shared_ptr<Connection>& connection);
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
template <typename R, typename Fn>
asio::awaitable<R> runBlocking(std::shared_ptr<ServerState> state, Fn fn) {
  auto initiate = [state, fn = std::move(fn)](auto handler) mutable {
    using Handler = decltype(handler);
    auto executor = asio::get_associated_executor(handler);
    auto work = asio::make_work_guard(executor);
    auto shared = std::make_shared<Handler>(std::move(handler));
    state->blockingStarted();
    state->workers.post([state, fn = std::move(fn), shared, executor, work]() mutable {
      R result = fn();
      asio::post(executor, [shared, result = std::move(result)]() mutable {
        (*shared)(std::move(result));
      });
      work.reset();
      state->blockingFinished();
    });
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      std::move(initiate), asio::use_awaitable);
}

}  // namespace muster::server::http
