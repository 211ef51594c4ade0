// Simulated agents for muster-loadgen: the real agent link client (src/agent/link_client),
// one TCP connection per agent, answering exec commands instantly without forking.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "agent/link.h"
#include "agent/link_client.h"
#include "common/backoff.h"

namespace muster::bench {

int64_t steadyMs();

struct SimOptions {
  std::vector<std::string> targets;  // host:port; agents are spread across them
  int64_t backoff_base_ms = 1000;
  int64_t backoff_cap_ms = 60'000;
  agent::LinkSecurity security;  // plaintext, or TLS with musterd's CA (and client certs)
  bool tls_resume = true;        // each agent keeps its TLS session for its reconnects
  // mTLS: each agent's key and client certificate, by index (empty: none presented).
  std::vector<std::pair<std::string, std::string>> client_certs;
};

struct SimStats {
  std::atomic<uint64_t> connect_attempts{0};
  std::atomic<uint64_t> welcomed{0};  // currently welcomed
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<int64_t> open_streams{0};
  std::atomic<uint64_t> early_retries{0};  // attempts sooner than the backoff's floor
  std::array<std::atomic<uint64_t>, 17> closed_by_code{};  // by gRPC status code
};

class SimFleet {
 public:
  SimFleet(SimOptions options, std::vector<std::pair<std::string, std::string>> identities);
  ~SimFleet();

  void connectAll();
  // Sends a heartbeat from the welcomed agents [begin, end) (end is clamped to the fleet).
  void heartbeat(size_t begin, size_t end);
  size_t size() const { return agents_.size(); }
  size_t welcomedCount() const { return stats_.welcomed.load(); }
  const SimStats& stats() const { return stats_; }
  // Largest number of connection attempts any single agent made.
  uint64_t maxAttemptsPerAgent() const;
  // Smallest gap between two consecutive attempts of one agent after a failure, in ms.
  int64_t minRetryGapMs() const;
  void resetAttempts();
  // Per agent: steady-clock ms of the last ResultAck, and commands received so far.
  std::vector<int64_t> lastAckMs() const;
  std::vector<uint64_t> commandsPerAgent() const;
  void closeAll();

 private:
  struct Agent;
  void connect(size_t index);
  void scheduleReconnect(size_t index, int64_t delay_ms);
  void timerLoop();

  SimOptions options_;
  SimStats stats_;
  std::vector<std::unique_ptr<Agent>> agents_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;

  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  using Due = std::pair<std::chrono::steady_clock::time_point, size_t>;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace muster::bench
