// AgentLink over gRPC's callback API: one reactor per stream, no thread per stream.
//
// Write discipline: one write in flight, a queue behind it. Whoever holds the in-flight
// "token" is the only caller of StartWrite/Finish, so Finish never races a StartWrite and
// no gRPC call is made under our own lock (reactions can run inline inside Start*).
#include "server/grpc/agent_link_server.h"

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/certs.h"
#include "crypto/enroll_token.h"
#include "muster/v1/agent.grpc.pb.h"
#include "server/grpc/acceptor.h"
#include "server/grpc/artifact_rpcs.h"
#include "server/grpc/call_auth.h"
#include "server/grpc/convert.h"

namespace muster::server::grpcadapter {
namespace {

// The largest TLS record musterd sends (the outgoing buffer of each TLS connection holds one),
// and the incoming buffer, which takes an agent's larger records in pieces.
constexpr int kTlsFrameBytes = 4096;
constexpr int kTlsInBufferBytes = 1024;

// Counts a TLS stream by its connection's handshake (resumed session or full).
void countHandshake(const grpc::CallbackServerContext* ctx, CoreMetrics& metrics) {
  auto auth = ctx->auth_context();
  if (!auth) return;
  auto reused = auth->FindPropertyValues(GRPC_SSL_SESSION_REUSED_PROPERTY);
  if (reused.empty()) return;  // plaintext
  (reused.front() == "true" ? metrics.tls_streams_resumed : metrics.tls_streams_full)
      .fetch_add(1, std::memory_order_relaxed);
}

// The peer without its port ("ipv4:10.0.0.5"): refusals are logged per source address.
std::string peerAddress(const grpc::CallbackServerContext* ctx) {
  std::string peer = ctx->peer();
  if (size_t colon = peer.rfind(':'); colon != std::string::npos && colon > 5) peer.resize(colon);
  return peer;
}

class LinkStream;

// The core's handle on a stream; outlives the reactor safely.
class GrpcSession final : public Session {
 public:
  GrpcSession(std::string agent_id, std::string session_id, const AgentLinkOptions& options,
              Limits& limits, const common::Clock& clock)
      : agent_id_(std::move(agent_id)),
        session_id_(std::move(session_id)),
        options_(options),
        limits_(limits),
        clock_(clock) {}
  const std::string& agentId() const override { return agent_id_; }
  const std::string& sessionId() const override { return session_id_; }
  bool send(ServerEvent event) override;
  void close(absl::Status why) override;
  size_t queuedMessages() const override {
    std::lock_guard lock(mu_);
    return queue_.size();
  }
  size_t queuedBytes() const override {
    std::lock_guard lock(mu_);
    return queue_bytes_;
  }

  void bind(LinkStream* stream, grpc::CallbackServerContext* ctx) {
    stream_ = stream;
    ctx_ = ctx;
  }
  // Called from the reactor's OnWriteDone; returns the next message to write, if any.
  bool nextWrite(bool ok, muster::v1::ServerMessage* out, bool* finish, grpc::Status* status);
  // Cancels the call if its write has been in flight longer than the stuck-write timeout.
  void checkStuck(int64_t now_steady_ms);
  void onDone();

 private:
  void startFinish(grpc::Status status);
  // Ends a stream whose writes cannot complete (Finish would queue behind them): the queue
  // is dropped and the call cancelled, which completes the write in flight with !ok.
  void abortLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void cancelCall();

