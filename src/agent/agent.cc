// Agent runtime: the loop thread, the link lifecycle and command handling.
#include "agent/agent.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/exec/process_runner.h"
#include "agent/identity.h"
#include "agent/link.h"
#include "agent/outbox.h"
#include "agent/output_capture.h"
#include "agent/system_info.h"
#include "agent/tls_probe.h"
#include "common/fmt_absl.h"
#include "common/fs.h"
#include "crypto/certs.h"
#include "crypto/enroll_token.h"
#include "crypto/secrets.h"
#include "muster/v1/agent.pb.h"

namespace muster::agent {

struct Agent::Running {
  muster::v1::Command spec;
  std::unique_ptr<OutputCapture> capture;
  std::unique_ptr<ProcessRunner> runner;
  std::atomic<bool> live_dropped{false};
  bool killed_for_shutdown = false;
  int64_t accepted_due_ms = 0;  // steady ms; 0 once CommandAccepted went out
  int64_t started_at_ms = 0;
};

namespace {
constexpr size_t kMaxQueuedLiveBytes = 8u << 20;
constexpr int64_t kAcceptedDelayMs = 200;
constexpr int64_t kTombstoneMaxAgeMs = 7 * 24 * 3600 * 1000LL;
// The outbox replay after a reconnect: at most this much queued on the link and this many
// resent results awaiting their acks; the rest follows as the window drains.
constexpr size_t kReplayWindowBytes = 4u << 20;
constexpr size_t kReplayWindowResults = 256;
constexpr int64_t kReplayPollMs = 20;

muster::v1::CommandResult toResult(const std::string& id, const ProcessExit& exit,
                                   bool killed_for_shutdown) {
  muster::v1::CommandResult r;
  r.set_command_id(id);
  r.set_started_at_ms(exit.started_at_ms);
  r.set_finished_at_ms(exit.finished_at_ms);
  if (exit.exit_code) {
    r.set_has_exit_code(true);
    r.set_exit_code(*exit.exit_code);
  }
  r.set_signal(exit.signal);
  r.set_error(exit.error);
  switch (exit.kind) {
    case ExitKind::kExited:
      r.set_outcome(exit.exit_code == 0 ? muster::v1::COMMAND_OUTCOME_SUCCEEDED
                                        : muster::v1::COMMAND_OUTCOME_FAILED);
      break;
    case ExitKind::kSignaled:
      r.set_outcome(muster::v1::COMMAND_OUTCOME_FAILED);
      r.set_error(absl::StrCat("killed by signal ", exit.signal));
      break;
    case ExitKind::kTimedOut: r.set_outcome(muster::v1::COMMAND_OUTCOME_TIMED_OUT); break;
    case ExitKind::kCancelled:
      r.set_outcome(killed_for_shutdown ? muster::v1::COMMAND_OUTCOME_FAILED
                                        : muster::v1::COMMAND_OUTCOME_CANCELLED);
      break;
    case ExitKind::kStartFailed: r.set_outcome(muster::v1::COMMAND_OUTCOME_FAILED); break;
  }
  return r;
}

muster::v1::AgentMessage outputMessage(const std::string& id, const CapturedChunk& c) {
  muster::v1::AgentMessage m;
  auto* o = m.mutable_output();
  o->set_command_id(id);
  o->set_stream(c.stream == 2 ? muster::v1::OUTPUT_STREAM_STDERR
                              : muster::v1::OUTPUT_STREAM_STDOUT);
  o->set_offset(c.offset);
  o->set_data(c.data);
  return m;
}
}  // namespace

Agent::Agent(AgentConfig config, const common::Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      backoff_(config_.backoff_base_ms, config_.backoff_cap_ms) {}

bool Agent::Mailbox::post(std::function<void()> task) {
  std::lock_guard lock(mu);
  if (closed) return false;
  tasks.push_back(std::move(task));
  cv.notify_one();
  return true;
}

Agent::~Agent() {
  {
    // From here on a transport callback posts nothing: its task would run on a dead Agent.
    std::lock_guard lock(mailbox_->mu);
    mailbox_->closed = true;
    mailbox_->tasks.clear();
  }
  std::shared_ptr<LinkStream> link;
  {
    std::lock_guard lock(link_mu_);
    link = std::move(link_);
  }
  if (link) link->close();
  if (renew_thread_.joinable()) renew_thread_.join();  // its post finds the mailbox closed
  running_.clear();
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::create(AgentConfig config,
                                                     const common::Clock& clock) {
  std::string server = config.server;
  return create(std::move(config), clock, makeGrpcLink(server));
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::create(AgentConfig config, const common::Clock& clock,
                                                     std::unique_ptr<Link> link) {
  if (auto st = common::makeDirs(config.state_dir, 0700); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(st.message(), " (check --state-dir)"));
  }
  std::unique_ptr<Agent> agent(new Agent(std::move(config), clock));
  auto outbox = Outbox::open(agent->config_.state_dir + "/commands", clock);
  if (!outbox.ok()) return outbox.status();
  agent->outbox_ = *std::move(outbox);
  agent->link_factory_ = std::move(link);
  return agent;
}

void Agent::post(std::function<void()> task) { mailbox_->post(std::move(task)); }

void Agent::requestStop() {
  std::lock_guard lock(mailbox_->mu);
  mailbox_->stop_requested = true;
  mailbox_->cv.notify_one();
}

absl::Status Agent::establishTrust() {
  if (trust_ready_) return absl::OkStatus();
  std::string pin;
  if (!config_.enroll_token.empty()) {
    auto token = crypto::parseEnrollToken(config_.enroll_token);
    if (!token.ok()) return token.status();
    pin = token->ca_sha256;
    enroll_secret_ = token->secret;
  }
  LinkSecurity security;
  if (config_.insecure_plaintext) {
    spdlog::warn("--insecure-plaintext: the link to {} is NOT encrypted", config_.server);
    security.plaintext = true;
    link_factory_->secure(security);
    trust_ready_ = true;
    return absl::OkStatus();
  }
  const std::string ca_path = config_.state_dir + "/ca.crt";
  auto fingerprint = [](const std::string& pem) {
    auto sha = crypto::certSha256(pem);
    return sha.ok() ? *sha : std::string("unreadable");
  };
  // A CA we hold already (--ca, or kept from an earlier enrollment) must be the pinned one.
  const bool given = !config_.ca_file.empty();
  const std::string held = given ? config_.ca_file : ca_path;
  std::string ca;
  if (given || common::fileExists(ca_path)) {
    auto read = common::readFile(held);
    if (!read.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(held, ": ", read.status().message()));
    }
    ca = *read;
    if (std::string sha = fingerprint(ca); !pin.empty() && sha != pin) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the enrollment token pins CA sha256 ", pin, ", but this agent trusts CA ", sha, " (",
          held, "): ",
          given ? "give musterd's CA (DATA/tls/ca.crt) or drop --ca"
                : absl::StrCat("musterd's CA changed, or the token is from another musterd. If "
                               "the CA was replaced on purpose, remove ",
                               ca_path, " and enroll again")));
    }
  } else if (!pin.empty()) {
    // Trust on the pin: read the chain the server presents, take the CA whose SHA-256 is
    // the pin, check the server's certificate against it, keep it.
    auto chain = fetchServerChain(config_.server, 10'000);
    if (!chain.ok()) return chain.status();
    auto certs = crypto::splitPemCerts(*chain);
    if (!certs.ok()) return certs.status();
    std::string seen;
    for (const auto& cert : *certs) {
      std::string sha = fingerprint(cert);
      if (sha == pin) ca = cert;
      absl::StrAppend(&seen, seen.empty() ? "" : ", ", sha);
    }
    if (ca.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the server at ", config_.server, " does not present the CA the enrollment token pins (",
          pin, "; it presents ", seen,
          "): check that --server is your musterd and that the token is from it; anything "
          "else is a machine in between posing as musterd"));
    }
    if (auto st = crypto::verifyServerChain(*chain, ca, targetHost(config_.server),
                                            clock_.nowMs() / 1000);
        !st.ok()) {
      return st;
    }
    if (auto st = common::makeDirs(config_.state_dir, 0700); !st.ok()) return st;
    if (auto st = common::writeFileAtomic(ca_path, ca, 0644); !st.ok()) return st;
    spdlog::info("trusting musterd's CA sha256 {} (pinned by the enrollment token), kept in {}",
                 pin, ca_path);
  } else {
    return absl::FailedPreconditionError(
        "no CA to verify musterd with: enroll with the whole token `muster token create "
        "--enroll` printed (it carries the CA's pin), or give --ca FILE (musterd's "
        "DATA/tls/ca.crt); --insecure-plaintext only if musterd runs with it too");
  }
  security.ca_pem = ca;
  ca_pem_ = ca;
  loadClientCertificate(&security);
  link_factory_->secure(security);
  trust_ready_ = true;
  return absl::OkStatus();
}

