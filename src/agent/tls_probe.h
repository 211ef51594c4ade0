// Before the agent trusts any CA: one TLS handshake with the server that checks nothing,
// only to read the certificate chain it presents (its CA rides along), so the agent can
// compare the CA with the pin in its enrollment token. Also how a failed link is diagnosed:
// the chain says whether the CA changed, the name does not match or the certificate expired.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace muster::agent {

// The PEM chain `target` (HOST:PORT) presents. UNAVAILABLE when it cannot be reached;
// FAILED_PRECONDITION when it does not speak TLS (musterd --insecure-plaintext, say).
absl::StatusOr<std::string> fetchServerChain(const std::string& target, int64_t timeout_ms);

// The host part of HOST:PORT ("[::1]:7443" -> "::1").
std::string targetHost(const std::string& target);

}  // namespace muster::agent
