// Connection: the request loop of one client (read, limit, route, answer, keep alive).
#include "server/http/connection.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/file_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "server/http/api_json.h"

namespace muster::server::http {
namespace {

namespace bhttp = boost::beast::http;
using std::chrono::milliseconds;

constexpr uint32_t kHeaderLimit = 16 * 1024;
constexpr uint64_t kLingerDrainBytes = 4 << 20;

struct Registration {
  ServerState& state;
  const Connection* connection;
  ~Registration() { state.removeConnection(connection); }
};

}  // namespace

void noteTimeout(ServerState& state, TimeoutPhase phase) {
  TransportStats& t = state.transport();
  const HttpOptions& o = state.options;
  const char* what = "";
  const char* flag = "";
  int64_t ms = 0;
  switch (phase) {
    case TimeoutPhase::kHeader:
      t.header_timeouts.fetch_add(1, std::memory_order_relaxed);
      what = "its request headers did not arrive";
      flag = "--http-header-timeout";
      ms = o.header_timeout_ms;
      break;
    case TimeoutPhase::kBody:
      t.body_timeouts.fetch_add(1, std::memory_order_relaxed);
      what = "its request body did not arrive";
      flag = "--http-body-timeout";
      ms = o.body_timeout_ms;
      break;
    case TimeoutPhase::kIdle:
      // Keep-alive connections ending quietly are normal: counted, never logged.
      t.idle_timeouts.fetch_add(1, std::memory_order_relaxed);
      return;
    case TimeoutPhase::kWrite:
      t.write_timeouts.fetch_add(1, std::memory_order_relaxed);
      what = "it did not read what we sent";
      flag = "--http-idle-timeout";
      ms = o.idle_timeout_ms;
      break;
  }
  uint64_t skipped = 0;
  if (state.timeouts_log.allow(&skipped)) {
    spdlog::warn(
        "http: closed a connection: {} within {} ms ({}): a slow or stuck client, or a "
        "slowloris attack ({} more timeouts since the last message)",
        what, ms, flag, skipped);
  }
}

void noteTlsFailure(ServerState& state, const std::string& why) {
  state.transport().tls_failures.fetch_add(1, std::memory_order_relaxed);
  uint64_t skipped = 0;
  if (state.tls_log.allow(&skipped)) {
    spdlog::warn(
        "http: a client's TLS handshake failed ({}): a client without the CA, or speaking "
        "plain HTTP to the HTTPS port ({} more since the last message)",
        why, skipped);
  }
}

namespace {

asio::awaitable<bool> writeReply(std::shared_ptr<Connection> conn, ApiReply reply, unsigned version,
                                 bool keep_alive, bool head);

// A part of a file (a Range reply): read in 64 KB pieces at offsets as the client takes them.
asio::awaitable<bool> writeFileRange(std::shared_ptr<Connection> conn, ApiReply reply,
                                     unsigned version, bool keep_alive, bool head) {
  int fd = ::open(reply.file_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ApiReply missing = errorReply(404, "not_found", "cannot open the requested content");
    co_return co_await writeReply(conn, std::move(missing), version, keep_alive, head);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  bhttp::response<bhttp::buffer_body> res{static_cast<bhttp::status>(reply.status), version};
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, reply.content_type);
  res.set(bhttp::field::cache_control, "no-store");
  for (const auto& [name, value] : reply.headers) res.set(name, value);
  res.keep_alive(keep_alive);
  uint64_t left = reply.file_length.value_or(0);
  res.content_length(left);
  res.body().data = nullptr;
  res.body().more = !head && left > 0;
  bhttp::response_serializer<bhttp::buffer_body> sr{res};
  const auto idle = milliseconds(conn->state().options.idle_timeout_ms);
  conn->stream().expires_after(idle);
  auto [hec, hn] = co_await bhttp::async_write_header(conn->stream(), sr, kTuple);
  if (hec || head) co_return !hec;
  std::vector<char> buf(64 * 1024);
  uint64_t offset = reply.file_offset;
  while (left > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), left));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset));
    if (n <= 0) co_return false;  // the file shrank under us: the client sees a short body
    offset += static_cast<uint64_t>(n);
    left -= static_cast<uint64_t>(n);
    res.body().data = buf.data();
    res.body().size = static_cast<size_t>(n);
    res.body().more = left > 0;
    conn->stream().expires_after(idle);
    auto [wec, wn] = co_await bhttp::async_write(conn->stream(), sr, kTuple);
    if (wec == bhttp::error::need_buffer) continue;
    if (wec == beast::error::timeout) noteTimeout(conn->state(), TimeoutPhase::kWrite);
    if (wec) co_return false;
  }
  res.body().data = nullptr;
  res.body().more = false;
  auto [fec, fn] = co_await bhttp::async_write(conn->stream(), sr, kTuple);
  co_return !fec;
}

