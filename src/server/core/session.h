// The transport-neutral view of one agent's live link. gRPC streams (and later HTTP
// long-polls) adapt to this; the core never sees the transport.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "model/command.h"
#include "model/host.h"

namespace muster::server {

// --- server -> agent ---
struct WelcomeMsg {
  std::string session_id;
  int64_t heartbeat_interval_ms = 0;
  int64_t server_time_ms = 0;
  int64_t reconnect_window_ms = 0;
};
struct DispatchMsg {
  model::Command command;
};
struct CancelMsg {
  std::string command_id;
  std::string reason;
};
struct ResultAckMsg {
  std::string command_id;
  bool rejected = false;
  std::string reason;
};
using ServerEvent = std::variant<WelcomeMsg, DispatchMsg, CancelMsg, ResultAckMsg>;

// --- agent -> server (ControlPlane::onAgentMessage) ---
struct HelloInfo {
  std::string agent_id;
  std::string version;
  model::StringMap facts;
  model::StringMap labels;
  std::vector<std::string> in_flight_command_ids;
  std::vector<std::string> unacked_command_ids;
};
struct HeartbeatMsg {
  model::Metrics metrics;
};
struct AcceptedMsg {
  std::string command_id;
  int64_t started_at_ms = 0;  // the agent's clock; the server stamps its own
};
struct OutputMsg {
  model::OutputChunk chunk;
};
struct ResultMsg {
  model::CommandResult result;
};
using AgentEvent = std::variant<HelloInfo, HeartbeatMsg, AcceptedMsg, OutputMsg, ResultMsg>;

class ControlPlane;

class Session {
 public:
  virtual ~Session() = default;
  virtual const std::string& agentId() const = 0;
  virtual const std::string& sessionId() const = 0;
  // Queues a message for the agent. Never blocks; false once the session is closed.
  virtual bool send(ServerEvent event) = 0;
  // Ends the link with `why` (idempotent). The agent sees it as the stream's status.
  virtual void close(absl::Status why) = 0;
  // Messages and bytes queued behind the write in flight (0 where the transport cannot
  // tell). The core's redelivery keeps them under its window, below the transport's bound.
  virtual size_t queuedMessages() const { return 0; }
  virtual size_t queuedBytes() const { return 0; }

  // Core-owned: open commands still to be redelivered on this link. A host with more open
  // commands than the redelivery window gets them a window at a time (as its agent reads and
  // reports), not all at once into a send queue they would overflow on every reconnect.
  void setRedelivery(std::vector<std::string> ids) {
    std::lock_guard lock(redelivery_mu_);
    redelivery_ = std::move(ids);
    redelivery_next_ = 0;
    redelivery_left_.store(redelivery_.size(), std::memory_order_release);
  }
  std::vector<std::string> takeRedelivery(size_t n) {
    std::lock_guard lock(redelivery_mu_);
    std::vector<std::string> out;
    while (redelivery_next_ < redelivery_.size() && out.size() < n) {
      out.push_back(std::move(redelivery_[redelivery_next_++]));
    }
    if (redelivery_next_ == redelivery_.size()) {
      redelivery_ = {};  // frees it
      redelivery_next_ = 0;
    }
    redelivery_left_.store(redelivery_.size() - redelivery_next_, std::memory_order_release);
    return out;
  }
  size_t redeliveryLeft() const { return redelivery_left_.load(std::memory_order_acquire); }
  // Held while the core tops the window up; false (not taken) when another thread does.
  class RedeliveryTurn {
   public:
    explicit RedeliveryTurn(Session& s) : s_(s) {
      taken_ = !s_.topping_up_.exchange(true, std::memory_order_acq_rel);
    }
    ~RedeliveryTurn() {
      if (taken_) s_.topping_up_.store(false, std::memory_order_release);
    }
    RedeliveryTurn(const RedeliveryTurn&) = delete;
    RedeliveryTurn& operator=(const RedeliveryTurn&) = delete;
    explicit operator bool() const { return taken_; }

   private:
    Session& s_;
    bool taken_ = false;
  };

  // Core-owned: an output write of this stream failed (disk full), so no result reported on
  // it may be acked any more; the agent keeps output and results and resends both on its
  // next stream.
  void markOutputLost() { output_lost_.store(true, std::memory_order_release); }
  bool outputLost() const { return output_lost_.load(std::memory_order_acquire); }
  // Core-owned: the link's protocol state, kept here by ControlPlane::onAgentMessage so that
  // every transport shares it. True once a Hello arrived on this link (accepted or refused).
  bool helloReceived() const { return phase_.load(std::memory_order_acquire) != kAwaitingHello; }

 private:
  friend class ControlPlane;
  enum Phase : uint8_t { kAwaitingHello, kHelloReceived, kLive };
  std::atomic<Phase> phase_{kAwaitingHello};
  std::atomic<bool> output_lost_{false};
  // A vector, not a deque: an empty std::deque allocates ~600 bytes, on every link.
  std::mutex redelivery_mu_;
  std::vector<std::string> redelivery_;
  size_t redelivery_next_ = 0;
  std::atomic<size_t> redelivery_left_{0};
  std::atomic<bool> topping_up_{false};
};

}  // namespace muster::server