void Agent::loadClientCertificate(LinkSecurity* security) {
  const std::string path = config_.state_dir + "/client.pem";
  if (!common::fileExists(path)) return;
  auto pem = common::readFile(path);
  size_t cert_at = pem.ok() ? pem->find("-----BEGIN CERTIFICATE-----") : std::string::npos;
  if (cert_at == std::string::npos) {
    spdlog::error("{}: unreadable client certificate; connecting without one", path);
    return;
  }
  std::string key = pem->substr(0, cert_at), cert = pem->substr(cert_at);
  auto info = crypto::inspectCert(cert);
  auto matches = crypto::certMatchesKey(cert, key);
  if (!info.ok() || !matches.ok() || !*matches) {
    spdlog::error(
        "{}: the client certificate does not belong to the key beside it; "
        "connecting without one",
        path);
    return;
  }
  if (clock_.nowMs() / 1000 >= info->not_after_s) {
    // Presenting it would fail the handshake: without it the credential may still get in
    // (unless musterd requires client certificates) and renew it.
    spdlog::error(
        "the client certificate in {} expired; connecting without one (a musterd "
        "with --require-client-certs refuses this agent until it is enrolled again "
        "with a token from `muster token create --enroll --host {}`)",
        path, info->subject_cn);
    return;
  }
  client_key_pem_ = key;
  client_cert_pem_ = cert;
  client_cert_not_before_s_ = info->not_before_s;
  client_cert_not_after_s_ = info->not_after_s;
  security->client_key_pem = key;
  security->client_cert_pem = cert;
}