  const std::string agent_id_;
  const std::string session_id_;
  const AgentLinkOptions& options_;
  Limits& limits_;
  const common::Clock& clock_;
  mutable std::mutex mu_;
  std::condition_variable cancel_done_;
  LinkStream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // null after OnDone
  grpc::CallbackServerContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<muster::v1::ServerMessage> queue_ ABSL_GUARDED_BY(mu_);
  size_t queue_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  int64_t write_started_steady_ms_ ABSL_GUARDED_BY(mu_) = 0;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_wanted_ ABSL_GUARDED_BY(mu_) = false;
  // A thread is inside TryCancel: OnDone (on another thread) waits, so the context it uses
  // stays alive. OnDone run from inside TryCancel itself (inline) does not wait.
  std::thread::id cancelling_thread_ ABSL_GUARDED_BY(mu_);
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

// Every stream's session, for the stuck-write watchdog.
class SessionSet {
 public:
  void add(const std::shared_ptr<GrpcSession>& s) {
    std::lock_guard lock(mu_);
    sessions_.emplace(s.get(), s);
  }
  void remove(const GrpcSession* s) {
    std::lock_guard lock(mu_);
    sessions_.erase(s);
  }
  std::vector<std::shared_ptr<GrpcSession>> snapshot() {
    std::vector<std::shared_ptr<GrpcSession>> out;
    std::lock_guard lock(mu_);
    out.reserve(sessions_.size());
    for (const auto& [p, weak] : sessions_) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::unordered_map<const GrpcSession*, std::weak_ptr<GrpcSession>> sessions_;
};

class LinkStream final
    : public grpc::ServerBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage> {
 public:
  LinkStream(grpc::CallbackServerContext* ctx, ControlPlane& plane, SessionSet& live,
             const AgentLinkOptions& options)
      : plane_(plane), live_(live) {
    std::string agent_id = metadataValue(ctx, "x-muster-agent-id");
    std::string auth = metadataValue(ctx, "authorization");
    const std::string kBearer = "Bearer ";
    session_ = std::make_shared<GrpcSession>(agent_id, common::newUlid(plane.clock().nowMs()),
                                             options, plane.limits(), plane.clock());
    session_->bind(this, ctx);
    live_.add(session_);
    absl::Status st;
    if (auth.rfind(kBearer, 0) != 0) {
      st = absl::UnauthenticatedError("missing agent credential (authorization: Bearer ...)");
    } else if (auto cert = clientCertificate(ctx, agent_id, plane.clock().nowMs() / 1000);
               !cert.ok()) {
      st = cert.status();
    } else {
      st = plane.openStream(session_, auth.substr(kBearer.size()), *cert);
    }
    if (!st.ok()) {
      spdlog::warn("agent link from {} refused: {}", ctx->peer(), st.message());
      session_->close(st);
      return;
    }
    countHandshake(ctx, plane.commands().metrics());
    StartRead(&in_);
  }

  void write(const muster::v1::ServerMessage* msg) { StartWrite(msg); }
  void finish(const grpc::Status& status) { Finish(status); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      session_->close(absl::OkStatus());
      return;
    }
    absl::Status st = handle();
    if (!st.ok()) {
      spdlog::warn("agent {}: {}", session_->agentId(), st.message());
      session_->close(st);
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    bool finish = false;
    grpc::Status status;
    if (session_->nextWrite(ok, &out_, &finish, &status)) {
      StartWrite(&out_);
    } else if (finish) {
      Finish(status);
    }
  }

  void OnCancel() override { session_->close(absl::CancelledError("stream cancelled")); }

  void OnDone() override {
    plane_.onStreamClosed(session_, absl::UnavailableError("stream closed"));
    live_.remove(session_.get());
    session_->onDone();
    delete this;
  }

  muster::v1::ServerMessage* outBuffer() { return &out_; }

 private:
  // The wire message as a core event; the core owns the protocol (Hello first, once).
  absl::Status handle() {
    absl::StatusOr<AgentEvent> event = toAgentEvent(in_);
    if (!event.ok()) return event.status();
    return plane_.onAgentMessage(session_, *std::move(event));
  }

  ControlPlane& plane_;
  SessionSet& live_;
  std::shared_ptr<GrpcSession> session_;
  muster::v1::AgentMessage in_;
  muster::v1::ServerMessage out_;
};

bool GrpcSession::send(ServerEvent event) {
  LinkStream* stream = nullptr;
  {
    std::lock_guard lock(mu_);
    if (finish_requested_ || !stream_) return false;
    queue_.emplace_back();
    toProto(event, &queue_.back());
    size_t bytes = queue_.back().ByteSizeLong();
    queue_bytes_ += bytes;
    if (!write_in_flight_) {
      write_in_flight_ = true;
      write_started_steady_ms_ = clock_.steadyMs();
      *stream_->outBuffer() = std::move(queue_.front());
      queue_.pop_front();
      queue_bytes_ -= bytes;
      stream = stream_;
    } else if (queue_.size() > options_.max_send_queue_messages ||
               queue_bytes_ > options_.max_send_queue_bytes) {
      limits_.hit(Limit::kSendQueue, clock_.steadyMs(),
                  absl::StrCat("agent ", agent_id_, " is not reading its stream: ", queue_.size(),
                               " messages (", queue_bytes_,
                               " bytes) queued; ending the stream (it reconnects and gets its "
                               "open commands again)"));
      abortLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                               absl::StrCat("send queue full (", queue_.size(), " messages, ",
                                            queue_bytes_, " bytes): read faster, reconnect")));
    } else {
      return true;
    }
  }
  if (!stream) {  // aborted above
    cancelCall();
    return false;
  }
  stream->write(stream->outBuffer());
  return true;
}

bool GrpcSession::nextWrite(bool ok, muster::v1::ServerMessage* out, bool* finish,
                            grpc::Status* status) {
  std::lock_guard lock(mu_);
  if (!ok) {
    queue_.clear();
    queue_bytes_ = 0;
    if (!finish_requested_) {
      finish_requested_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
    }
  }
  if (!queue_.empty()) {
    // Also after a close was requested: flush what was queued before it (e.g. an ack).
    *out = std::move(queue_.front());
    queue_.pop_front();
    queue_bytes_ -= std::min(queue_bytes_, out->ByteSizeLong());
    write_started_steady_ms_ = clock_.steadyMs();
    return true;
  }
  write_in_flight_ = false;
  if (finish_requested_ && !finish_called_) {
    finish_called_ = true;
    *finish = true;
    *status = finish_status_;
  }
  return false;
}

void GrpcSession::close(absl::Status why) { startFinish(toGrpc(why)); }

void GrpcSession::startFinish(grpc::Status status) {
  LinkStream* stream;
  {
    std::lock_guard lock(mu_);
    if (finish_requested_ || !stream_) return;
    finish_requested_ = true;
    finish_status_ = status;
    if (write_in_flight_) return;  // OnWriteDone finishes
    finish_called_ = true;
    stream = stream_;
  }
  stream->finish(status);
}

void GrpcSession::abortLocked(grpc::Status status) {
  queue_.clear();
  queue_bytes_ = 0;
  if (!finish_requested_) {
    finish_requested_ = true;
    finish_status_ = std::move(status);
  }
  cancel_wanted_ = true;
}

void GrpcSession::checkStuck(int64_t now_steady_ms) {
  if (options_.stuck_write_timeout_ms <= 0) return;
  {
    std::lock_guard lock(mu_);
    if (!stream_ || !write_in_flight_ || cancel_wanted_ ||
        now_steady_ms - write_started_steady_ms_ < options_.stuck_write_timeout_ms) {
      return;
    }
    limits_.hit(Limit::kStuckWrite, now_steady_ms,
                absl::StrCat("agent ", agent_id_, ": a write made no progress for ",
                             now_steady_ms - write_started_steady_ms_,
                             " ms (the peer does not read its stream); cancelling the stream"));
    abortLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                             "a write to the agent made no progress: stream cancelled"));
  }
  cancelCall();
}

