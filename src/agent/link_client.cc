// gRPC client side of the agent link.
//
// The reactor holds one "hold" so that writes can be started from outside gRPC threads; the
// hold is released once (stream ending or close()), and only while no write is in flight,
// so no StartWrite can follow OnDone.
#include "agent/link_client.h"

#include <grpc/grpc_security.h>
#include <grpcpp/grpcpp.h>

#include <deque>
#include <mutex>

#include "muster/v1/agent.grpc.pb.h"

namespace muster::agent {
namespace {

absl::Status fromGrpc(const grpc::Status& st) {
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

class Stream final
    : public LinkStream,
      public grpc::ClientBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage> {
 public:
  explicit Stream(Handlers handlers) : handlers_(std::move(handlers)) {}

  void start(muster::v1::AgentLink::Stub* stub, const std::string& agent_id,
             const std::string& credential, std::shared_ptr<Stream> self) {
    self_ = std::move(self);
    ctx_.AddMetadata("x-muster-agent-id", agent_id);
    ctx_.AddMetadata("authorization", "Bearer " + credential);
    stub->async()->Connect(&ctx_, this);
    AddHold();
    StartRead(&in_);
    StartCall();
  }

  bool send(muster::v1::AgentMessage message) override {
    {
      std::lock_guard lock(mu_);
      if (closing_) return false;
      queued_bytes_ += message.ByteSizeLong();
      queue_.push_back(std::move(message));
      if (in_flight_) return true;
      in_flight_ = true;
      current_ = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= std::min(queued_bytes_, current_.ByteSizeLong());
    }
    StartWrite(&current_);
    return true;
  }

  size_t queuedBytes() const override {
    std::lock_guard lock(mu_);
    return queued_bytes_;
  }

  void close() override {
    ctx_.TryCancel();
    releaseHold();
  }

  void OnWriteDone(bool ok) override {
    bool release = false;
    bool write_next = false;
    {
      std::lock_guard lock(mu_);
      if (!ok) closing_ = true;
      if (!closing_ && !queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= std::min(queued_bytes_, current_.ByteSizeLong());
        write_next = true;
      } else {
        in_flight_ = false;
        release = closing_ && release_pending_;
      }
    }
    if (write_next) {
      StartWrite(&current_);
    } else if (release) {
      doRelease();
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      releaseHold();
      return;
    }
    if (handlers_.on_message) handlers_.on_message(in_);
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    if (handlers_.on_closed) handlers_.on_closed(fromGrpc(status));
    std::shared_ptr<Stream> self;
    {
      std::lock_guard lock(mu_);
      self = std::move(self_);
    }
    // `self` dies here (or later, if the owner still holds a reference).
  }

 private:
  void releaseHold() {
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      if (released_ || release_pending_) return;
      release_pending_ = true;
      if (in_flight_) return;  // OnWriteDone releases
    }
    doRelease();
  }

  void doRelease() {
    {
      std::lock_guard lock(mu_);
      if (released_) return;
      released_ = true;
    }
    RemoveHold();
  }

  Handlers handlers_;
  grpc::ClientContext ctx_;
  mutable std::mutex mu_;
  std::deque<muster::v1::AgentMessage> queue_;
  size_t queued_bytes_ = 0;
  muster::v1::AgentMessage current_;
  muster::v1::ServerMessage in_;
  bool in_flight_ = false;
  bool closing_ = false;
  bool release_pending_ = false;
  bool released_ = false;
  std::shared_ptr<Stream> self_;
};

}  // namespace

std::shared_ptr<grpc::Channel> makeChannel(const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, options.keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // No channelz bookkeeping and no decompression (the server never compresses) per message.
  args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
  args.SetInt(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  // Our own backoff (full jitter, 60 s cap) decides when to reconnect.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 60'000);
  args.SetMaxReceiveMessageSize(4 << 20);
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (options.security.plaintext) {
    return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  }
  if (options.session_cache != nullptr) {
    grpc_arg arg = grpc_ssl_session_cache_create_channel_arg(
        static_cast<grpc_ssl_session_cache*>(options.session_cache));
    args.SetPointerWithVtable(arg.key, arg.value.pointer.p, arg.value.pointer.vtable);
  }
  auto credentials = options.credentials ? options.credentials : makeCredentials(options.security);
  return grpc::CreateCustomChannel(options.target, credentials, args);
}

std::shared_ptr<grpc::ChannelCredentials> makeCredentials(const LinkSecurity& security) {
  if (security.plaintext) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = security.ca_pem;
  ssl.pem_private_key = security.client_key_pem;
  ssl.pem_cert_chain = security.client_cert_pem;
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<muster::v1::EnrollResponse> enroll(const std::shared_ptr<grpc::Channel>& channel,
                                                  const muster::v1::EnrollRequest& request,
                                                  int64_t deadline_ms) {
  auto stub = muster::v1::AgentLink::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  muster::v1::EnrollResponse response;
  grpc::Status st = stub->Enroll(&ctx, request, &response);
  if (!st.ok()) return fromGrpc(st);
  return response;
}

std::shared_ptr<LinkStream> openStream(const std::shared_ptr<grpc::Channel>& channel,
                                       const std::string& agent_id, const std::string& credential,
                                       LinkStream::Handlers handlers) {
  // The stub only starts the call; the reactor keeps the call alive.
  auto stub = muster::v1::AgentLink::NewStub(channel);
  auto stream = std::make_shared<Stream>(std::move(handlers));
  stream->start(stub.get(), agent_id, credential, stream);
  return stream;
}

namespace {
class GrpcLink final : public Link {
 public:
  explicit GrpcLink(std::string target) : target_(std::move(target)) {
    security_.plaintext = true;  // until secure(): Agent decides before its first call
    reset();
  }
  absl::StatusOr<muster::v1::EnrollResponse> enroll(const muster::v1::EnrollRequest& request,
                                                    int64_t deadline_ms) override {
    return agent::enroll(channel_, request, deadline_ms);
  }
  std::shared_ptr<LinkStream> open(const std::string& agent_id, const std::string& credential,
                                   LinkStream::Handlers handlers) override {
    return openStream(channel_, agent_id, credential, std::move(handlers));
  }
  void reset() override {
    ChannelOptions options;
    options.target = target_;
    options.security = security_;
    options.session_cache = session_cache_;
    if (!credentials_) credentials_ = makeCredentials(security_);
    options.credentials = credentials_;
    auto fresh = makeChannel(options);
    std::lock_guard lock(channel_mu_);
    channel_.swap(fresh);  // the old channel is released after the lock
  }
  void secure(const LinkSecurity& security) override {
    security_ = security;
    credentials_.reset();
    freshSessions();
    reset();
  }
  void presentCertificate(const std::string& key_pem, const std::string& cert_pem) override {
    security_.client_key_pem = key_pem;
    security_.client_cert_pem = cert_pem;
    credentials_.reset();
    freshSessions();
  }
  absl::StatusOr<std::string> renewCertificate(const std::string& agent_id,
                                               const std::string& credential,
                                               const std::string& csr_pem,
                                               int64_t deadline_ms) override {
    std::shared_ptr<grpc::Channel> channel;
    {
      std::lock_guard lock(channel_mu_);  // called off the agent's thread, which may reset()
      channel = channel_;
    }
    auto stub = muster::v1::AgentLink::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    ctx.AddMetadata("x-muster-agent-id", agent_id);
    ctx.AddMetadata("authorization", "Bearer " + credential);
    muster::v1::RenewCertificateRequest request;
    request.set_csr_pem(csr_pem);
    muster::v1::RenewCertificateResponse response;
    grpc::Status st = stub->RenewCertificate(&ctx, request, &response);
    if (!st.ok()) return fromGrpc(st);
    return response.client_cert_pem();
  }
  ~GrpcLink() override {
    channel_.reset();
    grpc_ssl_session_cache_destroy(session_cache_);
  }

 private:
  // A resumed TLS session keeps the client identity of the handshake it came from: a new
  // (or no longer the same) client certificate must not resume an old session. Channels
  // hold their own reference to the cache they were made with.
  void freshSessions() {
    grpc_ssl_session_cache_destroy(session_cache_);
    session_cache_ = grpc_ssl_session_cache_create_lru(4);
  }

  std::string target_;
  LinkSecurity security_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;  // made for security_
  // Reconnects resume the TLS session (no full handshake after a blip).
  grpc_ssl_session_cache* session_cache_ = grpc_ssl_session_cache_create_lru(4);
  std::mutex channel_mu_;  // channel_ is read by renewCertificate() on another thread
  std::shared_ptr<grpc::Channel> channel_;
};
}  // namespace

std::unique_ptr<Link> makeGrpcLink(const std::string& target) {
  return std::make_unique<GrpcLink>(target);
}

}  // namespace muster::agent
