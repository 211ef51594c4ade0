// Connection: the request loop of one client (read, limit, route, answer, keep alive).
#include "server/http/connection.h"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>

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

// Answers and returns whether the write succeeded.
asio::awaitable<bool> writeReply(std::shared_ptr<Connection> conn, ApiReply reply, unsigned version,
                                 bool keep_alive, bool head) {
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

asio::awaitable<void> serveConnection(std::shared_ptr<Connection> conn) {
  Registration registration{conn->state(), conn.get()};
  ServerState& state = conn->state();
  const HttpOptions& options = state.options;
  auto& stream = conn->stream();
  auto& buffer = conn->buffer();
  bool first = true;

  while (!conn->stop_requested) {
    // Wait for the first byte of the next request: the idle timeout.
    if (buffer.size() == 0) {
      stream.expires_after(
          milliseconds(first ? options.header_timeout_ms : options.idle_timeout_ms));
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(8192), kTuple);
      if (ec) co_return;  // idle timeout, client left, or shutdown closed us
      buffer.commit(n);
    }
    first = false;
    if (conn->stop_requested) break;
    conn->busy = true;

    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(options.max_body_bytes);
    stream.expires_after(milliseconds(options.header_timeout_ms));
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
        if (cec) co_return;
      }
      stream.expires_after(milliseconds(options.idle_timeout_ms));
      auto [bec, bn] = co_await bhttp::async_read(stream, buffer, parser, kTuple);
      if (bec == bhttp::error::body_limit) {
        state.stats.record(Route::kUnknown, 413);
        co_await writeReply(conn, tooLarge(options.max_body_bytes), version, false, false);
        break;
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
    request.body = std::move(req.body());
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

    if (reply.follow) {
      state.stats.record(route, 200);
      bool reusable = co_await serveFollow(conn, *std::move(reply.follow), keep_alive);
      conn->busy = false;
      if (!reusable) break;
      continue;
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
