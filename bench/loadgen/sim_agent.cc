// SimFleet implementation.
#include "bench/loadgen/sim_agent.h"

#include <grpc/grpc_security.h>

#include <algorithm>

#include "muster/v1/agent.pb.h"

namespace muster::bench {

struct SimFleet::Agent {
  ~Agent() {
    channel.reset();
    if (session_cache != nullptr) grpc_ssl_session_cache_destroy(session_cache);
  }
  std::string id;
  std::string credential;
  std::string client_key_pem, client_cert_pem;  // mTLS
  grpc_ssl_session_cache* session_cache = nullptr;
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // one per agent, as in the agent
  std::shared_ptr<grpc::Channel> channel;
  std::mutex mu;
  std::shared_ptr<agent::LinkStream> stream;
  bool welcomed = false;
  common::Backoff backoff{1000, 60'000};
  uint64_t attempts = 0;
  int64_t last_attempt_ms = 0;
  int64_t min_gap_ms = INT64_MAX;
  int64_t retry_floor_ms = 0;  // the shortest delay the backoff allowed for the next attempt
  bool failed_since_welcome = false;
  int64_t last_ack_ms = 0;
  uint64_t commands = 0;
  bool needs_new_channel = false;
};

namespace {}  // namespace

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

SimFleet::SimFleet(SimOptions options, std::vector<std::pair<std::string, std::string>> identities)
    : options_(std::move(options)) {
  for (auto& [id, credential] : identities) {
    auto a = std::make_unique<Agent>();
    a->id = id;
    a->credential = credential;
    a->backoff = common::Backoff(options_.backoff_base_ms, options_.backoff_cap_ms);
    if (agents_.size() < options_.client_certs.size()) {
      a->client_key_pem = options_.client_certs[agents_.size()].first;
      a->client_cert_pem = options_.client_certs[agents_.size()].second;
    }
    agent::ChannelOptions channel;
    channel.target = options_.targets[agents_.size() % options_.targets.size()];
    channel.own_connection = true;
    channel.security = options_.security;
    channel.security.client_key_pem = a->client_key_pem;
    channel.security.client_cert_pem = a->client_cert_pem;
    if (!options_.security.plaintext && options_.tls_resume) {
      a->session_cache = grpc_ssl_session_cache_create_lru(1);
    }
    channel.session_cache = a->session_cache;
    a->credentials = agent::makeCredentials(channel.security);
    channel.credentials = a->credentials;
    a->channel = agent::makeChannel(channel);
    agents_.push_back(std::move(a));
  }
  timer_ = std::thread([this] { timerLoop(); });
}

SimFleet::~SimFleet() {
  {
    std::lock_guard lock(timer_mu_);
    stopping_ = true;
  }
  timer_cv_.notify_all();
  timer_.join();
  closeAll();
  // Stream callbacks reference this fleet: wait for every stream to end.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (stats_.open_streams.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void SimFleet::connectAll() {
  for (size_t i = 0; i < agents_.size(); ++i) connect(i);
}

void SimFleet::connect(size_t index) {
  Agent& a = *agents_[index];
  stats_.connect_attempts++;
  agent::LinkStream::Handlers handlers;
  auto* raw = &a;
  handlers.on_message = [this, raw](const muster::v1::ServerMessage& m) {
    std::shared_ptr<agent::LinkStream> stream;
    {
      std::lock_guard lock(raw->mu);
      stream = raw->stream;
      if (m.has_welcome() && !raw->welcomed) {
        raw->welcomed = true;
        raw->failed_since_welcome = false;
        raw->backoff.reset();
        // Like the real agent: the server's fleet-sized first reconnect window.
        raw->backoff.setFirstWindowMs(m.welcome().reconnect_window_ms());
        stats_.welcomed++;
      }
    }
    if (!stream) return;
    if (m.has_command()) {
      stats_.commands++;
      {
        std::lock_guard lock(raw->mu);
        raw->commands++;
      }
      // Like the real agent: an instant command needs no CommandAccepted.
      muster::v1::AgentMessage result;
      auto* r = result.mutable_result();
      r->set_command_id(m.command().command_id());
      r->set_outcome(muster::v1::COMMAND_OUTCOME_SUCCEEDED);
      r->set_has_exit_code(true);
      r->set_exit_code(0);
      stream->send(std::move(result));
    } else if (m.has_result_ack()) {
      {
        std::lock_guard lock(raw->mu);
        raw->last_ack_ms = steadyMs();
      }
      stats_.acks++;
    }
  };
  handlers.on_closed = [this, index, raw](const absl::Status& why) {
    stats_.closed_by_code[static_cast<size_t>(why.code()) % 17]++;
    int64_t delay;
    {
      std::lock_guard lock(raw->mu);
      raw->needs_new_channel = true;
      if (raw->welcomed) stats_.welcomed--;
      raw->welcomed = false;
      raw->stream.reset();
      raw->failed_since_welcome = true;
      raw->retry_floor_ms = raw->backoff.minDelayMs();
      delay = raw->backoff.nextDelayMs();
    }
    stats_.closed++;
    scheduleReconnect(index, delay);
    stats_.open_streams--;
  };
  {
    std::lock_guard lock(a.mu);
    int64_t now = steadyMs();
    if (a.attempts > 0 && a.failed_since_welcome) {
      a.min_gap_ms = std::min(a.min_gap_ms, now - a.last_attempt_ms);
      if (now - a.last_attempt_ms < a.retry_floor_ms) stats_.early_retries++;
    }
    a.attempts++;
    a.last_attempt_ms = now;
  }
  stats_.open_streams++;
  std::shared_ptr<grpc::Channel> channel, retired;
  {
    // Like the real agent: a fresh channel per attempt after a failure, so only our backoff
    // paces reconnects. Created and dropped here, never inside a gRPC callback.
    std::lock_guard lock(a.mu);
    if (a.needs_new_channel) {
      agent::ChannelOptions options;
      options.target = options_.targets[index % options_.targets.size()];
      options.own_connection = true;
      options.security = options_.security;
      options.security.client_key_pem = a.client_key_pem;
      options.security.client_cert_pem = a.client_cert_pem;
      options.session_cache = a.session_cache;
      options.credentials = a.credentials;
      retired = std::move(a.channel);
      a.channel = agent::makeChannel(options);
      a.needs_new_channel = false;
    }
    channel = a.channel;
  }
  auto stream = agent::openStream(channel, a.id, a.credential, handlers);
  {
    std::lock_guard lock(a.mu);
    a.stream = stream;
  }
  muster::v1::AgentMessage hello;
  hello.mutable_hello()->set_agent_id(a.id);
  hello.mutable_hello()->set_version("loadgen");
  hello.mutable_hello()->mutable_labels()->insert({"loadgen", "1"});
  stream->send(std::move(hello));
}

void SimFleet::scheduleReconnect(size_t index, int64_t delay_ms) {
  std::lock_guard lock(timer_mu_);
  if (stopping_) return;
  due_.emplace(std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms), index);
  timer_cv_.notify_one();
}

void SimFleet::timerLoop() {
  std::unique_lock lock(timer_mu_);
  while (!stopping_) {
    if (due_.empty()) {
      timer_cv_.wait(lock);
      continue;
    }
    auto next = due_.top().first;
    if (timer_cv_.wait_until(lock, next) == std::cv_status::no_timeout && !stopping_) continue;
    while (!due_.empty() && due_.top().first <= std::chrono::steady_clock::now()) {
      size_t index = due_.top().second;
      due_.pop();
      lock.unlock();
      connect(index);
      lock.lock();
    }
  }
}

void SimFleet::heartbeat(size_t begin, size_t end) {
  end = std::min(end, agents_.size());
  for (size_t i = begin; i < end; ++i) {
    auto& a = agents_[i];
    std::shared_ptr<agent::LinkStream> stream;
    {
      std::lock_guard lock(a->mu);
      if (!a->welcomed) continue;
      stream = a->stream;
    }
    muster::v1::AgentMessage beat;
    beat.mutable_heartbeat()->mutable_metrics()->set_load1(0.1);
    if (stream) stream->send(std::move(beat));
  }
}

uint64_t SimFleet::maxAttemptsPerAgent() const {
  uint64_t most = 0;
  for (const auto& a : agents_) {
    std::lock_guard lock(a->mu);
    most = std::max(most, a->attempts);
  }
  return most;
}

int64_t SimFleet::minRetryGapMs() const {
  int64_t least = INT64_MAX;
  for (const auto& a : agents_) {
    std::lock_guard lock(a->mu);
    least = std::min(least, a->min_gap_ms);
  }
  return least == INT64_MAX ? -1 : least;
}

void SimFleet::resetAttempts() {
  for (auto& a : agents_) {
    std::lock_guard lock(a->mu);
    a->attempts = 0;
    a->min_gap_ms = INT64_MAX;
  }
  stats_.connect_attempts = 0;
  stats_.early_retries = 0;
}

std::vector<int64_t> SimFleet::lastAckMs() const {
  std::vector<int64_t> out;
  for (const auto& a : agents_) {
    std::lock_guard lock(a->mu);
    out.push_back(a->last_ack_ms);
  }
  return out;
}

std::vector<uint64_t> SimFleet::commandsPerAgent() const {
  std::vector<uint64_t> out;
  for (const auto& a : agents_) {
    std::lock_guard lock(a->mu);
    out.push_back(a->commands);
  }
  return out;
}

void SimFleet::closeAll() {
  for (auto& a : agents_) {
    std::shared_ptr<agent::LinkStream> stream;
    {
      std::lock_guard lock(a->mu);
      stream = a->stream;
    }
    if (stream) stream->close();
  }
}

}  // namespace muster::bench
