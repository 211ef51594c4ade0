// HttpServer: listener, io threads, connection registry and draining shutdown.
#include "server/http/http_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/net.h"
#include "server/http/connection.h"
#include "server/http/server_state.h"

namespace muster::server::http {

using asio::ip::tcp;

// --- ServerState ---------------------------------------------------------------------------

FollowerSlot ServerState::tryAcquireFollower() {
  auto& followers = transport().followers;
  int64_t now = followers.load(std::memory_order_relaxed);
  do {
    if (now >= static_cast<int64_t>(options.sse_max_followers)) return FollowerSlot();
  } while (!followers.compare_exchange_weak(now, now + 1, std::memory_order_relaxed));
  return FollowerSlot(&transport());
}

bool ServerState::tryAddConnection(const std::shared_ptr<Connection>& connection) {
  std::lock_guard lock(mu_);
  if (connections_.size() >= options.max_connections) return false;
  connections_[connection.get()] = connection;
  transport().connections_open.store(static_cast<int64_t>(connections_.size()),
                                     std::memory_order_relaxed);
  return true;
}

void ServerState::removeConnection(const Connection* connection) {
  std::lock_guard lock(mu_);
  connections_.erase(connection);
  transport().connections_open.store(static_cast<int64_t>(connections_.size()),
                                     std::memory_order_relaxed);
  if (connections_.empty()) idle_cv_.notify_all();
}

std::vector<std::shared_ptr<Connection>> ServerState::connections() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Connection>> out;
  for (const auto& [ptr, weak] : connections_) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

size_t ServerState::connectionCount() const {
  std::lock_guard lock(mu_);
  return connections_.size();
}

void ServerState::blockingStarted() {
  std::lock_guard lock(mu_);
  ++blocking_jobs_;
}

void ServerState::blockingFinished() {
  std::lock_guard lock(mu_);
  if (--blocking_jobs_ == 0) idle_cv_.notify_all();
}

int ServerState::blockingJobs() const {
  std::lock_guard lock(mu_);
  return blocking_jobs_;
}

bool ServerState::waitIdle(int64_t timeout_ms, bool connections_too) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return blocking_jobs_ == 0 && (!connections_too || connections_.empty());
  });
}

// --- HttpServer ----------------------------------------------------------------------------

namespace {

absl::StatusOr<tcp::endpoint> resolveListen(const std::string& listen) {
  auto hp = common::splitHostPort(listen);
  if (!hp.ok()) return hp.status();
  std::string host = hp->host.empty() ? "0.0.0.0" : hp->host;
  auto port = static_cast<uint16_t>(hp->port);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) return tcp::endpoint(address, port);
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve listen host '", host,
                                                   "': ", ec ? ec.message() : "no address"));
  }
  return results.begin()->endpoint();
}

void noteRefusedConnection(ServerState& state) {
  state.transport().connections_refused.fetch_add(1, std::memory_order_relaxed);
  uint64_t skipped = 0;
  if (state.connections_log.allow(&skipped)) {
    spdlog::warn(
        "http: refused a connection: {} connections open, the limit (--http-max-connections); "
        "clients get 503 until some close ({} more refused since the last message)",
        state.options.max_connections, skipped);
  }
}

}  // namespace

std::shared_ptr<asio::ssl::context> ServerState::tlsContext() {
  auto material = options.tls->current();
  std::lock_guard lock(tls_mu);
  if (tls_context && material->generation == tls_generation) return tls_context;
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  boost::system::error_code ec;
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                           asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                           asio::ssl::context::no_tlsv1_1,
                       ec);
  if (!ec) context->use_certificate_chain(asio::buffer(material->chain_pem), ec);
  if (!ec) context->use_private_key(asio::buffer(material->key_pem), asio::ssl::context::pem, ec);
  if (ec) {
    spdlog::error("http: cannot load the TLS certificate: {}", ec.message());
    return tls_context;  // the previous one, if any, keeps serving
  }
  tls_context = std::move(context);
  tls_generation = material->generation;
  return tls_context;
}

