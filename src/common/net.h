// Listen addresses: HOST:PORT parsing and whether a host is loopback only, decided on the
// addresses it resolves to (never on how its name is spelled).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace muster::common {

struct HostPort {
  std::string host;  // brackets of "[::1]" removed; may be empty (":7080")
  int port = 0;      // 0..65535
};

// "HOST:PORT", "[V6]:PORT"; an error saying what is wrong otherwise.
absl::StatusOr<HostPort> splitHostPort(std::string_view listen);

// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104, given in numeric form. Everything
// else is false: wildcards (0.0.0.0, ::), other addresses, names, zone ids, garbage.
bool isLoopbackAddress(std::string_view numeric);

// The numeric addresses `host` resolves to (getaddrinfo, both families); an error when it
// resolves to none.
absl::StatusOr<std::vector<std::string>> resolveHost(const std::string& host);
using HostResolver = std::function<absl::StatusOr<std::vector<std::string>>(const std::string&)>;

// OK when every address the host of `listen` resolves to is loopback, so that a listener on
// it is reachable from this machine only. Otherwise FailedPrecondition (or InvalidArgument
// for a malformed address) with a message naming the offending address, e.g. "0.0.0.0 is
// every interface" or "'127.evil.com' resolves to 93.184.216.34, which is not loopback".
absl::Status checkLoopbackListen(std::string_view listen,
                                 const HostResolver& resolve = resolveHost);

}  // namespace muster::common
