// Server-Sent Events for a command's output: subscribe to the bus first, send what is
// stored, then live chunks (deduplicated by offset, holes filled from the store or marked),
// then `end` with the final command record.
#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "server/http/api_json.h"
#include "server/http/connection.h"
#include "server/http/output_text.h"

namespace muster::server::http {
namespace {

namespace bhttp = boost::beast::http;
using std::chrono::milliseconds;

constexpr uint64_t kStoredPageBytes = 1 << 20;

// Filled by the bus listener on a foreign thread; drained by the stream's coroutine.
struct FollowQueue {
  FollowQueue(asio::any_io_executor executor_in, uint64_t max_bytes_in)
      : executor(std::move(executor_in)), max_bytes(max_bytes_in) {}

  const asio::any_io_executor executor;
  const uint64_t max_bytes;
  std::mutex mu;
  std::deque<OutputEvent> events ABSL_GUARDED_BY(mu);
  uint64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  bool overflow ABSL_GUARDED_BY(mu) = false;
  bool closed ABSL_GUARDED_BY(mu) = false;
  bool wake_posted ABSL_GUARDED_BY(mu) = false;
};

// Never blocks: queues, and posts one wake-up to the stream's strand.
void enqueue(const std::shared_ptr<FollowQueue>& q, std::weak_ptr<Connection> weak,
             const OutputEvent& event) {
  std::lock_guard lock(q->mu);
  if (q->closed || q->overflow) return;
  uint64_t size = event.chunk.data.size() + 64;
  if (q->queued_bytes + size > q->max_bytes) {
    q->overflow = true;
    q->events.clear();
    q->queued_bytes = 0;
  } else {
    q->events.push_back(event);
    q->queued_bytes += size;
  }
  if (!q->wake_posted) {
    q->wake_posted = true;
    asio::post(q->executor, [weak = std::move(weak)] {
      if (auto conn = weak.lock(); conn && conn->event_timer) conn->event_timer->cancel();
    });
  }
}

struct StreamState {
  model::OutputStream stream;
  bool wanted = false;
  StreamCursor cursor;
  Utf8Splitter utf8;
};

std::string sseEvent(std::string_view name, const boost::json::value& data) {
  return absl::StrCat("event: ", toAbsl(name), "\ndata: ", boost::json::serialize(data), "\n\n");
}

std::string outputEvent(model::OutputStream stream, uint64_t offset, std::string_view text,
                        uint64_t truncated_bytes) {
  boost::json::object o;
  o["stream"] = std::string(model::toString(stream));
  o["offset"] = offset;
  o["data"] = text;
  if (truncated_bytes > 0) o["truncated_bytes"] = truncated_bytes;
  return sseEvent("output", o);
}

// Appends the events that `data` at `offset` adds to one stream.
void addChunk(StreamState& s, uint64_t offset, std::string_view data, std::string* out) {
  auto piece = s.cursor.accept(offset, data);
  if (!piece) return;
  if (piece->gap_bytes > 0) {
    uint64_t gap_start = piece->offset - piece->gap_bytes;
    uint64_t carried = s.utf8.carried();
    std::string rest = s.utf8.flush();
    if (!rest.empty()) *out += outputEvent(s.stream, gap_start - carried, rest, 0);
    *out += outputEvent(s.stream, gap_start, truncationMarker(piece->gap_bytes), piece->gap_bytes);
  }
  uint64_t start = piece->offset - s.utf8.carried();
  std::string text = s.utf8.take(piece->data);
  if (!text.empty()) *out += outputEvent(s.stream, start, text, 0);
}

// Sends `text` as one HTTP chunk. False when the client is gone.
asio::awaitable<bool> sendChunk(std::shared_ptr<Connection> conn, std::string text) {
  if (text.empty()) co_return true;
  conn->stream().expires_after(milliseconds(conn->state().options.idle_timeout_ms));
  auto [ec, n] =
      co_await asio::async_write(conn->stream(), bhttp::make_chunk(asio::buffer(text)), kTuple);
  co_return !ec;
}

// Reads stored output of one stream from the cursor up to `until` (or the end) and appends
// the events; on a worker thread. With `flush`, first waits for queued writes to commit
// (a chunk published before we subscribed may still be on its way to the store).
asio::awaitable<absl::Status> readStored(std::shared_ptr<Connection> conn, StreamState* s,
                                         std::string command_id, uint64_t until, bool flush,
                                         std::string* out) {
  auto state = conn->sharedState();
  if (flush) {
    auto job = [state] { return state->plane.store().flush(); };
    absl::Status flushed = co_await runBlocking<absl::Status>(state, std::move(job));
    if (!flushed.ok()) co_return flushed;
  }
  while (s->cursor.next() < until) {
    uint64_t from = s->cursor.next();
    using Page = absl::StatusOr<std::vector<model::OutputChunk>>;
    auto job = [state, command_id, stream = s->stream, from] {
      return state->plane.store().readOutput(command_id, stream, from, kStoredPageBytes);
    };
    Page page = co_await runBlocking<Page>(state, std::move(job));
    if (!page.ok()) co_return page.status();
    for (const auto& chunk : *page) {
      if (chunk.offset >= until) break;
      addChunk(*s, chunk.offset, chunk.data, out);
    }
    if (page->empty() || s->cursor.next() <= from) break;
    if (out->size() >= kStoredPageBytes) {
      if (!co_await sendChunk(conn, std::move(*out))) co_return absl::CancelledError("client left");
      out->clear();
    }
  }
  co_return absl::OkStatus();
}

std::string errorEvent(std::string_view code, std::string_view message) {
  boost::json::object error;
  error["code"] = code;
  error["message"] = message;
  boost::json::object body;
  body["error"] = std::move(error);
  return sseEvent("error", body);
}

std::string errorEvent(const absl::Status& status) {
  return errorEvent(errorCodeName(status.code()), toStd(status.message()));
}

// What one event stream has sent so far; lives in serveFollow's frame.
struct Follow {
  std::string command_id;
  bool keep_alive = false;
  std::array<StreamState, 2> streams;
  std::string out;  // events not yet written

