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
}  // namespace muster::common