bool Agent::keepClientCertificate(const std::string& key_pem, const std::string& cert_pem) {
  auto info = crypto::inspectCert(cert_pem);
  auto matches = crypto::certMatchesKey(cert_pem, key_pem);
  if (!info.ok() || !matches.ok() || !*matches) {
    spdlog::error(
        "musterd sent a client certificate that is not for this agent's key; "
        "ignored");
    return false;
  }
  const std::string path = config_.state_dir + "/client.pem";
  if (auto st = common::writeFileAtomic(path, key_pem + cert_pem, 0600); !st.ok()) {
    spdlog::error("cannot keep the client certificate: {}", st.message());
    return false;
  }
  client_key_pem_ = key_pem;
  client_cert_pem_ = cert_pem;
  client_cert_not_before_s_ = info->not_before_s;
  client_cert_not_after_s_ = info->not_after_s;
  spdlog::info("client certificate {} kept in {} (valid until {})", info->serial_hex, path,
               info->not_after_s);
  return true;
}

void Agent::maybeRenewCertificate() {
  if (client_cert_pem_.empty() || config_.insecure_plaintext || renewing_) return;
  const int64_t now_s = clock_.nowMs() / 1000;
  const int64_t lifetime = client_cert_not_after_s_ - client_cert_not_before_s_;
  if (now_s < client_cert_not_after_s_ - lifetime / 3) return;
  const int64_t steady = clock_.steadyMs();
  if (steady < next_renew_attempt_ms_) return;
  // Retried every tenth of the lifetime (1 s to 1 min) while it fails: several tries fit
  // in the third of the lifetime that is left.
  next_renew_attempt_ms_ = steady + std::clamp<int64_t>(lifetime * 100, 1'000, 60'000);
  renewing_ = true;
  if (renew_thread_.joinable()) renew_thread_.join();
  // Off the loop thread: key generation and the call (up to 10 s) must not hold up
  // commands, cancels and results. The outcome comes back through the mailbox.
  std::weak_ptr<Mailbox> mailbox = mailbox_;
  renew_thread_ = std::thread([this, mailbox, agent_id = agent_id_, credential = credential_,
                               not_after = client_cert_not_after_s_] {
    auto fresh = crypto::createKeyAndCsr(agent_id);
    absl::StatusOr<std::string> cert =
        fresh.ok() ? link_factory_->renewCertificate(agent_id, credential, fresh->cert_pem, 10'000)
                   : absl::StatusOr<std::string>(fresh.status());
    auto mb = mailbox.lock();
    if (!mb) return;
    mb->post([this, fresh = std::move(fresh), cert = std::move(cert), not_after] {
      renewing_ = false;
      if (!cert.ok()) {
        spdlog::warn("renewing the client certificate (expires at {}) failed: {}; retrying later",
                     not_after, cert.status().message());
        return;
      }
      if (keepClientCertificate(fresh->key_pem, *cert)) {
        link_factory_->presentCertificate(client_key_pem_, client_cert_pem_);
        next_renew_attempt_ms_ = 0;
      }
    });
  });
}

void Agent::diagnoseTls(const absl::Status& status) {
  // A plaintext agent at musterd's TLS port only ever sees "Socket closed": probe it too.
  const bool plaintext = config_.insecure_plaintext;
  if (!plaintext && ca_pem_.empty()) return;
  // What gRPC says when TLS went wrong (TLS agent), or when a TLS server dropped our
  // plaintext HTTP/2 preface (plaintext agent); anything else is not ours to diagnose.
  absl::string_view message = status.message();
  auto says = [&](const char* what) { return message.find(what) != absl::string_view::npos; };
  if (plaintext ? !says("Socket closed") : !(says("andshake") || says("SSL") || says("ssl"))) {
    return;
  }
  int64_t now = clock_.steadyMs();
  if (now - last_diagnosis_ms_ < 60'000) return;
  last_diagnosis_ms_ = now;
  // Off the agent's thread: the probe may take its full timeout.
  std::thread([server = config_.server, ca = ca_pem_, now_s = clock_.nowMs() / 1000, plaintext] {
    auto chain = fetchServerChain(server, 10'000);
    if (plaintext) {
      if (chain.ok()) {
        spdlog::error(
            "{} speaks TLS (musterd's default), but this agent runs with --insecure-plaintext: "
            "drop --insecure-plaintext and enroll with the whole token `muster token create "
            "--enroll` printed",
            server);
      }
      return;
    }
    if (!chain.ok()) {
      spdlog::error("TLS link to {} failed: {}", server, chain.status().message());
      return;
    }
    auto verdict = crypto::verifyServerChain(*chain, ca, targetHost(server), now_s);
    if (!verdict.ok()) spdlog::error("TLS link to {} refused: {}", server, verdict.message());
  }).detach();
}

absl::Status Agent::ensureEnrolled() {
  auto identity = loadIdentity(config_.state_dir);
  if (!identity.ok()) return identity.status();
  if (identity->has_value()) {
    if (!config_.id.empty() && config_.id != (*identity)->agent_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state dir ", config_.state_dir, " belongs to agent '", (*identity)->agent_id, "', not '",
          config_.id, "': use another --state-dir or drop --id"));
    }
    agent_id_ = (*identity)->agent_id;
    credential_ = (*identity)->credential;
    if (!config_.rotate_credential) return absl::OkStatus();
  }
  if (config_.rotate_credential && config_.enroll_token.empty()) {
    return absl::FailedPreconditionError(
        "--rotate-credential needs --enroll-token (any valid enrollment token: the current "
        "credential proves the host)");
  }
  auto id = identity->has_value() ? absl::StatusOr<std::string>((*identity)->agent_id)
                                  : chooseAgentId(config_.id);
  if (!id.ok()) return id.status();
  if (config_.enroll_token.empty()) {
    return absl::FailedPreconditionError(
        "this agent is not enrolled: start it once with --enroll-token TOKEN "
        "(create one with `muster token create --enroll`)");
  }
  muster::v1::EnrollRequest request;
  request.set_token(enroll_secret_);  // parsed by establishTrust(), which runs first
  request.set_agent_id(*id);
  for (const auto& [k, v] : collectFacts(config_.version)) (*request.mutable_facts())[k] = v;
  for (const auto& [k, v] : config_.labels) (*request.mutable_labels())[k] = v;
  if (identity->has_value()) request.set_current_credential((*identity)->credential);
  // One attempt id until the credential is saved: a retry after a lost reply is the same
  // attempt, which the server lets enroll the id again until the agent first connects.
  const std::string attempt_path = config_.state_dir + "/enroll-attempt";
  auto attempt = common::readFile(attempt_path);
  if (!attempt.ok() || attempt->empty()) {
    attempt = crypto::randomToken("attempt_", 16);
    if (auto st = common::makeDirs(config_.state_dir, 0700); !st.ok()) return st;
    if (auto st = common::writeFileAtomic(attempt_path, *attempt, 0600); !st.ok()) return st;
  }
  request.set_attempt_id(*attempt);
  // mTLS: a key made here, never sent; musterd signs the CSR (when it signs client
  // certificates) for this agent id.
  absl::StatusOr<crypto::KeyAndCert> key_and_csr = absl::UnavailableError("plaintext");
  if (!config_.insecure_plaintext) {
    key_and_csr = crypto::createKeyAndCsr(*id);
    if (!key_and_csr.ok()) return key_and_csr.status();
    request.set_csr_pem(key_and_csr->cert_pem);
  }
  auto response = link_factory_->enroll(request, config_.enroll_deadline_ms);
  if (!response.ok()) {
    if (identity->has_value() && !absl::IsUnavailable(response.status()) &&
        !absl::IsDeadlineExceeded(response.status())) {
      // A refused rotation (token used up, say) leaves the credential we have: keep working.
      spdlog::warn("credential rotation refused ({}); keeping the current credential",
                   response.status().message());
      config_.rotate_credential = false;
      return absl::OkStatus();
    }
    return response.status();
  }
  Identity fresh{*id, response->credential()};
  if (!config_.insecure_plaintext) {
    // The server replaced any certificate this host had: keep the new one, or none (a
    // musterd that signs none), so that no stale certificate is presented from now on.
    if (response->client_cert_pem().empty() || !key_and_csr.ok() ||
        !keepClientCertificate(key_and_csr->key_pem, response->client_cert_pem())) {
      (void)::unlink((config_.state_dir + "/client.pem").c_str());
      client_key_pem_.clear();
      client_cert_pem_.clear();
    }
    LinkSecurity security;
    security.ca_pem = ca_pem_;
    security.client_key_pem = client_key_pem_;
    security.client_cert_pem = client_cert_pem_;
    link_factory_->secure(security);  // no stream is up yet: the next dial presents it
  }
  if (auto st = saveIdentity(config_.state_dir, fresh); !st.ok()) return st;
  (void)::unlink(attempt_path.c_str());
  agent_id_ = fresh.agent_id;
  credential_ = fresh.credential;
  config_.rotate_credential = false;  // once: a later ensureEnrolled uses the new one
  spdlog::info("{} as agent {}", identity->has_value() ? "credential rotated" : "enrolled",
               agent_id_);
  return absl::OkStatus();
}

absl::Status Agent::run() {
  // Enrollment: retried with backoff while the server is unreachable; a refused token is final.
  while (true) {
    auto st = establishTrust();
    if (st.ok()) st = ensureEnrolled();
    if (st.ok()) break;
    if (!absl::IsUnavailable(st) && !absl::IsDeadlineExceeded(st)) return st;
    if (absl::IsUnavailable(st)) diagnoseTls(st);
    int64_t delay = backoff_.nextDelayMs();
    spdlog::warn("cannot reach {} to enroll ({}); retrying in {} ms", config_.server, st.message(),
                 delay);
    std::unique_lock lock(mailbox_->mu);
    if (mailbox_->cv.wait_for(lock, std::chrono::milliseconds(delay),
                              [&] { return mailbox_->stop_requested; })) {
      return absl::OkStatus();
    }
  }
  backoff_.reset();
  outbox_->recoverInterrupted();
  outbox_->prune(kTombstoneMaxAgeMs);
  next_connect_ms_ = clock_.steadyMs();

  while (true) {
    std::deque<std::function<void()>> tasks;
    {
      std::unique_lock lock(mailbox_->mu);
      int64_t now = clock_.steadyMs();
      int64_t wake = next_connect_ms_ > 0 ? next_connect_ms_ : now + 1000;
      if (next_heartbeat_ms_ > 0) wake = std::min(wake, next_heartbeat_ms_);
      if (next_accepted_ms_ > 0) wake = std::min(wake, next_accepted_ms_);
      if (!replay_queue_.empty()) wake = std::min(wake, now + kReplayPollMs);
      mailbox_->cv.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(0, wake - now)),
                            [&] { return !mailbox_->tasks.empty() || mailbox_->stop_requested; });
      tasks.swap(mailbox_->tasks);
      if (mailbox_->stop_requested && !stopping_) {
        stopping_ = true;
        lock.unlock();
        for (auto& t : tasks) t();
        drain();
        return absl::OkStatus();
      }
    }
    for (auto& t : tasks) t();
    int64_t now = clock_.steadyMs();
    if (next_connect_ms_ > 0 && now >= next_connect_ms_) connect();
    if (next_heartbeat_ms_ > 0 && now >= next_heartbeat_ms_) sendHeartbeat();
    if (next_accepted_ms_ > 0 && now >= next_accepted_ms_) sendDueAccepted(now);
    if (!replay_queue_.empty()) pumpReplay();
  }
}