void GrpcSession::cancelCall() {
  grpc::CallbackServerContext* ctx;
  {
    std::lock_guard lock(mu_);
    if (!stream_ || !ctx_ || cancelling_) return;
    cancelling_ = true;
    cancelling_thread_ = std::this_thread::get_id();
    ctx = ctx_;
  }
  // Not under mu_: the cancellation can run the reactor's reactions inline, which take it.
  // The write in flight completes with !ok, nextWrite() finds the queue empty and Finish runs.
  ctx->TryCancel();
  {
    std::lock_guard lock(mu_);
    cancelling_ = false;
  }
  cancel_done_.notify_all();
}

void GrpcSession::onDone() {
  std::unique_lock lock(mu_);
  // A TryCancel on another thread still uses the call's context: wait for it (microseconds).
  // When OnDone runs inside that TryCancel (inline), the canceller is this thread: no wait.
  cancel_done_.wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !cancelling_ || cancelling_thread_ == std::this_thread::get_id();
  });
  stream_ = nullptr;
  ctx_ = nullptr;
  finish_requested_ = true;
  queue_.clear();
  queue_bytes_ = 0;
}

class AgentLinkService final : public muster::v1::AgentLink::CallbackService {
 public:
  static constexpr size_t kMaxCsrBytes = 16 * 1024;

  AgentLinkService(ControlPlane& plane, common::Executor& workers, common::Executor& io,
                   const AgentLinkOptions& options)
      : plane_(plane),
        workers_(workers),
        options_(options),
        artifact_rpcs_{plane, options.artifacts, io} {}

