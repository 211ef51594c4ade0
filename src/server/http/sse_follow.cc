// Server-Sent Events for a command's output: subscribe to the bus first, send what is
// stored, then live chunks (deduplicated by offset, holes filled from the store or marked),
// then `end` with the final command record. A follower is bounded: what it has queued or in
// flight never exceeds sse_max_queued_bytes; past that it is dropped, told how to resume.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <chrono>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "server/core/output_text.h"
#include "server/http/api_json.h"
#include "server/http/connection.h"

namespace muster::server::http {

namespace bhttp = boost::beast::http;
using std::chrono::milliseconds;

std::string sseEvent(std::string_view name, const boost::json::value& data, std::string_view id) {
  std::string out;
  if (!id.empty()) absl::StrAppend(&out, "id: ", toAbsl(id), "\n");
  absl::StrAppend(&out, "event: ", toAbsl(name), "\ndata: ", boost::json::serialize(data), "\n\n");
  return out;
}

namespace {
// Writes `buffers` to the event stream. False when the client is gone, or was cut off.
template <typename Buffers>
asio::awaitable<bool> writeEvents(std::shared_ptr<Connection> conn, Buffers buffers) {
  conn->stream().expires_after(milliseconds(conn->state().options.idle_timeout_ms));
  conn->event_write_pending = true;
  auto [ec, n] = co_await asio::async_write(conn->stream(), buffers, kTuple);
  conn->event_write_pending = false;
  if (ec == beast::error::timeout) noteTimeout(conn->state(), TimeoutPhase::kWrite);
  co_return !ec;
}
}  // namespace

// Sends `text` as one HTTP chunk. False when the client is gone.
asio::awaitable<bool> sendChunk(std::shared_ptr<Connection> conn, std::string text) {
  if (text.empty()) co_return true;
  co_return co_await writeEvents(conn, bhttp::make_chunk(asio::buffer(text)));
}

asio::awaitable<bool> startEventStream(std::shared_ptr<Connection> conn, bool keep_alive) {
  bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, "text/event-stream");
  res.set(bhttp::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");
  res.keep_alive(keep_alive);
  res.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> serializer{res};
  conn->stream().expires_after(milliseconds(conn->state().options.idle_timeout_ms));
  auto [ec, n] = co_await bhttp::async_write_header(conn->stream(), serializer, kTuple);
  co_return !ec;
}

asio::awaitable<bool> sendLastChunk(std::shared_ptr<Connection> conn) {
  co_return co_await writeEvents(conn, bhttp::make_chunk_last());
}

// Wakes the stream when the client closes its end: a quiet stream would otherwise notice
// only at its next keep-alive write, and hold its follower place until then.
void watchForHangUp(const std::shared_ptr<Connection>& conn) {
  auto& socket = conn->stream().socket();
  socket.async_wait(asio::ip::tcp::socket::wait_read, [weak = std::weak_ptr<Connection>(conn)](
                                                          const boost::system::error_code& ec) {
    if (ec) return;
    auto self = weak.lock();
    if (!self) return;
    char byte;
    ssize_t n = ::recv(self->stream().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    // Bytes (a pipelined request) wait for the stream to end; EOF or an
    // error means the client is gone.
    if (n > 0) return;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watchForHangUp(self);
      return;
    }
    self->peer_gone = true;
    if (self->event_timer) self->event_timer->cancel();
  });
}

namespace {

constexpr uint64_t kStoredPageBytes = 1 << 20;
// A follower that fell behind while a write to it was stuck gets this long for that write
// to finish (then it reads why the stream ends); a client that reads nothing is cut off.
constexpr milliseconds kDropGrace{1000};
// Bookkeeping per queued event, on top of its data.
constexpr uint64_t kEventOverheadBytes = 64;

// Filled by the bus listener on a foreign thread; drained by the stream's coroutine.
struct FollowQueue {
  FollowQueue(std::string command_id_in, asio::any_io_executor executor_in, uint64_t max_bytes_in,
              TransportStats* stats_in)
      : command_id(std::move(command_id_in)),
        executor(std::move(executor_in)),
        max_bytes(max_bytes_in),
        stats(stats_in) {}

