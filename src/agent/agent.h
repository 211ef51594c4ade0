// muster-agent's runtime: enrolls once, keeps one link to musterd open (reconnecting with
// backoff and full jitter), runs commands exactly once per journal entry, and keeps results
// and output in the outbox until the server acknowledges them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "common/backoff.h"
#include "common/clock.h"

namespace muster::v1 {
class ServerMessage;
class Command;
class AgentMessage;
}  // namespace muster::v1

namespace muster::agent {

class Outbox;
class Link;
class LinkStream;
struct LinkSecurity;

struct AgentConfig {
  std::string server = "127.0.0.1:7443";
  std::string state_dir = "/var/lib/muster-agent";
  std::string enroll_token;  // as printed by `muster token create --enroll` (with its CA pin)
  // TLS: the CA comes from the token's pin (fetched once, kept in STATE/ca.crt) or from
  // ca_file; plaintext only with insecure_plaintext (musterd must say so too).
  bool insecure_plaintext = false;
  std::string ca_file;
  // With an identity already in the state dir and enroll_token set: enroll again, proving the
  // current credential, and keep the new one (credential rotation).
  bool rotate_credential = false;
  std::string id;  // empty: machine id
  std::map<std::string, std::string> labels;
  std::string version = "0.1.0";
  int64_t backoff_base_ms = 1000;
  int64_t backoff_cap_ms = 60'000;
  int64_t rejected_backoff_ms = 300'000;  // after the server refused our credential
  uint64_t max_output_bytes = 16ull << 20;
  int64_t default_timeout_ms = 3600'000;
  int64_t default_kill_grace_ms = 10'000;
  int64_t shutdown_grace_ms = 10'000;
  int64_t flush_timeout_ms = 5'000;
  int64_t enroll_deadline_ms = 15'000;
};

class Agent {
 public:
  // Reaches the server over gRPC at config.server.
  static absl::StatusOr<std::unique_ptr<Agent>> create(AgentConfig config,
                                                       const common::Clock& clock);
  // Reaches the server through `link` (another transport, or a fake in tests).
  static absl::StatusOr<std::unique_ptr<Agent>> create(AgentConfig config,
                                                       const common::Clock& clock,
                                                       std::unique_ptr<Link> link);
  ~Agent();

  // Runs until requestStop(); then drains (grace for running commands, flush) and returns.
  absl::Status run();
  // Thread-safe; call from the signal-handling thread.
  void requestStop();

  // Observability for tests and `doctor`.
  size_t connectAttempts() const { return connect_attempts_.load(); }

 private:
  struct Running;
  // The loop thread's queue. Transport callbacks hold it, not the Agent: a callback that
  // fires after the Agent is gone posts into a closed mailbox, and nothing runs.
  struct Mailbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> tasks;
    bool stop_requested = false;
    bool closed = false;
    // False once closed: the task is dropped unrun.
    bool post(std::function<void()> task);
  };
  Agent(AgentConfig config, const common::Clock& clock);

  void post(std::function<void()> task);
  absl::Status ensureEnrolled();
  void connect();
  void onLinkClosed(const std::shared_ptr<LinkStream>& link, const absl::Status& status);
  void onMessage(const muster::v1::ServerMessage& message);
  void onWelcome(int64_t heartbeat_interval_ms, int64_t reconnect_window_ms);
  void onCommand(const muster::v1::Command& command);
  void onCancel(const std::string& id, const std::string& reason);
  void startCommand(const muster::v1::Command& command);
  void finishCommand(const std::string& id, const struct ProcessExit& exit);
  void sendHeartbeat();
  void sendDueAccepted(int64_t now_steady_ms);
  // Sends on the current link if it is welcomed; false otherwise (the outbox resends).
  bool sendNow(muster::v1::AgentMessage message, bool live_output);
  void sendAll(std::vector<muster::v1::AgentMessage> messages);
  // Resends the next part of the outbox replay while the window has room.
  void pumpReplay();
  // A finished, unacked command the server delivered again: queued for the replay window.
  void replayFinished(const std::string& id);
  void drain();

  AgentConfig config_;
  const common::Clock& clock_;
  std::string agent_id_;
  std::string credential_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<Link> link_factory_;
  // Decides how the link is secured (once, before the first call); see AgentConfig.
  absl::Status establishTrust();
  // Logs why a TLS link failed (CA changed, name, expiry), at most once a minute.
  void diagnoseTls(const absl::Status& status);
  bool trust_ready_ = false;
  std::string ca_pem_;
  std::string enroll_secret_;  // the enrollment token without its CA pin
  int64_t last_diagnosis_ms_ = -60'000;
  // mTLS: the agent's key and client certificate (STATE/client.pem, key then certificate:
  // one file, so a crash never leaves a key beside another key's certificate).
  void loadClientCertificate(LinkSecurity* security);
  // Keeps a certificate musterd signed for `key_pem`; false if it cannot be stored.
  bool keepClientCertificate(const std::string& key_pem, const std::string& cert_pem);
  // At each heartbeat: with a third of the certificate's lifetime left, a new key and
  // certificate over the link (RenewCertificate), used from the next connection on.
  void maybeRenewCertificate();
  std::string client_key_pem_, client_cert_pem_;
  int64_t client_cert_not_before_s_ = 0, client_cert_not_after_s_ = 0;
  int64_t next_renew_attempt_ms_ = 0;  // steady clock
  bool renewing_ = false;              // a renewal is in flight on renew_thread_
  std::thread renew_thread_;
  common::Backoff backoff_;

  // Loop thread state.
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();

  // Touched only on the loop thread.
  bool stopping_ = false;
  int64_t next_connect_ms_ = 0;
  int64_t next_heartbeat_ms_ = 0;
  int64_t heartbeat_interval_ms_ = 10'000;
  int64_t next_accepted_ms_ = 0;
  std::map<std::string, std::unique_ptr<Running>> running_;
  // The outbox replay still to send after a Welcome: (command id, with its result).
  std::deque<std::pair<std::string, bool>> replay_queue_;
  std::set<std::string> replay_awaiting_ack_;

  // The live link; read by process threads to stream output.
  std::mutex link_mu_;
  std::shared_ptr<LinkStream> link_;
  bool welcomed_ = false;

  std::atomic<size_t> connect_attempts_{0};
};

}  // namespace muster::agent