namespace {

asio::awaitable<void> acceptLoop(std::shared_ptr<ServerState> state,
                                 std::shared_ptr<tcp::acceptor> acceptor,
                                 asio::io_context::executor_type io) {
  asio::steady_timer backoff(co_await asio::this_coro::executor);
  while (!state->stopping) {
    auto [ec, socket] =
        co_await acceptor->async_accept(asio::any_io_executor(asio::make_strand(io)), kTuple);
    if (ec) {
      if (state->stopping || !acceptor->is_open()) break;
      // EMFILE and friends: keep the listener alive and try again shortly.
      spdlog::warn("http: accept failed: {}; retrying", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(kTuple);
      continue;
    }
    if (state->stopping) break;
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto connection = std::make_shared<Connection>(state, std::move(socket));
    if (state->options.tls) {
      auto context = state->tlsContext();
      if (!context) {
        connection->stream().close();
        continue;
      }
      connection->stream().useTls(std::move(context));
    }
    if (!state->tryAddConnection(connection)) {
      noteRefusedConnection(*state);
      asio::co_spawn(connection->stream().get_executor(), refuseConnection(connection),
                     asio::detached);
      continue;
    }
    asio::co_spawn(connection->stream().get_executor(), serveConnection(connection),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("http: connection ended by an exception: {}", ex.what());
                     }
                   });
  }
}

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<ServerState> state;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::shared_ptr<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  int port = 0;
  bool stopped = false;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { shutdown(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::start(ControlPlane& plane,
                                                              common::Executor& blocking_workers,
                                                              HttpOptions options) {
  auto endpoint = resolveListen(options.listen);
  if (!endpoint.ok()) return endpoint.status();
  if (options.threads < 1) options.threads = 1;
  auto impl = std::make_unique<Impl>();
  std::string listen = options.listen;
  int threads = options.threads;
  impl->state = std::make_shared<ServerState>(plane, blocking_workers, std::move(options));
  impl->acceptor = std::make_shared<tcp::acceptor>(asio::make_strand(impl->ioc));
  boost::system::error_code ec;
  auto& acceptor = *impl->acceptor;
  acceptor.open(endpoint->protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(*endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", listen, ": ",
                                               ec.message(),
                                               " (is another musterd running? pick another "
                                               "address with --http-listen)"));
  }
  tcp::endpoint bound = acceptor.local_endpoint(ec);
  impl->port = bound.port();
  impl->work.emplace(impl->ioc.get_executor());
  asio::co_spawn(acceptor.get_executor(),
                 acceptLoop(impl->state, impl->acceptor, impl->ioc.get_executor()),
                 [](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::error("http: the listener stopped on an exception: {}", ex.what());
                   }
                 });
  for (int i = 0; i < threads; ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc] { ioc->run(); });
    pthread_setname_np(impl->threads.back().native_handle(), "muster-http");
  }
  spdlog::info(
      "http: listening on {}:{} (at most {} connections, {} event streams, {} bytes behind "
      "per stream)",
      endpoint->address().to_string(), impl->port, impl->state->options.max_connections,
      impl->state->options.sse_max_followers, impl->state->options.sse_max_queued_bytes);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

std::vector<RequestCount> HttpServer::requestCounts() const {
  return impl_->state->stats.snapshot();
}

int64_t HttpServer::openConnections() const {
  return impl_->state->transport().connections_open.load(std::memory_order_relaxed);
}

int64_t HttpServer::followers() const {
  return impl_->state->transport().followers.load(std::memory_order_relaxed);
}

void HttpServer::shutdown() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  auto& state = *impl_->state;
  state.stopping = true;
  asio::post(impl_->acceptor->get_executor(), [acceptor = impl_->acceptor] {
    boost::system::error_code ignored;
    acceptor->close(ignored);
  });
  for (auto& c : state.connections()) c->requestStop();
  if (!state.waitIdle(state.options.drain_timeout_ms, true)) {
    spdlog::warn("http: {} connection(s) still busy after {} ms; closing them",
                 state.connectionCount(), state.options.drain_timeout_ms);
    for (auto& c : state.connections()) c->forceClose();
    state.waitIdle(2000, true);
  }
  // A worker may still hold a request's coroutine; it must resume before the io_context dies.
  while (!state.waitIdle(5000, false)) {
    spdlog::warn("http: waiting for {} store call(s) to return", state.blockingJobs());
  }
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
  impl_->threads.clear();
  spdlog::info("http: stopped");
}

}  // namespace muster::server::http
