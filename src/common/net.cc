// HOST:PORT parsing and the loopback check of listen addresses.
#include "common/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace muster::common {

absl::StatusOr<HostPort> splitHostPort(std::string_view listen) {
  std::string shown(listen.substr(0, 200));
  size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos || colon + 1 >= listen.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid listen address '", shown, "': use HOST:PORT, like 127.0.0.1:7080"));
  }
  HostPort out;
  out.host = std::string(listen.substr(0, colon));
  std::string port(listen.substr(colon + 1));
  if (!absl::SimpleAtoi(port, &out.port) || out.port < 0 || out.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid port in listen address '", shown, "': use 0..65535"));
  }
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  } else if (out.host.find(':') != std::string::npos) {
    // "::1:7080" is ambiguous: is 7080 the port or the last group of the address?
    return absl::InvalidArgumentError(absl::StrCat("invalid listen address '", shown,
                                                   "': put an IPv6 address in brackets, like "
                                                   "[::1]:7080"));
  }
  return out;
}

bool isLoopbackAddress(std::string_view numeric) {
  std::string text(numeric);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // An IPv4 loopback address reached over an IPv6 socket.
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> resolveHost(const std::string& host) {
  if (host.empty()) {
    return absl::InvalidArgumentError("empty host (listens on every interface)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resolve '", host.substr(0, 200), "': ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    char text[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST) !=
        0) {
      continue;
    }
    out.emplace_back(text);
  }
  freeaddrinfo(found);
  if (out.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", host.substr(0, 200), "' resolves to no IPv4 or IPv6 address"));
  }
  return out;
}

}  // namespace muster::common