  grpc::ServerReadReactor<muster::v1::UploadRequest>* UploadArtifact(
      grpc::CallbackServerContext* ctx, muster::v1::ArtifactRef* response) override {
    return newUploadReactor(ctx, response, artifact_rpcs_);
  }

  grpc::ServerWriteReactor<muster::v1::DownloadResponse>* DownloadArtifact(
      grpc::CallbackServerContext* ctx, const muster::v1::DownloadRequest* request) override {
    return newDownloadReactor(ctx, request, artifact_rpcs_);
  }

  grpc::ServerBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage>* Connect(
      grpc::CallbackServerContext* ctx) override {
    return new LinkStream(ctx, plane_, live_, options_);
  }

  SessionSet& live() { return live_; }

  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* ctx,
                                   const muster::v1::EnrollRequest* request,
                                   muster::v1::EnrollResponse* response) override {
    auto* reactor = ctx->DefaultReactor();
    if (request->token().size() > 512 || request->current_credential().size() > 512 ||
        request->attempt_id().size() > 128 || request->facts_size() > 256 ||
        request->labels_size() > 256 || request->csr_pem().size() > kMaxCsrBytes) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "enroll request too large"));
      return reactor;
    }
    std::string peer = peerAddress(ctx);
    bool queued = workers_.tryPost(
        [this, reactor, request, response, peer] {
          EnrollRequest req;
          // A whole pinned token is accepted too: only its secret is checked.
          auto token = crypto::parseEnrollToken(request->token());
          req.token = token.ok() ? token->secret : request->token();
          req.agent_id = request->agent_id();
          req.facts.insert(request->facts().begin(), request->facts().end());
          req.labels.insert(request->labels().begin(), request->labels().end());
          req.current_credential = request->current_credential();
          req.attempt_id = request->attempt_id();
          req.source = peer;
          req.csr_pem = request->csr_pem();
          IssuedCertificate issued;
          // Logs refusals, rate-limited.
          auto credential = plane_.enrollment().enroll(req, &issued);
          if (!credential.ok()) {
            reactor->Finish(toGrpc(credential.status()));
            return;
          }
          response->set_agent_id(req.agent_id);
          response->set_credential(*credential);
          response->set_client_cert_pem(std::move(issued.cert_pem));
          reactor->Finish(grpc::Status::OK);
        },
        options_.max_pending_enrolls);
    if (!queued) {
      plane_.limits().hit(Limit::kEnrollBacklog, plane_.clock().steadyMs(),
                          absl::StrCat("enrollment backlog full (", options_.max_pending_enrolls,
                                       " waiting): refusing Enroll calls with RESOURCE_EXHAUSTED"));
      absl::Status busy = absl::ResourceExhaustedError(
          "server busy enrolling other agents: retry in a few seconds");
      plane_.enrollment().noteRefused(request->agent_id(), peer, busy);
      reactor->Finish(toGrpc(busy));
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* RenewCertificate(
      grpc::CallbackServerContext* ctx, const muster::v1::RenewCertificateRequest* request,
      muster::v1::RenewCertificateResponse* response) override {
    auto* reactor = ctx->DefaultReactor();
    if (request->csr_pem().size() > kMaxCsrBytes) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "CSR too large"));
      return reactor;
    }
    std::string agent_id = metadataValue(ctx, "x-muster-agent-id");
    std::string auth = metadataValue(ctx, "authorization");
    const std::string kBearer = "Bearer ";
    if (auth.rfind(kBearer, 0) != 0) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                   "missing agent credential (authorization: Bearer ...)"));
      return reactor;
    }
    auto cert = clientCertificate(ctx, agent_id, plane_.clock().nowMs() / 1000);
    if (!cert.ok()) {
      reactor->Finish(toGrpc(cert.status()));
      return reactor;
    }
    // Renewals share the enrollment workers and their bound (the same CSR signing work).
    bool queued = workers_.tryPost(
        [this, reactor, request, response, agent_id, credential = auth.substr(kBearer.size()),
         presented = *cert, peer = peerAddress(ctx)] {
          auto issued = plane_.enrollment().renewCertificate(agent_id, credential, presented,
                                                             request->csr_pem(), peer);
          if (!issued.ok()) {
            reactor->Finish(toGrpc(issued.status()));
            return;
          }
          response->set_client_cert_pem(std::move(issued->cert_pem));
          reactor->Finish(grpc::Status::OK);
        },
        options_.max_pending_enrolls);
    if (!queued) {
      plane_.limits().hit(Limit::kEnrollBacklog, plane_.clock().steadyMs(),
                          absl::StrCat("enrollment backlog full (", options_.max_pending_enrolls,
                                       " waiting): refusing RenewCertificate calls"));
      reactor->Finish(toGrpc(absl::ResourceExhaustedError(
          "server busy signing other agents' certificates: retry in a few seconds")));
    }
    return reactor;
  }

 private:
  ControlPlane& plane_;
  common::Executor& workers_;
  const AgentLinkOptions& options_;
  ArtifactRpcs artifact_rpcs_;
  SessionSet live_;
};

}  // namespace