void Agent::connect() {
  next_connect_ms_ = 0;
  connect_attempts_++;
  std::shared_ptr<LinkStream> link;
  LinkStream::Handlers handlers;
  // The handlers capture the link through a holder set after open().
  auto holder = std::make_shared<std::weak_ptr<LinkStream>>();
  // The callbacks hold the mailbox, never the Agent: after ~Agent they post into a closed
  // mailbox and the task (which would use `this`) is dropped unrun.
  std::weak_ptr<Mailbox> mailbox = mailbox_;
  handlers.on_message = [this, mailbox](const muster::v1::ServerMessage& m) {
    if (auto mb = mailbox.lock()) mb->post([this, m] { onMessage(m); });
  };
  handlers.on_closed = [this, mailbox, holder](const absl::Status& st) {
    if (auto mb = mailbox.lock())
      mb->post([this, holder, st] { onLinkClosed(holder->lock(), st); });
  };
  link = link_factory_->open(agent_id_, credential_, std::move(handlers));
  *holder = link;
  {
    std::lock_guard lock(link_mu_);
    link_ = link;
    welcomed_ = false;
  }
  muster::v1::AgentMessage hello_msg;
  auto* hello = hello_msg.mutable_hello();
  hello->set_agent_id(agent_id_);
  hello->set_version(config_.version);
  for (const auto& [k, v] : collectFacts(config_.version)) (*hello->mutable_facts())[k] = v;
  for (const auto& [k, v] : config_.labels) (*hello->mutable_labels())[k] = v;
  for (const auto& [id, r] : running_) hello->add_in_flight_command_ids(id);
  for (const auto& id : outbox_->unacked()) hello->add_unacked_command_ids(id);
  link->send(std::move(hello_msg));
}

