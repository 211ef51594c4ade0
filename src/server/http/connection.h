// Internal to the HTTP server: one client connection, served by one coroutine on its own
// strand (keep-alive, limits, timeouts), and the event stream that can take it over.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "server/http/api.h"
#include "server/http/http_stream.h"
#include "server/http/server_state.h"

namespace muster::server::http {

namespace beast = boost::beast;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<ServerState> state, asio::ip::tcp::socket socket)
      : state_(std::move(state)),
        stream_(std::move(socket)),
        drop_timer_(stream_.get_executor()),
        accepted_at_(std::chrono::steady_clock::now()) {}

  // Any thread: answer the request in progress (if any), then close; event streams end now.
  void requestStop();
  // Any thread: close the socket now; pending operations fail.
  void forceClose();
  // Strand only: an event stream fell behind. If its write is still stuck `grace` from now
  // (the client is not reading), the socket is closed; a client that still reads gets the
  // event saying why the stream ends.
  void dropIfStillWriting(std::chrono::milliseconds grace);

  ServerState& state() { return *state_; }
  const std::shared_ptr<ServerState>& sharedState() { return state_; }
  HttpStream& stream() { return stream_; }
  beast::flat_buffer& buffer() { return buffer_; }
  std::chrono::steady_clock::time_point acceptedAt() const { return accepted_at_; }

  // --- strand only ---
  bool busy = false;                          // between reading a request and answering it
  bool stop_requested = false;                // set by requestStop()
  asio::steady_timer* event_timer = nullptr;  // an event stream's wait; cancelled to wake it
  bool event_write_pending = false;           // an event stream's write is in flight
  bool peer_gone = false;                     // the client closed its end during a stream

 private:
  std::shared_ptr<ServerState> state_;
  HttpStream stream_;
  asio::steady_timer drop_timer_;
  beast::flat_buffer buffer_;
  const std::chrono::steady_clock::time_point accepted_at_;
};

enum class TimeoutPhase { kHeader, kBody, kIdle, kWrite };
// Counts a connection closed by a timeout (and logs it, rate-limited).
void noteTimeout(ServerState& state, TimeoutPhase phase);
// Counts a failed TLS handshake (and logs it, rate-limited).
void noteTlsFailure(ServerState& state, const std::string& why);

// Serves requests until the client leaves, a timeout fires or the server stops.
asio::awaitable<void> serveConnection(std::shared_ptr<Connection> connection);

// Answers a connection over max_connections with 503 and closes it (not registered).
asio::awaitable<void> refuseConnection(std::shared_ptr<Connection> connection);

// Streams a command's output as Server-Sent Events (stored output first, then live, then an
// `end` event). True when the connection may serve another request afterwards.
asio::awaitable<bool> serveFollow(std::shared_ptr<Connection> connection, FollowSpec spec,
                                  bool keep_alive, FollowerSlot slot);

// Streams the audit log as Server-Sent Events (stored events after the resume id, then live
// ones). True when the connection may serve another request afterwards.
asio::awaitable<bool> serveEventFollow(std::shared_ptr<Connection> connection, EventFollowSpec spec,
                                       bool keep_alive, FollowerSlot slot);

// --- shared by the event streams (sse_follow.cc) ---
// One event: "id: ID\n" (when given), "event: NAME\n", "data: JSON\n\n".
std::string sseEvent(std::string_view name, const boost::json::value& data,
                     std::string_view id = {});
// Writes the 200 text/event-stream header of a chunked body. False when the client is gone.
asio::awaitable<bool> startEventStream(std::shared_ptr<Connection> conn, bool keep_alive);
// Sends `text` as one HTTP chunk. False when the client is gone, or was cut off.
asio::awaitable<bool> sendChunk(std::shared_ptr<Connection> conn, std::string text);
// Ends the chunked body.
asio::awaitable<bool> sendLastChunk(std::shared_ptr<Connection> conn);
// Sets conn->peer_gone (and wakes conn->event_timer) when the client closes its end.
void watchForHangUp(const std::shared_ptr<Connection>& conn);

}  // namespace muster::server::http
