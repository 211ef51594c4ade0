// A Session that records what the core sends, for core unit tests.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "server/core/session.h"

namespace muster::server::testing {

class FakeSession final : public Session {
 public:
  FakeSession(std::string agent_id, std::string session_id)
      : agent_id_(std::move(agent_id)), session_id_(std::move(session_id)) {}
  const std::string& agentId() const override { return agent_id_; }
  const std::string& sessionId() const override { return session_id_; }
  // Called with every event as it is sent (on the sender's thread), before it is recorded.
  void setOnSend(std::function<void(const ServerEvent&)> hook) {
    std::lock_guard lock(mu_);
    on_send_ = std::move(hook);
  }
  bool send(ServerEvent event) override {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    if (on_send_) on_send_(event);
    events_.push_back(std::move(event));
    return true;
  }
  void close(absl::Status why) override {
    std::lock_guard lock(mu_);
    if (!closed_) close_status_ = why;
    closed_ = true;
  }

  // With a simulated queue, every event sent stays queued until readAll(): queuedMessages()
  // is what the agent has not read yet (without, it reports 0, as an unknown queue).
  void simulateQueue() {
    std::lock_guard lock(mu_);
    simulate_queue_ = true;
    read_ = events_.size();
  }
  void readAll() {
    std::lock_guard lock(mu_);
    read_ = events_.size();
  }
  size_t queuedMessages() const override {
    std::lock_guard lock(mu_);
    return simulate_queue_ ? events_.size() - read_ : 0;
  }
  // Unread bytes, counting a Dispatch as its argv plus 64 and anything else as 64.
  size_t queuedBytes() const override {
    std::lock_guard lock(mu_);
    if (!simulate_queue_) return 0;
    size_t bytes = 0;
    for (size_t i = read_; i < events_.size(); ++i) {
      bytes += 64;
      if (auto* d = std::get_if<DispatchMsg>(&events_[i])) {
        for (const auto& a : d->command.exec.argv) bytes += a.size();
      }
    }
    return bytes;
  }

  template <class T>
  std::vector<T> sent() {
    std::lock_guard lock(mu_);
    std::vector<T> out;
    for (const auto& e : events_) {
      if (auto* v = std::get_if<T>(&e)) out.push_back(*v);
    }
    return out;
  }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  std::optional<absl::Status> closeStatus() {
    std::lock_guard lock(mu_);
    return close_status_;
  }

 private:
  std::string agent_id_, session_id_;
  mutable std::mutex mu_;
  bool simulate_queue_ = false;
  size_t read_ = 0;
  std::vector<ServerEvent> events_;
  bool closed_ = false;
  std::optional<absl::Status> close_status_;
  std::function<void(const ServerEvent&)> on_send_;
};

}  // namespace muster::server::testing
