// Helpers shared by the integration tests and the load generator (never linked into the
// product): one blocking HTTP call through libcurl, and a free loopback TCP port.
#pragma once

#include <string>
#include <vector>

namespace muster::testkit {

struct HttpResult {
  long status = 0;  // 0: the server could not be reached or did not answer in time
  std::string body;
};

// Sends `method url` with a bearer token (omitted when empty), a JSON body (when `body` is
// not null) and a timeout in seconds. Reuses one connection per calling thread.
// https:// URLs are verified against `ca_file` (a PEM file; empty: the system's CAs).
HttpResult httpCall(const std::string& method, const std::string& url, const std::string& token,
                    const std::string* body, long timeout_s, const std::string& ca_file = "",
                    const std::vector<std::string>& extra_headers = {});

// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's range for outgoing
// connections, and claimed for this process (a lock file in /tmp/muster-test-ports) so no
// other test process picks it while this one runs.
int freeTcpPort();

}  // namespace muster::testkit