void Agent::onLinkClosed(const std::shared_ptr<LinkStream>& link, const absl::Status& status) {
  {
    std::lock_guard lock(link_mu_);
    if (link_ && link_ != link) return;  // an older stream
    link_.reset();
    welcomed_ = false;
  }
  next_heartbeat_ms_ = 0;
  // The next Welcome starts the replay over; until then nothing can be sent.
  replay_queue_.clear();
  replay_awaiting_ack_.clear();
  if (stopping_) return;
  int64_t delay;
  if (absl::IsUnauthenticated(status) || absl::IsPermissionDenied(status)) {
    delay = config_.rejected_backoff_ms;
    spdlog::error(
        "server refused this agent: {}. Retrying in {} s; if it was revoked, "
        "re-enroll it with a new token",
        status.message(), delay / 1000);
  } else {
    delay = backoff_.nextDelayMs();
    spdlog::warn("link to {} closed ({}: {}); reconnecting in {} ms", config_.server,
                 absl::StatusCodeToString(status.code()), status.message(), delay);
    if (absl::IsUnavailable(status)) diagnoseTls(status);
  }
  // A fresh channel for the next attempt: the old one would keep reconnecting on gRPC's own
  // schedule (hammering a restarting server) and hold a descriptor on a full one. Our
  // full-jitter backoff alone decides when to try again.
  link_factory_->reset();
  next_connect_ms_ = clock_.steadyMs() + delay;
}

