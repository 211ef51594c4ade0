// Server-Sent Events of the audit log: subscribe first, settle the store, send the stored
// events after the resume id (oldest first), then live ones, deduplicated by id (ids are
// ordered: Audit publishes in id order). Bounded like an output follower: past
// sse_max_queued_bytes waiting, the stream is dropped with an error event naming the resume id.
#include <spdlog/spdlog.h>

#include <boost/beast/http/write.hpp>
#include <chrono>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "server/http/api_json.h"
#include "server/http/connection.h"

namespace muster::server::http {
namespace {

namespace bhttp = boost::beast::http;
using std::chrono::milliseconds;

constexpr int kStoredPage = 500;
constexpr uint64_t kEventOverheadBytes = 128;

uint64_t sizeOf(const model::Event& e) {
  uint64_t n = kEventOverheadBytes + e.id.size() + e.kind.size() + e.actor.size() +
               e.actor_id.size() + e.source.size() + e.target.size() + e.host_id.size() +
               e.result.size();
  for (const auto& [k, v] : e.detail) n += k.size() + v.size();
  return n;
}

// The store's filter (SqliteStore::listEvents), for live events.
bool matches(const model::EventQuery& q, const model::Event& e) {
  if (!q.kind.empty() && e.kind != q.kind &&
      !(e.kind.size() > q.kind.size() && e.kind.compare(0, q.kind.size(), q.kind) == 0 &&
        e.kind[q.kind.size()] == '.')) {
    return false;
  }
  if (!q.host_id.empty() && e.host_id != q.host_id) return false;
  if (!q.actor.empty() && e.actor != q.actor) return false;
  if (q.since_ms > 0 && e.at_ms < q.since_ms) return false;
  if (q.until_ms > 0 && e.at_ms >= q.until_ms) return false;
  return true;
}

// Filled by Audit's listener (any thread, under Audit's lock: never blocks); drained by the
// stream's coroutine.
struct EventQueue {
  EventQueue(asio::any_io_executor executor_in, uint64_t max_bytes_in, TransportStats* stats_in)
      : executor(std::move(executor_in)), max_bytes(max_bytes_in), stats(stats_in) {}
  const asio::any_io_executor executor;
  const uint64_t max_bytes;
  TransportStats* const stats;
  std::mutex mu;
  std::deque<model::Event> events ABSL_GUARDED_BY(mu);
  uint64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  bool overflow ABSL_GUARDED_BY(mu) = false;
  bool closed ABSL_GUARDED_BY(mu) = false;
  bool wake_posted ABSL_GUARDED_BY(mu) = false;
};

void enqueue(const std::shared_ptr<EventQueue>& q, const std::weak_ptr<Connection>& weak,
             const model::Event& event) {
  std::lock_guard lock(q->mu);
  if (q->closed || q->overflow) return;
  const uint64_t size = sizeOf(event);
  if (q->queued_bytes + size > q->max_bytes) {
    q->overflow = true;
    q->stats->follower_buffered_bytes.fetch_sub(static_cast<int64_t>(q->queued_bytes),
                                                std::memory_order_relaxed);
    q->events.clear();
    q->queued_bytes = 0;
    q->stats->followers_dropped.fetch_add(1, std::memory_order_relaxed);
  } else {
    q->events.push_back(event);
    q->queued_bytes += size;
    q->stats->follower_buffered_bytes.fetch_add(static_cast<int64_t>(size),
                                                std::memory_order_relaxed);
    q->stats->notePeak(q->queued_bytes);
  }
  if (!q->wake_posted) {
    q->wake_posted = true;
    asio::post(q->executor, [weak] {
      if (auto conn = weak.lock(); conn && conn->event_timer) conn->event_timer->cancel();
    });
  }
}

struct Unsubscribe {
  ServerState& state;
  std::shared_ptr<EventQueue> queue;
  Connection* conn;
  uint64_t token;
  ~Unsubscribe() {
    state.plane.audit().unsubscribe(token);
    {
      std::lock_guard lock(queue->mu);
      queue->closed = true;
      queue->stats->follower_buffered_bytes.fetch_sub(static_cast<int64_t>(queue->queued_bytes),
                                                      std::memory_order_relaxed);
      queue->events.clear();
      queue->queued_bytes = 0;
    }
    conn->event_timer = nullptr;
    boost::system::error_code ignored;
    if (conn->stream().socket().is_open()) conn->stream().socket().cancel(ignored);
    conn->peer_gone = false;
  }
};

std::string auditEvent(const model::Event& e) { return sseEvent("audit", eventJson(e), e.id); }

asio::awaitable<bool> failWith(std::shared_ptr<Connection> conn, const std::string& last_id,
                               absl::Status status) {
  boost::json::object error;
  error["code"] = errorCodeName(status.code());
  error["message"] = toStd(status.message());
  boost::json::object body;
  body["error"] = std::move(error);
  body["resume"] = last_id.empty() ? boost::json::value(nullptr) : boost::json::value(last_id);
  co_await sendChunk(conn, sseEvent("error", body, last_id));
  co_return false;
}

std::string resumeHint(const std::string& last_id) {
  if (last_id.empty()) return "follow again";
  return absl::StrCat("follow again with Last-Event-ID: ", last_id);
}

}  // namespace

asio::awaitable<bool> serveEventFollow(std::shared_ptr<Connection> conn, EventFollowSpec spec,
                                       bool keep_alive, FollowerSlot slot) {
  ServerState& state = conn->state();
  const HttpOptions& options = state.options;
  auto executor = co_await asio::this_coro::executor;
  model::EventQuery query = std::move(spec.query);
  std::string last_id = query.after_id;

  // Subscribe before reading anything, so nothing recorded from now on is missed.
  auto queue =
      std::make_shared<EventQueue>(executor, options.sse_max_queued_bytes, &state.transport());
  std::weak_ptr<Connection> weak = conn;
  uint64_t token = state.plane.audit().subscribe([queue, weak, query](const model::Event& e) {
    if (matches(query, e)) enqueue(queue, weak, e);
  });
  asio::steady_timer timer(executor);
  conn->event_timer = &timer;
  Unsubscribe unsubscribe{state, queue, conn.get(), token};

  if (!co_await startEventStream(conn, keep_alive)) co_return false;

  // Resuming: what was stored after the id, oldest first. Events recorded before we
  // subscribed may still be queued in the store's writer: settle first.
  if (!last_id.empty()) {
    auto shared_state = conn->sharedState();
    auto settle = [shared_state] { return shared_state->plane.queries().settle(); };
    absl::Status settled = co_await runBlocking<absl::Status>(shared_state, std::move(settle));
    if (!settled.ok()) co_return co_await failWith(conn, last_id, settled);
    while (true) {
      model::EventQuery page_query = query;
      page_query.after_id = last_id;
      page_query.limit = kStoredPage;
      using Page = absl::StatusOr<std::vector<model::Event>>;
      auto job = [shared_state, page_query] {
        return shared_state->plane.queries().events(page_query);
      };
      Page page = co_await runBlocking<Page>(shared_state, std::move(job));
      if (!page.ok()) co_return co_await failWith(conn, last_id, page.status());
      std::string out;
      for (const auto& e : *page) {
        out += auditEvent(e);
        last_id = e.id;
      }
      if (!co_await sendChunk(conn, std::move(out))) co_return false;
      if (static_cast<int>(page->size()) < kStoredPage) break;
    }
  }
  // An empty stream still shows it is open (curl, proxies).
  if (!co_await sendChunk(conn, ": following the audit log\n\n")) co_return false;
  watchForHangUp(conn);

  while (true) {
    if (conn->peer_gone) co_return false;
    if (conn->stop_requested) {
      co_return co_await failWith(
          conn, last_id,
          absl::UnavailableError(
              absl::StrCat("server shutting down: resume later: ", resumeHint(last_id))));
    }
    std::deque<model::Event> events;
    bool overflow = false;
    uint64_t taken = 0;
    {
      std::lock_guard lock(queue->mu);
      events.swap(queue->events);
      taken = queue->queued_bytes;
      queue->queued_bytes = 0;
      overflow = queue->overflow;
      queue->wake_posted = false;
    }
    state.transport().follower_buffered_bytes.fetch_sub(static_cast<int64_t>(taken),
                                                        std::memory_order_relaxed);
    if (overflow) {
      conn->dropIfStillWriting(milliseconds(1000));
      co_return co_await failWith(
          conn, last_id,
          absl::ResourceExhaustedError(
              absl::StrCat("this follower fell more than ", options.sse_max_queued_bytes,
                           " bytes of events behind and was dropped (read faster, or raise musterd "
                           "--http-follower-buffer-bytes); ",
                           resumeHint(last_id))));
    }
    if (events.empty()) {
      timer.expires_after(milliseconds(options.sse_keepalive_ms));
      auto [ec] = co_await timer.async_wait(kTuple);
      if (!ec && !co_await sendChunk(conn, ": keep-alive\n\n")) co_return false;
      continue;
    }
    std::string out;
    for (const auto& e : events) {
      if (!last_id.empty() && e.id <= last_id) continue;  // already sent from the store
      out += auditEvent(e);
      last_id = e.id;
    }
    if (!co_await sendChunk(conn, std::move(out))) co_return false;
  }
  (void)keep_alive;
}

}  // namespace muster::server::http
