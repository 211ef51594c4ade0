// Tunables of the control-plane core (set from musterd's flags).
#pragma once

#include <cstdint>
#include <set>
#include <string>

namespace muster::server {

struct CoreConfig {
  // SHA-256 of the agent link's CA (lower-case hex), carried by every enrollment token so
  // that agents can pin it; empty when the link is plaintext (--insecure-plaintext).
  std::string ca_sha256;
  // mTLS: every agent stream (and certificate renewal) must present the client certificate
  // musterd last issued to that agent id (--require-client-certs). Without it, a certificate
  // an agent presents must still be its own, but agents without one are let in.
  bool require_client_certs = false;
  int64_t heartbeat_interval_ms = 10'000;
  int missed_heartbeats_offline = 3;
  // Heartbeats (metrics, last seen) are stored in one batch at most this often; the registry
  // in memory, which the API reads, has them at once.
  int64_t heartbeat_flush_ms = 1'000;
  int64_t hello_timeout_ms = 10'000;
  int64_t default_expiry_ms = 24 * 3600 * 1000LL;
  int64_t default_timeout_ms = 3600 * 1000LL;
  int64_t default_kill_grace_ms = 10'000;
  // Added to a command's timeout before the server itself declares it timed out.
  int64_t server_timeout_grace_ms = 60'000;
  // A command's `dispatched` state is stored this long after delivery if it is still
  // waiting then (a quick result stores it with the outcome instead).
  int64_t dispatch_mark_delay_ms = 1'000;
  // Bytes of output stored per command and stream (the agent keeps head + tail).
  uint64_t max_output_bytes = 16ull << 20;
  uint64_t max_output_chunk_bytes = 1ull << 20;
  int max_hosts_per_run = 100'000;
  // A run for more hosts than this is stored and sent in slices of this many commands: each
  // slice goes out as soon as it is committed, while the next is being stored. The run row
  // lists every target until the last slice commits, so a crash in between is completed at
  // the next start.
  size_t run_slice_commands = 5000;
  // Live agent links at most; more are refused with RESOURCE_EXHAUSTED so the process never
  // runs out of file descriptors (gRPC 1.51's listener stops for good after EMFILE).
  size_t max_agents = 19'000;
  // Agents per second the server aims to take back after a restart. Each Welcome tells the
  // agent to spread its first reconnect over (enrolled hosts / this) seconds, so a fleet
  // returns at a pace the listen queue and the handshakes keep up with, instead of all at
  // once (dropped SYNs are retried by the kernel only after 1, 3, 7, 15, 31 s).
  int64_t reconnect_rate_per_s = 1000;
  // The store writer's backlog (mutations queued, not applied) past which agent output and
  // results are not taken: the stream ends with UNAVAILABLE and they wait in the agent's
  // outbox until it reconnects, instead of the server's memory growing with the backlog.
  size_t max_store_backlog = 200'000;
  // Resent output and results of commands that already ended wait for the one "slow path"
  // thread (a store read each); past this many the stream ends with UNAVAILABLE.
  size_t max_late_backlog = 20'000;
  // A reconnecting host's open commands are redelivered while its link holds fewer than this
  // many messages and bytes queued; the rest follow as the agent reads (its reports and the
  // tick top the window up). Keep both below the transport's send-queue bound.
  size_t redelivery_window_messages = 1024;
  size_t redelivery_window_bytes = 8u << 20;
  // Label keys agents may set for themselves (at enrollment and in every Hello); empty: any.
  // Labels from an enrollment token or an operator are pinned and never replaced by agents.
  std::set<std::string> agent_label_keys;
  // Audit events older than this are swept by the janitor (hourly); 0 keeps them forever.
  int64_t events_retention_ms = 90 * 24 * 3600 * 1000LL;
};

}  // namespace muster::server