// A reply whose body is a file (read as it is written, never whole in memory).
asio::awaitable<bool> writeFile(std::shared_ptr<Connection> conn, ApiReply reply, unsigned version,
                                bool keep_alive, bool head) {
  if (reply.file_length) {
    co_return co_await writeFileRange(std::move(conn), std::move(reply), version, keep_alive, head);
  }
  bhttp::response<bhttp::file_body> res{static_cast<bhttp::status>(reply.status), version};
  beast::error_code ec;
  res.body().open(reply.file_path.c_str(), beast::file_mode::scan, ec);
  if (ec) {
    ApiReply missing = errorReply(404, "not_found", "cannot open " + reply.file_path);
    co_return co_await writeReply(conn, std::move(missing), version, keep_alive, head);
  }
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, reply.content_type);
  res.set(bhttp::field::cache_control, "no-store");
  for (const auto& [name, value] : reply.headers) res.set(name, value);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  bhttp::response_serializer<bhttp::file_body> sr{res};
  const auto idle = milliseconds(conn->state().options.idle_timeout_ms);
  if (head) {
    conn->stream().expires_after(idle);
    auto [hec, hn] = co_await bhttp::async_write_header(conn->stream(), sr, kTuple);
    co_return !hec;
  }
  // Piece by piece, the timer renewed for each: a large file to a slow but reading client
  // takes as long as it takes; a client that stops reading is dropped after the idle timeout.
  while (!sr.is_done()) {
    conn->stream().expires_after(idle);
    auto [wec, n] = co_await bhttp::async_write_some(conn->stream(), sr, kTuple);
    if (wec == beast::error::timeout) noteTimeout(conn->state(), TimeoutPhase::kWrite);
    if (wec) co_return false;
  }
  co_return true;
}

// Answers and returns whether the write succeeded.
asio::awaitable<bool> writeReply(std::shared_ptr<Connection> conn, ApiReply reply, unsigned version,
                                 bool keep_alive, bool head) {
  if (!reply.file_path.empty())
    co_return co_await writeFile(conn, std::move(reply), version, keep_alive, head);
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(reply.status), version};
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, reply.content_type);
  res.set(bhttp::field::cache_control, "no-store");
  for (const auto& [name, value] : reply.headers) res.set(name, value);
  res.keep_alive(keep_alive);
  res.body() = std::move(reply.body);
  res.prepare_payload();
  if (head) {
    size_t length = res.body().size();
    res.body().clear();
    res.content_length(length);
  }
  conn->stream().expires_after(milliseconds(conn->state().options.idle_timeout_ms));
  auto [ec, written] = co_await bhttp::async_write(conn->stream(), res, kTuple);
  if (ec == beast::error::timeout) noteTimeout(conn->state(), TimeoutPhase::kWrite);
  co_return !ec;
}

// Half-closes, then reads (and drops) what the client still sends for a moment, so it
// sees our last response instead of a reset.
asio::awaitable<void> lingerClose(std::shared_ptr<Connection> conn) {
  auto& stream = conn->stream();
  if (!stream.socket().is_open()) co_return;
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  stream.expires_after(std::chrono::seconds(1));
  std::array<char, 16384> sink;
  uint64_t drained = 0;
  while (drained < kLingerDrainBytes) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), kTuple);
    if (ec) break;
    drained += n;
  }
  stream.close();
}