  const std::string command_id;
  const asio::any_io_executor executor;
  const uint64_t max_bytes;
  TransportStats* const stats;
  std::mutex mu;
  std::deque<OutputEvent> events ABSL_GUARDED_BY(mu);
  uint64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;     // in `events`
  uint64_t in_flight_bytes ABSL_GUARDED_BY(mu) = 0;  // taken by the coroutine, not yet sent
  bool overflow ABSL_GUARDED_BY(mu) = false;
  bool closed ABSL_GUARDED_BY(mu) = false;
  bool wake_posted ABSL_GUARDED_BY(mu) = false;
};

void noteDropped(ServerState& state, const std::string& command_id, uint64_t behind) {
  uint64_t skipped = 0;
  if (state.drops_log.allow(&skipped)) {
    spdlog::warn(
        "http: dropped a follower of command {}: it fell {} bytes behind, more than "
        "--http-follower-buffer-bytes ({}); it was told how to resume ({} more dropped since "
        "the last message)",
        command_id, behind, state.options.sse_max_queued_bytes, skipped);
  }
}

// Never blocks: queues, and posts one wake-up to the stream's strand. Past the cap the queue
// is emptied and the follower is dropped instead: a slow reader costs itself, not the server.
void enqueue(const std::shared_ptr<FollowQueue>& q, std::weak_ptr<Connection> weak,
             const OutputEvent& event) {
  std::lock_guard lock(q->mu);
  if (q->closed || q->overflow) return;
  uint64_t size = event.chunk.data.size() + kEventOverheadBytes;
  uint64_t buffered = q->queued_bytes + q->in_flight_bytes;
  if (buffered + size > q->max_bytes) {
    q->overflow = true;
    q->stats->follower_buffered_bytes.fetch_sub(static_cast<int64_t>(q->queued_bytes),
                                                std::memory_order_relaxed);
    q->events.clear();
    q->queued_bytes = 0;
    q->stats->followers_dropped.fetch_add(1, std::memory_order_relaxed);
    asio::post(q->executor, [q, weak = std::move(weak), behind = buffered + size] {
      auto conn = weak.lock();
      if (!conn) return;
      noteDropped(conn->state(), q->command_id, behind);
      {
        // That stream may have ended meanwhile; the connection may be serving another.
        std::lock_guard lock(q->mu);
        if (q->closed) return;
      }
      if (conn->event_timer) conn->event_timer->cancel();
      if (conn->event_write_pending) conn->dropIfStillWriting(kDropGrace);
    });
    return;
  }
  q->events.push_back(event);
  q->queued_bytes += size;
  q->stats->follower_buffered_bytes.fetch_add(static_cast<int64_t>(size),
                                              std::memory_order_relaxed);
  q->stats->notePeak(buffered + size);
  if (!q->wake_posted) {
    q->wake_posted = true;
    asio::post(q->executor, [weak = std::move(weak)] {
      if (auto conn = weak.lock(); conn && conn->event_timer) conn->event_timer->cancel();
    });
  }
}

struct StreamState {
  explicit StreamState(uint64_t from = 0) : cursor(from), sent(from) {}
  model::OutputStream stream = model::OutputStream::kStdout;
  bool wanted = false;
  StreamCursor cursor;
  Utf8Splitter utf8;
  uint64_t sent;  // the client has every byte before this offset (or its truncation marker)
};

// What one event stream has sent so far; lives in serveFollow's frame.
struct Follow {
  std::string command_id;
  bool keep_alive = false;
  std::array<StreamState, 2> streams;
  std::string out;  // events not yet written

  StreamState& streamFor(model::OutputStream s) {
    return s == model::OutputStream::kStderr ? streams[1] : streams[0];
  }
  // The SSE id, also what Last-Event-ID brings back: "STDOUT_OFFSET,STDERR_OFFSET".
  std::string resumeId() const { return absl::StrCat(streams[0].sent, ",", streams[1].sent); }
  std::string resumeHint() const {
    return absl::StrCat(
        "GET /api/v1/commands/", command_id, "/output?follow=1&stdout_offset=", streams[0].sent,
        "&stderr_offset=", streams[1].sent, " (or send Last-Event-ID: ", resumeId(), ")");
  }

