// AgentLink over gRPC's callback API: one reactor per stream, no thread per stream.
//
// Write discipline: one write in flight, a queue behind it. Whoever holds the in-flight
// "token" is the only caller of StartWrite/Finish, so Finish never races a StartWrite and
// no gRPC call is made under our own lock (reactions can run inline inside Start*).
#include "server/grpc/agent_link_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "muster/v1/agent.grpc.pb.h"
#include "server/grpc/acceptor.h"
#include "server/grpc/convert.h"

namespace muster::server::grpcadapter {
namespace {

grpc::Status toGrpc(const absl::Status& st) {
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

std::string metadataValue(const grpc::CallbackServerContext* ctx, const char* key) {
  auto range = ctx->client_metadata().equal_range(key);
  if (range.first == range.second) return {};
  return std::string(range.first->second.data(), range.first->second.size());
}

class LinkStream;

// The core's handle on a stream; outlives the reactor safely.
class GrpcSession final : public Session {
 public:
  GrpcSession(std::string agent_id, std::string session_id)
      : agent_id_(std::move(agent_id)), session_id_(std::move(session_id)) {}
  const std::string& agentId() const override { return agent_id_; }
  const std::string& sessionId() const override { return session_id_; }
  bool send(ServerEvent event) override;
  void close(absl::Status why) override;

  void bind(LinkStream* stream) { stream_ = stream; }
  // Called from the reactor's OnWriteDone; returns the next message to write, if any.
  bool nextWrite(bool ok, muster::v1::ServerMessage* out, bool* finish, grpc::Status* status);
  void onDone();

 private:
  void startFinish(grpc::Status status);

  const std::string agent_id_;
  const std::string session_id_;
  std::mutex mu_;
  LinkStream* stream_ = nullptr;  // null after OnDone
  std::deque<muster::v1::ServerMessage> queue_;
  bool write_in_flight_ = false;
  bool finish_requested_ = false;
  bool finish_called_ = false;
  grpc::Status finish_status_;
};

class LinkStream final
    : public grpc::ServerBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage> {
 public:
  LinkStream(grpc::CallbackServerContext* ctx, ControlPlane& plane) : plane_(plane) {
    std::string agent_id = metadataValue(ctx, "x-muster-agent-id");
    std::string auth = metadataValue(ctx, "authorization");
    const std::string kBearer = "Bearer ";
    session_ = std::make_shared<GrpcSession>(agent_id, common::newUlid(plane.clock().nowMs()));
    session_->bind(this);
    absl::Status st;
    if (!plane.accepting()) {
      st = absl::UnavailableError("server is shutting down; reconnect later");
    } else if (auth.rfind(kBearer, 0) != 0) {
      st = absl::UnauthenticatedError("missing agent credential (authorization: Bearer ...)");
    } else {
      st = plane.authenticate(agent_id, auth.substr(kBearer.size()));
    }
    if (!st.ok()) {
      spdlog::warn("agent link from {} refused: {}", ctx->peer(), st.message());
      session_->close(st);
      return;
    }
    plane.onStreamOpened(session_);
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
    if (hello_done_) plane_.onDisconnect(*session_, absl::UnavailableError("stream closed"));
    session_->onDone();
    delete this;
  }

  muster::v1::ServerMessage* outBuffer() { return &out_; }

 private:
  absl::Status handle() {
    using K = muster::v1::AgentMessage::KindCase;
    if (!hello_done_ && in_.kind_case() != K::kHello) {
      return absl::FailedPreconditionError("the first message on the link must be Hello");
    }
    switch (in_.kind_case()) {
      case K::kHello: {
        if (hello_done_) return absl::FailedPreconditionError("Hello sent twice on one stream");
        hello_done_ = true;
        return plane_.onHello(session_, fromProto(in_.hello()));
      }
      case K::kHeartbeat:
        plane_.onHeartbeat(session_, fromProto(in_.heartbeat().metrics()));
        return absl::OkStatus();
      case K::kAccepted:
        plane_.commands().onAccepted(session_, in_.accepted().command_id());
        return absl::OkStatus();
      case K::kOutput: {
        model::OutputChunk chunk;
        if (!fromProto(in_.output(), &chunk)) {
          return absl::InvalidArgumentError("CommandOutput without command id or stream");
        }
        plane_.commands().onOutput(session_, std::move(chunk));
        return absl::OkStatus();
      }
      case K::kResult: {
        model::CommandResult result;
        if (!fromProto(in_.result(), &result)) {
          return absl::InvalidArgumentError("CommandResult without command id or outcome");
        }
        plane_.commands().onResult(session_, std::move(result));
        return absl::OkStatus();
      }
      default: return absl::InvalidArgumentError("unknown agent message kind (newer agent?)");
    }
  }

  ControlPlane& plane_;
  std::shared_ptr<GrpcSession> session_;
  muster::v1::AgentMessage in_;
  muster::v1::ServerMessage out_;
  bool hello_done_ = false;
};

bool GrpcSession::send(ServerEvent event) {
  LinkStream* stream;
  {
    std::lock_guard lock(mu_);
    if (finish_requested_ || !stream_) return false;
    queue_.emplace_back();
    toProto(event, &queue_.back());
    if (write_in_flight_) return true;
    write_in_flight_ = true;
    *stream_->outBuffer() = std::move(queue_.front());
    queue_.pop_front();
    stream = stream_;
  }
  stream->write(stream->outBuffer());
  return true;
}

bool GrpcSession::nextWrite(bool ok, muster::v1::ServerMessage* out, bool* finish,
                            grpc::Status* status) {
  std::lock_guard lock(mu_);
  if (!ok) {
    queue_.clear();
    if (!finish_requested_) {
      finish_requested_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
    }
  }
  if (!finish_requested_ && !queue_.empty()) {
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  if (finish_requested_ && !queue_.empty()) {
    // Flush what was queued before the close (e.g. an ack), then finish.
    *out = std::move(queue_.front());
    queue_.pop_front();
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

void GrpcSession::onDone() {
  std::lock_guard lock(mu_);
  stream_ = nullptr;
  finish_requested_ = true;
  queue_.clear();
}

class AgentLinkService final : public muster::v1::AgentLink::CallbackService {
 public:
  AgentLinkService(ControlPlane& plane, common::Executor& workers)
      : plane_(plane), workers_(workers) {}

  grpc::ServerBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage>* Connect(
      grpc::CallbackServerContext* ctx) override {
    return new LinkStream(ctx, plane_);
  }

  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* ctx,
                                   const muster::v1::EnrollRequest* request,
                                   muster::v1::EnrollResponse* response) override {
    auto* reactor = ctx->DefaultReactor();
    if (request->token().size() > 512 || request->facts_size() > 256 ||
        request->labels_size() > 256) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "enroll request too large"));
      return reactor;
    }
    std::string peer = ctx->peer();
    workers_.post([this, reactor, request, response, peer] {
      EnrollRequest req;
      req.token = request->token();
      req.agent_id = request->agent_id();
      req.facts.insert(request->facts().begin(), request->facts().end());
      req.labels.insert(request->labels().begin(), request->labels().end());
      auto credential = plane_.enrollment().enroll(req);
      if (!credential.ok()) {
        spdlog::warn("enrollment of '{}' from {} refused: {}", req.agent_id.substr(0, 140), peer,
                     credential.status().message());
        reactor->Finish(toGrpc(credential.status()));
        return;
      }
      response->set_agent_id(req.agent_id);
      response->set_credential(*credential);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

 private:
  ControlPlane& plane_;
  common::Executor& workers_;
};

}  // namespace

struct AgentLinkServer::Impl {
  std::unique_ptr<AgentLinkService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<Acceptor> acceptor;
  int port = 0;
};

AgentLinkServer::AgentLinkServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AgentLinkServer::~AgentLinkServer() { shutdown(0); }

absl::StatusOr<std::unique_ptr<AgentLinkServer>> AgentLinkServer::start(
    ControlPlane& plane, common::Executor& workers, const AgentLinkOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->service = std::make_unique<AgentLinkService>(plane, workers);
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
  impl->server = builder.BuildAndStart();
  if (!impl->server) return absl::InternalError("cannot start the gRPC server for agents");
  grpc::Server* server = impl->server.get();
  Acceptor::Options accept_options;
  accept_options.listen = options.listen;
  accept_options.fd_ceiling = options.fd_ceiling;
  auto acceptor = Acceptor::start(
      accept_options, [server](int fd) { grpc::AddInsecureChannelFromFd(server, fd); },
      [&plane] { plane.noteConnectionRefused(); });
  if (!acceptor.ok()) {
    impl->server->Shutdown(std::chrono::system_clock::now());
    return acceptor.status();
  }
  impl->acceptor = std::move(*acceptor);
  impl->port = impl->acceptor->ports().empty() ? 0 : impl->acceptor->ports()[0];
  return std::unique_ptr<AgentLinkServer>(new AgentLinkServer(std::move(impl)));
}

int AgentLinkServer::port() const { return impl_->port; }

void AgentLinkServer::shutdown(int64_t deadline_ms) {
  if (impl_->acceptor) impl_->acceptor->stop();  // before gRPC, which the hand-off calls
  if (!impl_->server) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(deadline_ms));
  impl_->server.reset();
}

}  // namespace muster::server::grpcadapter