ApiReply tooLarge(uint64_t limit) {
  return errorReply(413, "payload_too_large",
                    "request body larger than " + std::to_string(limit) +
                        " bytes: send less (or raise the server's body limit)");
}

ApiReply followersFull(const ServerState& state) {
  size_t limit = state.options.sse_max_followers;
  ApiReply reply = errorReply(
      503, "unavailable",
      absl::StrCat("too many live output streams: ", limit, " of ", limit,
                   " in use (musterd --http-max-followers); follow again in a moment, read "
                   "the stored output without ?follow=1, or raise the limit"));
  reply.headers.emplace_back("Retry-After", "5");
  return reply;
}

void noteRefusedFollower(ServerState& state) {
  state.transport().followers_refused.fetch_add(1, std::memory_order_relaxed);
  uint64_t skipped = 0;
  if (state.followers_log.allow(&skipped)) {
    spdlog::warn(
        "http: refused an output stream: {} are live, the limit (--http-max-followers); "
        "clients get 503 until some end ({} more refused since the last message)",
        state.options.sse_max_followers, skipped);
  }
}

bool isDisconnect(const boost::system::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
         ec == asio::error::bad_descriptor || ec == beast::error::timeout ||
         ec == bhttp::error::partial_message;
}

}  // namespace

void Connection::requestStop() {
  asio::post(stream_.get_executor(), [self = shared_from_this()] {
    self->stop_requested = true;
    if (self->event_timer) self->event_timer->cancel();
    if (!self->busy) self->stream_.close();
  });
}

void Connection::forceClose() {
  asio::post(stream_.get_executor(), [self = shared_from_this()] {
    self->stop_requested = true;
    if (self->event_timer) self->event_timer->cancel();
    self->stream_.close();
  });
}

void Connection::dropIfStillWriting(std::chrono::milliseconds grace) {
  drop_timer_.expires_after(grace);
  drop_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    if (ec) return;
    auto self = weak.lock();
    if (self && self->event_write_pending) self->stream_.close();
  });
}

asio::awaitable<void> refuseConnection(std::shared_ptr<Connection> conn) {
  // Each refusal holds a descriptor for up to a second; past this many at once, a flood
  // gets its connections closed without an answer.
  constexpr int kMaxAnswering = 64;
  ServerState& state = conn->state();
  struct Answering {
    std::atomic<int>& n;
    ~Answering() { n.fetch_sub(1); }
  } answering{state.refusing};
  if (state.refusing.fetch_add(1) >= kMaxAnswering) {
    conn->stream().close();
    co_return;
  }
  size_t limit = state.options.max_connections;
  ApiReply reply =
      errorReply(503, "unavailable",
                 absl::StrCat("too many connections: ", limit, " of ", limit,
                              " open (musterd --http-max-connections); retry in a moment, reuse "
                              "connections (keep-alive), or raise the limit"));
  bhttp::response<bhttp::string_body> res{bhttp::status::service_unavailable, 11};
  res.set(bhttp::field::server, "musterd");
  res.set(bhttp::field::content_type, reply.content_type);
  res.set(bhttp::field::cache_control, "no-store");
  res.set(bhttp::field::retry_after, "1");
  res.keep_alive(false);
  res.body() = std::move(reply.body);
  res.prepare_payload();
  auto& stream = conn->stream();
  stream.expires_after(std::chrono::seconds(1));
  auto [ec, n] = co_await bhttp::async_write(stream, res, kTuple);
  if (ec) co_return;
  // The request is unread: closing now could reset the connection before the client has
  // read the answer. Half-close, and read what it sends for a moment.
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  stream.expires_after(milliseconds(500));
  std::array<char, 4096> sink;
  for (int i = 0; i < 16; ++i) {
    auto [rec, rn] = co_await stream.async_read_some(asio::buffer(sink), kTuple);
    if (rec) break;
  }
  stream.close();
}