  // Appends an output event; the client has `s` up to `resume_at` once it has read it.
  void output(StreamState& s, uint64_t offset, std::string_view text, uint64_t truncated_bytes,
              uint64_t resume_at) {
    s.sent = resume_at;
    boost::json::object o;
    o["stream"] = std::string(model::toString(s.stream));
    o["offset"] = offset;
    o["data"] = text;
    if (truncated_bytes > 0) o["truncated_bytes"] = truncated_bytes;
    out += sseEvent("output", o, resumeId());
  }
};

// Appends the events that `data` at `offset` adds to one stream.
void addChunk(Follow& f, StreamState& s, uint64_t offset, std::string_view data) {
  auto piece = s.cursor.accept(offset, data);
  if (!piece) return;
  if (piece->gap_bytes > 0) {
    uint64_t gap_start = piece->offset - piece->gap_bytes;
    uint64_t carried = s.utf8.carried();
    std::string rest = s.utf8.flush();
    if (!rest.empty()) f.output(s, gap_start - carried, rest, 0, gap_start);
    f.output(s, gap_start, truncationMarker(piece->gap_bytes), piece->gap_bytes, piece->offset);
  }
  uint64_t start = piece->offset - s.utf8.carried();
  std::string text = s.utf8.take(piece->data);
  uint64_t end = piece->offset + piece->data.size();
  if (!text.empty()) f.output(s, start, text, 0, end - s.utf8.carried());
}

// Reads stored output of one stream from the cursor up to `until` (or the end) and appends
// the events; on a worker thread. With `flush`, first waits for queued writes to commit
// (a chunk published before we subscribed may still be on its way to the store).
asio::awaitable<absl::Status> readStored(std::shared_ptr<Connection> conn, Follow* f,
                                         StreamState* s, uint64_t until, bool flush) {
  auto state = conn->sharedState();
  if (flush) {
    auto job = [state] { return state->plane.queries().settle(); };
    absl::Status flushed = co_await runBlocking<absl::Status>(state, std::move(job));
    if (!flushed.ok()) co_return flushed;
  }
  while (s->cursor.next() < until) {
    uint64_t from = s->cursor.next();
    using Page = absl::StatusOr<std::vector<model::OutputChunk>>;
    auto job = [state, command_id = f->command_id, stream = s->stream, from] {
      return state->plane.queries().outputPage(command_id, stream, from, kStoredPageBytes);
    };
    Page page = co_await runBlocking<Page>(state, std::move(job));
    if (!page.ok()) co_return page.status();
    for (const auto& chunk : *page) {
      if (chunk.offset >= until) break;
      addChunk(*f, *s, chunk.offset, chunk.data);
    }
    if (page->empty() || s->cursor.next() <= from) break;
    if (f->out.size() >= kStoredPageBytes) {
      if (!co_await sendChunk(conn, std::move(f->out)))
        co_return absl::CancelledError("client left");
      f->out.clear();
    }
  }
  co_return absl::OkStatus();
}

// Sends what is pending. False when the client is gone.
asio::awaitable<bool> sendPending(std::shared_ptr<Connection> conn, Follow* follow) {
  std::string text = std::move(follow->out);
  follow->out.clear();
  co_return co_await sendChunk(conn, std::move(text));
}

// Sends a final error event (with the resume position, so a client can continue from it);
// the stream is over.
asio::awaitable<bool> failWith(std::shared_ptr<Connection> conn, Follow* follow,
                               absl::Status status) {
  boost::json::object error;
  error["code"] = errorCodeName(status.code());
  error["message"] = toStd(status.message());
  boost::json::object resume;
  resume["stdout_offset"] = follow->streams[0].sent;
  resume["stderr_offset"] = follow->streams[1].sent;
  boost::json::object body;
  body["error"] = std::move(error);
  body["resume"] = std::move(resume);
  follow->out += sseEvent("error", body, follow->resumeId());
  co_await sendPending(conn, follow);
  co_return false;
}

// Sends the rest of the stored output and `end`, and closes the chunked body.
asio::awaitable<bool> finishWith(std::shared_ptr<Connection> conn, Follow* follow,
                                 model::Command final_command) {
  for (auto& s : follow->streams) {
    if (!s.wanted) continue;
    absl::Status st = co_await readStored(conn, follow, &s, UINT64_MAX, false);
    if (!st.ok()) co_return co_await failWith(conn, follow, st);
    uint64_t carried = s.utf8.carried();
    std::string rest = s.utf8.flush();
    if (!rest.empty()) follow->output(s, s.cursor.next() - carried, rest, 0, s.cursor.next());
  }
  follow->out += sseEvent("end", commandJson(final_command), follow->resumeId());
  if (!co_await sendPending(conn, follow)) co_return false;
  if (!co_await writeEvents(conn, bhttp::make_chunk_last())) co_return false;
  co_return follow->keep_alive && !conn->stop_requested;
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
      queue->stats->follower_buffered_bytes.fetch_sub(
          static_cast<int64_t>(queue->queued_bytes + queue->in_flight_bytes),
          std::memory_order_relaxed);
      queue->events.clear();
      queue->queued_bytes = 0;
      queue->in_flight_bytes = 0;
    }
    state.plane.bus().unsubscribe(token);
    conn->event_timer = nullptr;
    // The hang-up watch must not outlive the stream: the connection may serve more requests.
    boost::system::error_code ignored;
    if (conn->stream().socket().is_open()) conn->stream().socket().cancel(ignored);
    conn->peer_gone = false;
  }
};

}  // namespace