void Agent::onMessage(const muster::v1::ServerMessage& m) {
  switch (m.kind_case()) {
    case muster::v1::ServerMessage::kWelcome:
      onWelcome(m.welcome().heartbeat_interval_ms(), m.welcome().reconnect_window_ms());
      break;
    case muster::v1::ServerMessage::kCommand: onCommand(m.command()); break;
    case muster::v1::ServerMessage::kCancel:
      onCancel(m.cancel().command_id(), m.cancel().reason());
      break;
    case muster::v1::ServerMessage::kResultAck: {
      const auto& ack = m.result_ack();
      if (ack.rejected()) {
        spdlog::warn("server rejected the result of command {} for good ({}); dropping it",
                     ack.command_id(), ack.reason());
      }
      if (auto st = outbox_->markAcked(ack.command_id()); !st.ok()) {
        spdlog::error("command {}: cannot record the ack: {}", ack.command_id(), st.message());
      }
      if (replay_awaiting_ack_.erase(ack.command_id()) > 0) pumpReplay();
      break;
    }
    default: spdlog::warn("ignoring an unknown message from the server (newer server?)");
  }
}

void Agent::onWelcome(int64_t heartbeat_interval_ms, int64_t reconnect_window_ms) {
  {
    std::lock_guard lock(link_mu_);
    welcomed_ = true;
  }
  backoff_.reset();
  // The server sizes the first reconnect window to its fleet.
  backoff_.setFirstWindowMs(reconnect_window_ms);
  heartbeat_interval_ms_ = heartbeat_interval_ms > 0 ? heartbeat_interval_ms : 10'000;
  spdlog::info("connected to {} as {}", config_.server, agent_id_);
  sendHeartbeat();  // metrics right away, then every interval
  // What the server may have missed while we were apart, a window at a time (pumpReplay):
  // an outbox of thousands of results is never read into memory or queued at once.
  replay_queue_.clear();
  replay_awaiting_ack_.clear();
  for (const auto& [id, r] : running_) replay_queue_.push_back({id, false});
  for (const auto& id : outbox_->unacked()) replay_queue_.push_back({id, true});
  pumpReplay();
}

void Agent::pumpReplay() {
  while (!replay_queue_.empty()) {
    std::shared_ptr<LinkStream> link;
    {
      std::lock_guard lock(link_mu_);
      if (!link_ || !welcomed_) return;  // the next Welcome starts over
      link = link_;
    }
    if (link->queuedBytes() > kReplayWindowBytes ||
        replay_awaiting_ack_.size() >= kReplayWindowResults) {
      return;  // resumed by acks and by the loop
    }
    auto [id, with_result] = replay_queue_.front();
    replay_queue_.pop_front();
    if (with_result && outbox_->lookup(id) != Outbox::Known::kFinished) continue;  // acked
    if (with_result && !replay_awaiting_ack_.insert(id).second) continue;          // sent already
    sendAll(outbox_->replay(id, with_result));
  }
}

void Agent::replayFinished(const std::string& id) {
  // The server asks again for a command that ended here (it missed the result): through the
  // replay window like the rest of the outbox, once, not straight onto the link (a server
  // redelivering thousands of them would queue every output at once).
  if (replay_awaiting_ack_.count(id) > 0) return;
  replay_queue_.push_back({id, true});
  pumpReplay();
}

