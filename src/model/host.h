// A machine of the fleet as the control plane knows it.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace muster::model {

enum class HostStatus { kOffline = 0, kOnline = 1, kRevoked = 2 };

std::string_view toString(HostStatus status);
bool parseHostStatus(std::string_view text, HostStatus* out);

struct Metrics {
  double load1 = 0, load5 = 0, load15 = 0;
  uint64_t mem_total_bytes = 0, mem_available_bytes = 0;
  uint64_t disk_total_bytes = 0, disk_free_bytes = 0;
  uint64_t uptime_seconds = 0;
};

using StringMap = std::map<std::string, std::string>;

struct Host {
  std::string id;
  HostStatus status = HostStatus::kOffline;
  std::string version;
  StringMap facts;
  StringMap labels;
  Metrics metrics;
  int64_t enrolled_at_ms = 0;
  int64_t last_seen_ms = 0;
  int64_t status_changed_at_ms = 0;
  std::string credential_hash;  // SHA-256 hex of the agent's credential; never leaves the server
  // Label keys set by an enrollment token or an operator: labels the agent reports for itself
  // never replace them.
  std::set<std::string> pinned_labels;
  // SHA-256 hex of the attempt id the agent enrolled with (it keeps the id until it has saved
  // its credential): the same agent retrying after a lost reply may enroll again until it
  // first connects. Empty: none.
  std::string enroll_attempt_hash;
  // The agent's client certificate (mTLS): SHA-256 hex of its DER and when it expires, and
  // the one it replaced at the last renewal (accepted until the agent connects with the new
  // one). Empty: none issued. A revoked host keeps them, so its certificates stay refused.
  std::string client_cert_sha256;
  int64_t client_cert_not_after_ms = 0;
  std::string prev_client_cert_sha256;
};

}  // namespace muster::model
