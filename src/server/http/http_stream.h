// Internal to the HTTP server: a client connection's byte stream, TLS or plaintext, with
// Beast's timeouts underneath either way. Beast's HTTP algorithms take it like any
// AsyncReadStream/AsyncWriteStream; the timeouts, the socket and close() are the TCP
// layer's, so the connection code is the same for both.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <optional>
#include <utility>

namespace muster::server::http {

class HttpStream {
 public:
  using executor_type = boost::beast::tcp_stream::executor_type;

  explicit HttpStream(boost::asio::ip::tcp::socket socket) : tcp_(std::move(socket)) {}

  // Wraps the connection in TLS; the handshake is the caller's (handshake()).
  void useTls(std::shared_ptr<boost::asio::ssl::context> context) {
    context_ = std::move(context);
    tls_.emplace(tcp_, *context_);
  }
  bool tls() const { return tls_.has_value(); }
  boost::asio::ssl::stream<boost::beast::tcp_stream&>& tlsStream() { return *tls_; }

  executor_type get_executor() { return tcp_.get_executor(); }
  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
    return tcp_.async_read_some(buffers, std::forward<Token>(token));
  }
  template <typename Buffers, typename Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    if (tls_) return tls_->async_write_some(buffers, std::forward<Token>(token));
    return tcp_.async_write_some(buffers, std::forward<Token>(token));
  }

  template <typename Duration>
  void expires_after(Duration d) {
    tcp_.expires_after(d);
  }
  template <typename TimePoint>
  void expires_at(TimePoint t) {
    tcp_.expires_at(t);
  }
  void expires_never() { tcp_.expires_never(); }
  boost::asio::ip::tcp::socket& socket() { return tcp_.socket(); }
  boost::beast::tcp_stream& tcp() { return tcp_; }
  void close() { tcp_.close(); }

 private:
  boost::beast::tcp_stream tcp_;
  std::shared_ptr<boost::asio::ssl::context> context_;  // kept alive while tls_ uses it
  std::optional<boost::asio::ssl::stream<boost::beast::tcp_stream&>> tls_;
};

}  // namespace muster::server::http
