#include "agent/tls_probe.h"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/net.h"

namespace muster::agent {
namespace {

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits for `events` on `fd` until `deadline`; false on timeout.
bool waitFor(int fd, short events, int64_t deadline) {
  while (true) {
    int64_t left = deadline - steadyMs();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string targetHost(const std::string& target) {
  auto hp = common::splitHostPort(target);
  return hp.ok() ? hp->host : target;
}

absl::StatusOr<std::string> fetchServerChain(const std::string& target, int64_t timeout_ms) {
  auto hp = common::splitHostPort(target);
  if (!hp.ok() || hp->host.empty() || hp->port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--server ", target, ": expected HOST:PORT, e.g. musterd.example:7443"));
  }
  const int64_t deadline = steadyMs() + timeout_ms;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  std::string port = std::to_string(hp->port);
  if (int rc = getaddrinfo(hp->host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", hp->host, ": ", gai_strerror(rc)));
  }
  Fd sock;
  std::string last = "no address";
  for (addrinfo* a = found; a != nullptr && sock.fd < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = std::strerror(errno);
      ::close(fd);
      continue;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (!waitFor(fd, POLLOUT, deadline) ||
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      last = err != 0 ? std::strerror(err) : "timed out";
      ::close(fd);
      continue;
    }
    sock.fd = fd;
  }
  freeaddrinfo(found);
  if (sock.fd < 0)
    return absl::UnavailableError(absl::StrCat("cannot connect to ", target, ": ", last));

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);  // nothing is trusted yet: see pin
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof kAlpn);
  if (!common::isLoopbackAddress(hp->host)) SSL_set_tlsext_host_name(ssl.get(), hp->host.c_str());
  SSL_set_fd(ssl.get(), sock.fd);
  while (true) {
    int rc = SSL_connect(ssl.get());
    if (rc == 1) break;
    int err = SSL_get_error(ssl.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!waitFor(sock.fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
        return absl::UnavailableError(absl::StrCat("TLS handshake with ", target, " timed out"));
      }
      continue;
    }
    unsigned long e = ERR_get_error();
    char buf[256] = "connection closed";
    if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(target, " does not speak TLS (", buf,
                     "): is musterd running with --insecure-plaintext? Then give the agent "
                     "--insecure-plaintext too, or better, run musterd with TLS (its default)"));
  }
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl.get());
  std::string pem;
  for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_X509(bio.get(), sk_X509_value(chain, i));
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    pem.append(data, static_cast<size_t>(n));
  }
  SSL_shutdown(ssl.get());
  if (pem.empty()) return absl::FailedPreconditionError(target + " presented no certificate");
  return pem;
}

}  // namespace muster::agent