void Agent::onCommand(const muster::v1::Command& command) {
  const std::string& id = command.command_id();
  if (!Outbox::isSafeId(id)) {
    spdlog::error("refusing a command with an unsafe id from the server");
    return;
  }
  if (stopping_) return;  // not accepted: the server delivers it again later
  switch (outbox_->lookup(id)) {
    case Outbox::Known::kNew: startCommand(command); return;
    case Outbox::Known::kRunning: return;  // a redelivery of what runs now
    case Outbox::Known::kFinished: replayFinished(id); return;
    case Outbox::Known::kAcked: return;
  }
}

void Agent::startCommand(const muster::v1::Command& command) {
  const std::string id = command.command_id();
  // The journal keeps the spec for a week; secret values are not written to disk (an
  // interrupted command is reported, never run again, so nothing needs them later).
  muster::v1::Command journaled = command;
  journaled.mutable_exec()->clear_secret_env();
  if (auto st = outbox_->accept(journaled); !st.ok()) {
    // Not journaled, so not accepted: the server redelivers after we reconnect.
    spdlog::error("command {}: cannot journal it ({}); not running it", id, st.message());
    return;
  }
  auto running = std::make_unique<Running>();
  // CommandAccepted goes out only if the command is still running a moment later: for a
  // command that ends at once its result says everything, one message fewer per host.
  running->accepted_due_ms = clock_.steadyMs() + kAcceptedDelayMs;
  running->started_at_ms = clock_.nowMs();
  next_accepted_ms_ = next_accepted_ms_ > 0 ? std::min(next_accepted_ms_, running->accepted_due_ms)
                                            : running->accepted_due_ms;
  running->spec = command;
  running->capture = std::make_unique<OutputCapture>(outbox_->dirFor(id), config_.max_output_bytes);
  ProcessSpec spec;
  const auto& exec = command.exec();
  spec.argv.assign(exec.argv().begin(), exec.argv().end());
  spec.script = exec.script();
  spec.env.insert(exec.env().begin(), exec.env().end());
  for (const auto& [k, v] : exec.secret_env()) spec.env[k] = v;
  spec.cwd = exec.cwd();
  spec.timeout_ms = exec.timeout_ms() > 0 ? exec.timeout_ms() : config_.default_timeout_ms;
  spec.kill_grace_ms =
      exec.kill_grace_ms() > 0 ? exec.kill_grace_ms() : config_.default_kill_grace_ms;
  Running* r = running.get();
  auto on_output = [this, r, id](OutputStream stream, std::string_view data) {
    for (auto& chunk : r->capture->append(static_cast<int>(stream), data)) {
      if (!sendNow(outputMessage(id, chunk), true)) r->live_dropped = true;
    }
  };
  auto on_exit = [this, id](const ProcessExit& exit) {
    post([this, id, exit] { finishCommand(id, exit); });
  };
  if (spec.argv.empty() && spec.script.empty()) {
    ProcessExit exit{ExitKind::kStartFailed,       std::nullopt,   0,
                     "command has nothing to run", clock_.nowMs(), clock_.nowMs()};
    running_[id] = std::move(running);
    finishCommand(id, exit);
    return;
  }
  running_[id] = std::move(running);
  auto runner = ProcessRunner::start(std::move(spec), on_output, on_exit, clock_);
  if (!runner.ok()) {
    ProcessExit exit{
        ExitKind::kStartFailed, std::nullopt,  0, std::string(runner.status().message()),
        clock_.nowMs(),         clock_.nowMs()};
    finishCommand(id, exit);
    return;
  }
  r->runner = *std::move(runner);
  spdlog::info("command {} started (pid {})", id, r->runner->pid());
}

void Agent::finishCommand(const std::string& id, const ProcessExit& exit) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  std::unique_ptr<Running> r = std::move(it->second);
  running_.erase(it);
  r->runner.reset();  // on_exit already ran: joins at once
  auto tails = r->capture->finish();
  auto result = toResult(id, exit, r->killed_for_shutdown);
  result.set_stdout_bytes(r->capture->total(1));
  result.set_stderr_bytes(r->capture->total(2));
  result.set_output_truncated(r->capture->truncated());
  if (!r->capture->diskStatus().ok()) {
    result.set_error(absl::StrCat(result.error(), result.error().empty() ? "" : "; ",
                                  "output incomplete: ", r->capture->diskStatus().message()));
  }
  if (auto st = outbox_->finish(result); !st.ok()) {
    spdlog::error("command {}: cannot store its result ({}); sending it anyway", id, st.message());
  }
  spdlog::info("command {} finished: {}", id, muster::v1::CommandOutcome_Name(result.outcome()));
  if (r->live_dropped) {
    sendAll(outbox_->replay(id, true));
    return;
  }
  for (const auto& t : tails) sendNow(outputMessage(id, t), false);
  muster::v1::AgentMessage m;
  *m.mutable_result() = result;
  sendNow(std::move(m), false);
}