  StreamState& streamFor(model::OutputStream s) {
    return s == model::OutputStream::kStderr ? streams[1] : streams[0];
  }
};

// Sends what is pending. False when the client is gone.
asio::awaitable<bool> sendPending(std::shared_ptr<Connection> conn, Follow* follow) {
  std::string text = std::move(follow->out);
  follow->out.clear();
  co_return co_await sendChunk(conn, std::move(text));
}

// Sends a final error event; the stream is over.
asio::awaitable<bool> failWith(std::shared_ptr<Connection> conn, Follow* follow,
                               absl::Status status) {
  follow->out += errorEvent(status);
  co_await sendPending(conn, follow);
  co_return false;
}

// Sends the rest of the stored output and `end`, and closes the chunked body.
asio::awaitable<bool> finishWith(std::shared_ptr<Connection> conn, Follow* follow,
                                 model::Command final_command) {
  for (auto& s : follow->streams) {
    if (!s.wanted) continue;
    absl::Status st =
        co_await readStored(conn, &s, follow->command_id, UINT64_MAX, false, &follow->out);
    if (!st.ok()) co_return co_await failWith(conn, follow, st);
    uint64_t carried = s.utf8.carried();
    std::string rest = s.utf8.flush();
    if (!rest.empty()) follow->out += outputEvent(s.stream, s.cursor.next() - carried, rest, 0);
  }
  follow->out += sseEvent("end", commandJson(final_command));
  if (!co_await sendPending(conn, follow)) co_return false;
  conn->stream().expires_after(milliseconds(conn->state().options.idle_timeout_ms));
  auto [ec, n] = co_await asio::async_write(conn->stream(), bhttp::make_chunk_last(), kTuple);
  co_return !ec && follow->keep_alive && !conn->stop_requested;
}

struct Unsubscribe {
  ServerState& state;
  std::shared_ptr<FollowQueue> queue;
  Connection* conn;
  uint64_t token;
  ~Unsubscribe() {
    {
      std::lock_guard lock(queue->mu);
      queue->closed = true;
    }
    state.plane.bus().unsubscribe(token);
    conn->event_timer = nullptr;
  }
};

}  // namespace

asio::awaitable<bool> serveFollow(std::shared_ptr<Connection> conn, FollowSpec spec,
                                  bool keep_alive) {
  ServerState& state = conn->state();
  const HttpOptions& options = state.options;
  auto executor = co_await asio::this_coro::executor;
  Follow follow;
  follow.command_id = spec.command.id;
  follow.keep_alive = keep_alive;
  follow.streams[0].stream = model::OutputStream::kStdout;
  follow.streams[0].wanted = spec.want_stdout;
  follow.streams[1].stream = model::OutputStream::kStderr;
  follow.streams[1].wanted = spec.want_stderr;
  const std::string& id = follow.command_id;

  // Subscribe before reading anything, so nothing published from now on is missed.
  auto queue = std::make_shared<FollowQueue>(executor, options.sse_max_queued_bytes);
  std::weak_ptr<Connection> weak = conn;
  uint64_t token = state.plane.bus().subscribe(
      id, [queue, weak](const OutputEvent& event) { enqueue(queue, weak, event); });
  asio::steady_timer timer(executor);
  conn->event_timer = &timer;
  Unsubscribe unsubscribe{state, queue, conn.get(), token};

  bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, "text/event-stream");
  res.set(bhttp::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");
  res.keep_alive(keep_alive);
  res.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> serializer{res};
  conn->stream().expires_after(milliseconds(options.idle_timeout_ms));
  auto [hec, hn] = co_await bhttp::async_write_header(conn->stream(), serializer, kTuple);
  if (hec) co_return false;

  // The state as of now (after subscribing): a command that ended before we subscribed
  // gets no more events, so it is answered from the store.
  auto shared_state = conn->sharedState();
  using CommandOr = absl::StatusOr<model::Command>;
  auto get_job = [shared_state, id] { return shared_state->plane.commands().get(id); };
  CommandOr fresh = co_await runBlocking<CommandOr>(shared_state, std::move(get_job));
  model::Command command = fresh.ok() ? *fresh : spec.command;
  if (model::isTerminal(command.state)) co_return co_await finishWith(conn, &follow, command);

  for (auto& s : follow.streams) {
    if (!s.wanted) continue;
    absl::Status st = co_await readStored(conn, &s, id, UINT64_MAX, false, &follow.out);
    if (!st.ok()) co_return co_await failWith(conn, &follow, st);
  }
  if (!co_await sendPending(conn, &follow)) co_return false;

  while (true) {
    if (conn->stop_requested) {
      co_return co_await failWith(
          conn, &follow,
          absl::UnavailableError("server shutting down: follow the command again later"));
    }
    std::deque<OutputEvent> events;
    bool overflow = false;
    {
      std::lock_guard lock(queue->mu);
      events.swap(queue->events);
      queue->queued_bytes = 0;
      overflow = queue->overflow;
      queue->wake_posted = false;
    }
    if (overflow) {
      co_return co_await failWith(
          conn, &follow,
          absl::ResourceExhaustedError(
              "this follower fell too far behind the command's output and was dropped: read "
              "the output with GET /api/v1/commands/{id}/output, or follow again"));
    }
    if (events.empty()) {
      timer.expires_after(milliseconds(options.sse_keepalive_ms));
      auto [ec] = co_await timer.async_wait(kTuple);
      if (!ec && !co_await sendChunk(conn, ": keep-alive\n\n")) co_return false;
      continue;
    }
    for (auto& event : events) {
      if (event.kind == OutputEvent::Kind::kFinished) {
        co_return co_await finishWith(conn, &follow, event.command);
      }
      StreamState& s = follow.streamFor(event.chunk.stream);
      if (!s.wanted) continue;
      if (event.chunk.offset > s.cursor.next()) {
        // A hole: maybe a chunk that reached the store before we subscribed. Fill what the
        // store has; what it lacks is marked as truncated by addChunk.
        absl::Status st = co_await readStored(conn, &s, id, event.chunk.offset, true, &follow.out);
        if (!st.ok()) co_return co_await failWith(conn, &follow, st);
      }
      addChunk(s, event.chunk.offset, event.chunk.data, &follow.out);
    }
    if (!co_await sendPending(conn, &follow)) co_return false;
  }
}

}  // namespace muster::server::http