// The agent port's TLS: gRPC's SSL server credentials ask this for the certificate before
// every handshake (on the accept thread, which registers handshakes one at a time); a renewed
// snapshot of the identity becomes the certificate of the next handshake, while connections
// already up keep theirs.
struct TlsFetcher {
  std::shared_ptr<crypto::ServerIdentity> identity;
  std::atomic<uint64_t> served{0};

  static grpc_ssl_certificate_config_reload_status fetch(
      void* user, grpc_ssl_server_certificate_config** config) {
    auto* self = static_cast<TlsFetcher*>(user);
    auto material = self->identity->current();
    if (!material || material->generation == self->served.load()) {
      return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    }
    grpc_ssl_pem_key_cert_pair pair{material->key_pem.c_str(), material->chain_pem.c_str()};
    *config = grpc_ssl_server_certificate_config_create(material->ca_pem.c_str(), &pair, 1);
    self->served.store(material->generation);
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
  }
};

struct AgentLinkServer::Impl {
  AgentLinkOptions options;
  std::unique_ptr<TlsFetcher> tls;
  grpc_server_fd_handoff* handoff = nullptr;  // owned by the gRPC server
  // Artifact calls' disk work; outlives the server (a call ends from one of its tasks).
  std::unique_ptr<common::WorkerPool> artifact_io;
  std::unique_ptr<AgentLinkService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<Acceptor> acceptor;
  int port = 0;
  // The stuck-write watchdog: once a second, every stream whose write is stuck is cancelled.
  std::mutex watchdog_mu;
  std::condition_variable watchdog_cv;
  bool stopping = false;
  std::thread watchdog;

  void watch(const common::Clock& clock) {
    std::unique_lock lock(watchdog_mu);
    while (!watchdog_cv.wait_for(lock, std::chrono::seconds(1), [this] { return stopping; })) {
      lock.unlock();
      int64_t now = clock.steadyMs();
      for (const auto& s : service->live().snapshot()) s->checkStuck(now);
      lock.lock();
    }
  }
  void stopWatchdog() {
    {
      std::lock_guard lock(watchdog_mu);
      stopping = true;
    }
    watchdog_cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
  }
};

AgentLinkServer::AgentLinkServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AgentLinkServer::~AgentLinkServer() { shutdown(0); }