// `slot` is held (in the frame) for as long as the stream lasts.
asio::awaitable<bool> serveFollow(std::shared_ptr<Connection> conn, FollowSpec spec,
                                  bool keep_alive, FollowerSlot slot) {
  ServerState& state = conn->state();
  const HttpOptions& options = state.options;
  auto executor = co_await asio::this_coro::executor;
  Follow follow;
  follow.command_id = spec.command.id;
  follow.keep_alive = keep_alive;
  follow.streams[0] = StreamState(spec.stdout_offset);
  follow.streams[0].stream = model::OutputStream::kStdout;
  follow.streams[0].wanted = spec.want_stdout;
  follow.streams[1] = StreamState(spec.stderr_offset);
  follow.streams[1].stream = model::OutputStream::kStderr;
  follow.streams[1].wanted = spec.want_stderr;
  const std::string& id = follow.command_id;

  // Subscribe before reading anything, so nothing published from now on is missed.
  auto queue =
      std::make_shared<FollowQueue>(id, executor, options.sse_max_queued_bytes, &state.transport());
  std::weak_ptr<Connection> weak = conn;
  uint64_t token = state.plane.bus().subscribe(
      id, [queue, weak](const OutputEvent& event) { enqueue(queue, weak, event); });
  asio::steady_timer timer(executor);
  conn->event_timer = &timer;
  Unsubscribe unsubscribe{state, queue, conn.get(), token};

  if (!co_await startEventStream(conn, keep_alive)) co_return false;

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
    absl::Status st = co_await readStored(conn, &follow, &s, UINT64_MAX, false);
    if (!st.ok()) co_return co_await failWith(conn, &follow, st);
  }
  if (!co_await sendPending(conn, &follow)) co_return false;
  watchForHangUp(conn);

  while (true) {
    if (conn->peer_gone) co_return false;
    if (conn->stop_requested) {
      co_return co_await failWith(
          conn, &follow,
          absl::UnavailableError(
              absl::StrCat("server shutting down: resume later with ", follow.resumeHint())));
    }
    std::deque<OutputEvent> events;
    bool overflow = false;
    {
      std::lock_guard lock(queue->mu);
      events.swap(queue->events);
      // Still this follower's until written: the cap counts it.
      queue->in_flight_bytes += queue->queued_bytes;
      queue->queued_bytes = 0;
      overflow = queue->overflow;
      queue->wake_posted = false;
    }
    if (overflow) {
      // The last event must not wait out the idle timeout on a client that reads nothing.
      conn->dropIfStillWriting(kDropGrace);
      co_return co_await failWith(
          conn, &follow,
          absl::ResourceExhaustedError(absl::StrCat(
              "this follower fell more than ", options.sse_max_queued_bytes,
              " bytes behind the command's output and was dropped (read faster, or raise "
              "musterd --http-follower-buffer-bytes); resume where it stopped with ",
              follow.resumeHint())));
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
        absl::Status st = co_await readStored(conn, &follow, &s, event.chunk.offset, true);
        if (!st.ok()) co_return co_await failWith(conn, &follow, st);
      }
      addChunk(follow, s, event.chunk.offset, event.chunk.data);
    }
    events.clear();
    bool sent = co_await sendPending(conn, &follow);
    {
      std::lock_guard lock(queue->mu);
      queue->stats->follower_buffered_bytes.fetch_sub(static_cast<int64_t>(queue->in_flight_bytes),
                                                      std::memory_order_relaxed);
      queue->in_flight_bytes = 0;
    }
    if (!sent) co_return false;
  }
}

}  // namespace muster::server::http