void Agent::onCancel(const std::string& id, const std::string& reason) {
  if (!Outbox::isSafeId(id)) return;
  auto it = running_.find(id);
  if (it != running_.end()) {
    spdlog::info("command {}: cancel requested ({})", id, reason);
    if (it->second->runner) it->second->runner->cancel(reason.empty() ? "cancelled" : reason);
    return;
  }
  switch (outbox_->lookup(id)) {
    case Outbox::Known::kFinished: replayFinished(id); return;
    case Outbox::Known::kAcked:
    case Outbox::Known::kRunning: return;
    case Outbox::Known::kNew: break;
  }
  // Never started here: journal it as cancelled so a late delivery cannot run it.
  muster::v1::Command placeholder;
  placeholder.set_command_id(id);
  if (!outbox_->accept(placeholder).ok()) return;
  muster::v1::CommandResult result;
  result.set_command_id(id);
  result.set_outcome(muster::v1::COMMAND_OUTCOME_CANCELLED);
  result.set_error(reason.empty() ? "cancelled before it started" : reason);
  result.set_finished_at_ms(clock_.nowMs());
  if (!outbox_->finish(result).ok()) return;
  muster::v1::AgentMessage m;
  *m.mutable_result() = result;
  sendNow(std::move(m), false);
}

void Agent::sendDueAccepted(int64_t now) {
  next_accepted_ms_ = 0;
  for (auto& [id, r] : running_) {
    if (r->accepted_due_ms == 0) continue;
    if (r->accepted_due_ms > now) {
      next_accepted_ms_ = next_accepted_ms_ > 0 ? std::min(next_accepted_ms_, r->accepted_due_ms)
                                                : r->accepted_due_ms;
      continue;
    }
    muster::v1::AgentMessage accepted;
    accepted.mutable_accepted()->set_command_id(id);
    accepted.mutable_accepted()->set_started_at_ms(r->started_at_ms);
    // Not welcomed now: the server learns the state from the result or a later resend.
    sendNow(std::move(accepted), false);
    r->accepted_due_ms = 0;
  }
}

void Agent::sendHeartbeat() {
  next_heartbeat_ms_ = clock_.steadyMs() + heartbeat_interval_ms_;
  muster::v1::AgentMessage m;
  *m.mutable_heartbeat()->mutable_metrics() = collectMetrics(config_.state_dir);
  m.mutable_heartbeat()->set_agent_time_ms(clock_.nowMs());
  sendNow(std::move(m), false);
  maybeRenewCertificate();
}

bool Agent::sendNow(muster::v1::AgentMessage message, bool live_output) {
  std::shared_ptr<LinkStream> link;
  {
    std::lock_guard lock(link_mu_);
    if (!link_ || !welcomed_) return false;
    link = link_;
  }
  if (live_output && link->queuedBytes() > kMaxQueuedLiveBytes) return false;
  return link->send(std::move(message));
}

void Agent::sendAll(std::vector<muster::v1::AgentMessage> messages) {
  for (auto& m : messages) {
    if (!sendNow(std::move(m), false)) return;
  }
}

void Agent::drain() {
  spdlog::info("stopping: {} command(s) running, grace {} ms", running_.size(),
               config_.shutdown_grace_ms);
  auto pump_until = [this](int64_t deadline, const std::function<bool()>& done) {
    while (!done() && clock_.steadyMs() < deadline) {
      std::deque<std::function<void()>> tasks;
      {
        std::unique_lock lock(mailbox_->mu);
        mailbox_->cv.wait_for(lock, std::chrono::milliseconds(50),
                              [&] { return !mailbox_->tasks.empty(); });
        tasks.swap(mailbox_->tasks);
      }
      for (auto& t : tasks) t();
    }
  };
  pump_until(clock_.steadyMs() + config_.shutdown_grace_ms, [&] { return running_.empty(); });
  int64_t longest_grace = 0;
  for (auto& [id, r] : running_) {
    r->killed_for_shutdown = true;
    longest_grace = std::max<int64_t>(longest_grace, r->spec.exec().kill_grace_ms());
    if (r->runner) r->runner->cancel("agent stopped while the command was running");
  }
  if (longest_grace == 0) longest_grace = config_.default_kill_grace_ms;
  pump_until(clock_.steadyMs() + longest_grace + 2000, [&] { return running_.empty(); });
  pump_until(clock_.steadyMs() + config_.flush_timeout_ms, [&] {
    std::lock_guard lock(link_mu_);
    return !link_ || !welcomed_ || outbox_->unacked().empty();
  });
  std::shared_ptr<LinkStream> link;
  {
    std::lock_guard lock(link_mu_);
    link = link_;
  }
  if (link) link->close();
  spdlog::info("agent stopped");
}

}  // namespace muster::agent
