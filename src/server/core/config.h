// Tunables of the control-plane core (set from musterd's flags).
#pragma once

#include <cstdint>

namespace muster::server {

struct CoreConfig {
  int64_t heartbeat_interval_ms = 10'000;
  int missed_heartbeats_offline = 3;
  int64_t default_expiry_ms = 24 * 3600 * 1000LL;
  int64_t default_timeout_ms = 3600 * 1000LL;
  int64_t default_kill_grace_ms = 10'000;
  // Added to a command's timeout before the server itself declares it timed out.
  int64_t server_timeout_grace_ms = 60'000;
  // Bytes of output stored per command and stream (the agent keeps head + tail).
  uint64_t max_output_bytes = 16ull << 20;
  uint64_t max_output_chunk_bytes = 1ull << 20;
  int max_hosts_per_run = 100'000;
  // Live agent links at most; more are refused with RESOURCE_EXHAUSTED so the process never
  // runs out of file descriptors (gRPC 1.51's listener stops for good after EMFILE).
  size_t max_agents = 19'000;
};

}  // namespace muster::server