asio::awaitable<void> serveConnection(std::shared_ptr<Connection> conn) {
  Registration registration{conn->state(), conn.get()};
  ServerState& state = conn->state();
  const HttpOptions& options = state.options;
  auto& stream = conn->stream();
  auto& buffer = conn->buffer();
  bool first = true;
  if (stream.tls()) {
    // The handshake shares the first request's header deadline (a client that connects
    // and never finishes it is a slowloris too).
    stream.expires_at(conn->acceptedAt() + milliseconds(options.header_timeout_ms));
    auto [dec, is_tls] = co_await beast::async_detect_ssl(stream.tcp(), buffer, kTuple);
    if (dec) {
      if (dec == beast::error::timeout) noteTimeout(state, TimeoutPhase::kHeader);
      co_return;
    }
    if (!is_tls) {
      // Plain HTTP on the HTTPS port: say so in plain HTTP rather than hang up.
      noteTlsFailure(state, "plain HTTP");
      ApiReply reply =
          errorReply(400, "tls_required",
                     "this port serves HTTPS (musterd's default): use https:// and musterd's CA "
                     "(muster --ca DATA/tls/ca.crt)");
      bhttp::response<bhttp::string_body> res{bhttp::status::bad_request, 11};
      res.set(bhttp::field::server, "musterd");
      res.set(bhttp::field::content_type, reply.content_type);
      res.keep_alive(false);
      res.body() = std::move(reply.body);
      res.prepare_payload();
      stream.expires_after(std::chrono::seconds(1));
      co_await bhttp::async_write(stream.tcp(), res, kTuple);
      stream.close();
      co_return;
    }
    auto [ec, used] = co_await stream.tlsStream().async_handshake(asio::ssl::stream_base::server,
                                                                  buffer.data(), kTuple);
    if (ec) {
      if (ec == beast::error::timeout) noteTimeout(state, TimeoutPhase::kHeader);
      noteTlsFailure(state, ec.message());
      co_return;
    }
    buffer.consume(used);
  }

  while (!conn->stop_requested) {
    // The header deadline runs from accept for the first request (a client that connects
    // and sends nothing is a slowloris too), from its first byte for later ones.
    auto header_deadline = conn->acceptedAt() + milliseconds(options.header_timeout_ms);
    if (buffer.size() == 0) {
      // Waiting for the next request: the idle timeout (the header timeout for the first).
      if (first) {
        stream.expires_at(header_deadline);
      } else {
        stream.expires_after(milliseconds(options.idle_timeout_ms));
      }
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(8192), kTuple);
      if (ec == beast::error::timeout)
        noteTimeout(state, first ? TimeoutPhase::kHeader : TimeoutPhase::kIdle);
      if (ec) co_return;  // idle timeout, client left, or shutdown closed us
      buffer.commit(n);
    }
    if (!first)
      header_deadline = std::chrono::steady_clock::now() + milliseconds(options.header_timeout_ms);
    first = false;
    if (conn->stop_requested) break;
    conn->busy = true;

    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(options.max_body_bytes);
    // One deadline for all the header lines: trickling them byte by byte does not extend it.
    stream.expires_at(header_deadline);
    auto [hec, hn] = co_await bhttp::async_read_header(stream, buffer, parser, kTuple);
    if (hec == bhttp::error::body_limit) {
      state.stats.record(Route::kUnknown, 413);
      co_await writeReply(conn, tooLarge(options.max_body_bytes), 11, false, false);
      break;
    }
    if (hec == bhttp::error::header_limit) {
      state.stats.record(Route::kUnknown, 431);
      co_await writeReply(conn, errorReply(431, "header_too_large", "request headers too large"),
                          11, false, false);
      break;
    }
    if (hec == beast::error::timeout) {
      state.stats.record(Route::kUnknown, 408);  // tcp_stream closed the socket already
      noteTimeout(state, TimeoutPhase::kHeader);
      co_return;
    }
    if (hec) {
      if (isDisconnect(hec)) co_return;
      state.stats.record(Route::kUnknown, 400);
      co_await writeReply(
          conn,
          errorReply(400, "invalid_argument", "malformed HTTP request (" + hec.message() + ")"), 11,
          false, false);
      break;
    }

    auto& req = parser.get();
    unsigned version = req.version();
    if (auto length = parser.content_length(); length && *length > options.max_body_bytes) {
      state.stats.record(Route::kUnknown, 413);
      co_await writeReply(conn, tooLarge(options.max_body_bytes), version, false, false);
      break;
    }
    if (!parser.is_done()) {
      if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, version};
        stream.expires_after(milliseconds(options.idle_timeout_ms));
        auto [cec, cn] = co_await bhttp::async_write(stream, cont, kTuple);
        if (cec == beast::error::timeout) noteTimeout(state, TimeoutPhase::kWrite);
        if (cec) co_return;
      }
      // One deadline for the whole body, however it is sent (chunked, trickled).
      stream.expires_after(milliseconds(options.body_timeout_ms));
      auto [bec, bn] = co_await bhttp::async_read(stream, buffer, parser, kTuple);
      if (bec == bhttp::error::body_limit) {
        state.stats.record(Route::kUnknown, 413);
        co_await writeReply(conn, tooLarge(options.max_body_bytes), version, false, false);
        break;
      }
      if (bec == beast::error::timeout) {
        state.stats.record(Route::kUnknown, 408);
        noteTimeout(state, TimeoutPhase::kBody);
        co_return;
      }
      if (bec) {
        if (isDisconnect(bec)) co_return;
        state.stats.record(Route::kUnknown, 400);
        co_await writeReply(
            conn,
            errorReply(400, "invalid_argument", "malformed request body (" + bec.message() + ")"),
            version, false, false);
        break;
      }
    }

    ApiRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    request.authorization = std::string(req[bhttp::field::authorization]);
    request.idempotency_key = std::string(req["Idempotency-Key"]);
    request.accept = std::string(req[bhttp::field::accept]);
    request.last_event_id = std::string(req["Last-Event-ID"]);
    request.host = std::string(req[bhttp::field::host]).substr(0, 256);
    request.range = std::string(req[bhttp::field::range]).substr(0, 256);
    request.body = std::move(req.body());
    {
      boost::system::error_code ec;
      auto remote = stream.socket().remote_endpoint(ec);
      if (!ec) {
        std::string address = remote.address().to_string();
        request.peer = remote.address().is_v6() ? absl::StrCat("[", address, "]:", remote.port())
                                                : absl::StrCat(address, ":", remote.port());
      }
    }
    bool keep_alive = req.keep_alive();
    bool head = req.method() == bhttp::verb::head;

    Route route = Route::kUnknown;
    ApiReply reply;
    if (auto inline_reply = state.api.tryInline(request, &route)) {
      reply = *std::move(inline_reply);
    } else {
      using Answer = std::pair<Route, ApiReply>;
      auto shared_state = conn->sharedState();
      auto job = [shared_state, request = std::move(request)]() {
        Answer out{Route::kUnknown, ApiReply{}};
        out.second = shared_state->api.handle(request, &out.first);
        return out;
      };
      Answer answer = co_await runBlocking<Answer>(shared_state, std::move(job));
      route = answer.first;
      reply = std::move(answer.second);
    }

    if (reply.follow_events) {
      if (FollowerSlot slot = state.tryAcquireFollower()) {
        state.stats.record(route, 200);
        bool reusable = co_await serveEventFollow(conn, *std::move(reply.follow_events), keep_alive,
                                                  std::move(slot));
        conn->busy = false;
        if (!reusable) break;
        continue;
      }
      noteRefusedFollower(state);
      reply = followersFull(state);
    }
    if (reply.follow) {
      if (FollowerSlot slot = state.tryAcquireFollower()) {
        state.stats.record(route, 200);
        bool reusable =
            co_await serveFollow(conn, *std::move(reply.follow), keep_alive, std::move(slot));
        conn->busy = false;
        if (!reusable) break;
        continue;
      }
      noteRefusedFollower(state);
      reply = followersFull(state);
    }
    keep_alive = keep_alive && !conn->stop_requested && !state.stopping;
    state.stats.record(route, reply.status);
    bool written = co_await writeReply(conn, std::move(reply), version, keep_alive, head);
    conn->busy = false;
    if (!written) co_return;
    if (!keep_alive) break;
  }
  co_await lingerClose(conn);
}

}  // namespace muster::server::http