absl::StatusOr<std::unique_ptr<AgentLinkServer>> AgentLinkServer::start(
    ControlPlane& plane, common::Executor& workers, const AgentLinkOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->artifact_io = std::make_unique<common::WorkerPool>(
      static_cast<int>(std::max<size_t>(1, options.artifact_io_threads)), "artifact-io");
  impl->service =
      std::make_unique<AgentLinkService>(plane, workers, *impl->artifact_io, impl->options);
  // No listening port of gRPC's own: our Acceptor accepts and hands connections over.
  grpc::ServerBuilder builder;
  builder.RegisterService(impl->service.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Agents may ping to keep NAT and proxies open; allow it without active calls.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // Reads start small and grow with the traffic: an idle agent holds ~1 KB of read buffer,
  // not 8 KB (takes effect with gRPC's tcp_read_chunks experiment off; musterd's main).
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1024);
  builder.AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256);
  // Per-message work nobody uses on this port, for every message of every agent: channelz
  // bookkeeping (and its per-connection node), decompression (agents never compress), and
  // deadline checks (the link is one stream without a deadline; Enroll needs none server-side).
  builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
  builder.AddChannelArgument(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  builder.AddChannelArgument(GRPC_ARG_ENABLE_DEADLINE_CHECKS, 0);
  // TLS records of at most 4 KB, and 4 KB out / 1 KB in between each connection and its
  // socket (gRPC's default: 16 KB records, 17 KB each way), the part of a connection's TLS
  // memory kept for its whole life (gRPC patch grpc-1.51.1-tls-tuning: the record and
  // staging buffers are taken per read and write).
  builder.AddChannelArgument(GRPC_ARG_TSI_MAX_FRAME_SIZE, kTlsFrameBytes);
  builder.AddChannelArgument(GRPC_ARG_MUSTER_TLS_OUT_BUFFER_SIZE, kTlsFrameBytes);
  builder.AddChannelArgument(GRPC_ARG_MUSTER_TLS_IN_BUFFER_SIZE, kTlsInBufferBytes);
  // A connection that never opens a stream (or keeps none open) is closed after this: it
  // would hold a descriptor forever. Agents keep their one stream open all the time.
  if (options.max_connection_idle_ms > 0) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_IDLE_MS,
        static_cast<int>(std::min<int64_t>(options.max_connection_idle_ms, INT32_MAX)));
  }
  impl->server = builder.BuildAndStart();
  if (!impl->server) return absl::InternalError("cannot start the gRPC server for agents");
  grpc::Server* server = impl->server.get();
  std::function<void(int)> hand_off = [server](int fd) {
    grpc::AddInsecureChannelFromFd(server, fd);
  };
  if (options.tls) {
    impl->tls = std::make_unique<TlsFetcher>();
    impl->tls->identity = options.tls;
    // Clients without a certificate are let in (the bearer credential authenticates them);
    // one that presents a certificate must present one our CA signed.
    grpc_ssl_server_credentials_options* ssl_options =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY, &TlsFetcher::fetch, impl->tls.get());
    grpc_server_credentials* creds = grpc_ssl_server_credentials_create_with_options(ssl_options);
    // Session tickets survive a restart: agents resume instead of a fleet of full handshakes.
    if (creds != nullptr && !grpc_ssl_server_credentials_set_session_ticket_key(
                                creds, options.tls->sessionTicketKey().data(),
                                options.tls->sessionTicketKey().size())) {
      spdlog::warn("TLS session tickets will not survive a restart (the key was refused)");
    }
    if (creds != nullptr) {
      impl->handoff = grpc_server_fd_handoff_create(
          server->c_server(), creds,
          static_cast<int>(std::min<int64_t>(options.handshake_timeout_ms, INT32_MAX)));
      grpc_server_credentials_release(creds);  // the hand-off holds its own reference
    }
    if (impl->handoff == nullptr) {
      impl->server->Shutdown(std::chrono::system_clock::now());
      return absl::InternalError("cannot set up TLS on the agent port (see the log above)");
    }
    grpc_server_fd_handoff* handoff = impl->handoff;
    hand_off = [handoff](int fd) { grpc_server_fd_handoff_add(handoff, fd); };
  }
  Acceptor::Options accept_options;
  accept_options.listen = options.listen;
  accept_options.fd_ceiling = options.fd_ceiling;
  auto acceptor = Acceptor::start(accept_options, std::move(hand_off),
                                  [&plane] { plane.noteConnectionRefused(); });
  if (!acceptor.ok()) {
    impl->server->Shutdown(std::chrono::system_clock::now());
    return acceptor.status();
  }
  impl->acceptor = std::move(*acceptor);
  impl->port = impl->acceptor->ports().empty() ? 0 : impl->acceptor->ports()[0];
  Impl* raw = impl.get();
  impl->watchdog = std::thread([raw, &plane] { raw->watch(plane.clock()); });
  return std::unique_ptr<AgentLinkServer>(new AgentLinkServer(std::move(impl)));
}

int AgentLinkServer::port() const { return impl_->port; }

void AgentLinkServer::shutdown(int64_t deadline_ms) {
  impl_->stopWatchdog();
  if (impl_->acceptor) impl_->acceptor->stop();  // before gRPC, which the hand-off calls
  if (!impl_->server) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(deadline_ms));
  impl_->server.reset();
  if (impl_->handoff != nullptr) grpc_server_fd_handoff_destroy(impl_->handoff);
  impl_->handoff = nullptr;
}

}  // namespace muster::server::grpcadapter
