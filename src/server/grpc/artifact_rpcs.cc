// The artifact calls' reactors.
#include "server/grpc/artifact_rpcs.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/grpc/call_auth.h"
#include "server/grpc/convert.h"

namespace muster::server::grpcadapter {
namespace {

// Lets the core cancel a call from another thread (a deadline, its command ended) without
// racing its end: TryCancel runs only while the call is not done, and OnDone waits for a
// TryCancel in progress on another thread (one inside it, inline, does not wait).
class CallGuard {
 public:
  explicit CallGuard(grpc::CallbackServerContext* ctx) : ctx_(ctx) {}
  void cancel(absl::Status why) {
    {
      std::lock_guard lock(mu_);
      if (done_ || cancelled_) return;
      cancelled_ = true;
      why_ = std::move(why);
      cancelling_ = true;
      canceller_ = std::this_thread::get_id();
    }
    ctx_->TryCancel();
    {
      std::lock_guard lock(mu_);
      cancelling_ = false;
    }
    cv_.notify_all();
  }
  // The core's reason, once it cancelled the call.
  bool cancelled(absl::Status* why) {
    std::lock_guard lock(mu_);
    if (cancelled_) *why = why_;
    return cancelled_;
  }
  void onDone() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !cancelling_ || canceller_ == std::this_thread::get_id(); });
    done_ = true;
  }

 private:
  grpc::CallbackServerContext* const ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false, cancelled_ = false, cancelling_ = false;
  std::thread::id canceller_;
  absl::Status why_;
};

constexpr size_t kMaxIdBytes = 64;
constexpr size_t kMaxNameBytes = 4096;
constexpr size_t kMaxDeviceBytes = 256;

absl::Status checkSizes(std::string_view command_id, std::string_view artifact_id,
                        std::string_view device, std::string_view name) {
  if (command_id.size() > kMaxIdBytes || artifact_id.size() > kMaxIdBytes ||
      device.size() > kMaxDeviceBytes || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("transfer header field too long (ids up to ",
                                                   kMaxIdBytes, " bytes, device ", kMaxDeviceBytes,
                                                   ", name ", kMaxNameBytes, ")"));
  }
  return absl::OkStatus();
}

class UploadReactor final : public grpc::ServerReadReactor<muster::v1::UploadRequest> {
 public:
  UploadReactor(grpc::CallbackServerContext* ctx, muster::v1::ArtifactRef* response,
                const ArtifactRpcs& rpcs)
      : ctx_(ctx), response_(response), io_(rpcs.io), guard_(std::make_shared<CallGuard>(ctx)) {
    if (rpcs.artifacts == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this musterd stores no artifacts"));
      return;
    }
    auto agent = authenticateCall(ctx, rpcs.plane);
    if (!agent.ok()) {
      Finish(toGrpc(agent.status()));
      return;
    }
    auto transfer =
        rpcs.artifacts->open(model::TransferDirection::kUpload, *agent,
                             [guard = guard_](absl::Status why) { guard->cancel(std::move(why)); });
    if (!transfer.ok()) {
      Finish(toGrpc(transfer.status()));
      return;
    }
    transfer_ = *std::move(transfer);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the agent sent everything (or the call was cancelled)
      io_.post([this] { complete(); });
      return;
    }
    if (!header_seen_) {
      if (!in_.has_header()) {
        fail(absl::InvalidArgumentError(
            "the first message of an upload must be its header (UploadHeader)"));
        return;
      }
      header_seen_ = true;
      const auto& h = in_.header();
      if (auto st = checkSizes(h.command_id(), h.artifact_id(), h.device(), h.name()); !st.ok()) {
        fail(st);
        return;
      }
      UploadHeader header{.command_id = h.command_id(),
                          .purpose = fromProto(h.purpose()),
                          .artifact_id = h.artifact_id(),
                          .device = h.device(),
                          .name = h.name(),
                          .declared_size = h.size(),
                          .declared_sha256 = h.sha256(),
                          .resume_offset = h.resume_offset()};
      io_.post([this, header = std::move(header)] {
        auto offset = transfer_->beginUpload(header);
        if (!offset.ok()) {
          Finish(toGrpc(offset.status()));
          return;
        }
        ctx_->AddInitialMetadata("x-muster-upload-offset", absl::StrCat(*offset));
        StartSendInitialMetadata();
        StartRead(&in_);
      });
      return;
    }
    if (!in_.has_chunk()) {
      fail(absl::InvalidArgumentError("after its header an upload sends chunks only"));
      return;
    }
    io_.post([this, data = std::move(*in_.mutable_chunk())] {
      if (auto st = transfer_->chunk(data); !st.ok()) {
        Finish(toGrpc(st));
        return;
      }
      StartRead(&in_);
    });
  }

  void OnDone() override {
    guard_->onDone();
    delete this;
  }

 private:
  void fail(const absl::Status& st) {
    transfer_->abort(st);
    Finish(toGrpc(st));
  }

  void complete() {
    absl::Status why;
    if (guard_->cancelled(&why) || ctx_->IsCancelled()) {
      if (why.ok()) why = absl::CancelledError("the agent cancelled the upload");
      transfer_->abort(why);
      Finish(toGrpc(why));
      return;
    }
    if (!header_seen_) {
      fail(absl::InvalidArgumentError("an upload without a header"));
      return;
    }
    auto stored = transfer_->finishUpload();
    if (!stored.ok()) {
      Finish(toGrpc(stored.status()));
      return;
    }
    toProto(*stored, response_);
    Finish(grpc::Status::OK);
  }

  grpc::CallbackServerContext* const ctx_;
  muster::v1::ArtifactRef* const response_;
  common::Executor& io_;
  std::shared_ptr<CallGuard> guard_;
  std::shared_ptr<Transfer> transfer_;
  muster::v1::UploadRequest in_;
  bool header_seen_ = false;
};

class DownloadReactor final : public grpc::ServerWriteReactor<muster::v1::DownloadResponse> {
 public:
  DownloadReactor(grpc::CallbackServerContext* ctx, const muster::v1::DownloadRequest* request,
                  const ArtifactRpcs& rpcs)
      : ctx_(ctx), io_(rpcs.io), guard_(std::make_shared<CallGuard>(ctx)) {
    if (rpcs.artifacts == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this musterd stores no artifacts"));
      return;
    }
    auto agent = authenticateCall(ctx, rpcs.plane);
    if (!agent.ok()) {
      Finish(toGrpc(agent.status()));
      return;
    }
    if (auto st = checkSizes(request->command_id(), request->artifact_id(), request->device(), "");
        !st.ok()) {
      Finish(toGrpc(st));
      return;
    }
    auto transfer =
        rpcs.artifacts->open(model::TransferDirection::kDownload, *agent,
                             [guard = guard_](absl::Status why) { guard->cancel(std::move(why)); });
    if (!transfer.ok()) {
      Finish(toGrpc(transfer.status()));
      return;
    }
    transfer_ = *std::move(transfer);
    DownloadRequest req{.command_id = request->command_id(),
                        .artifact_id = request->artifact_id(),
                        .device = request->device(),
                        .offset = request->offset()};
    io_.post([this, req = std::move(req)] {
      auto ref = transfer_->beginDownload(req);
      if (!ref.ok()) {
        Finish(toGrpc(ref.status()));
        return;
      }
      toProto(*ref, out_.mutable_header());
      StartWrite(&out_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      io_.post([this] {
        absl::Status why;
        if (!guard_->cancelled(&why)) why = absl::CancelledError("the agent went away");
        transfer_->abort(why);
        Finish(toGrpc(why));
      });
      return;
    }
    io_.post([this] {
      absl::Status why;
      if (guard_->cancelled(&why)) {
        transfer_->abort(why);
        Finish(toGrpc(why));
        return;
      }
      std::string data;
      if (auto st = transfer_->nextChunk(&data); !st.ok()) {
        Finish(toGrpc(st));
        return;
      }
      if (data.empty()) {
        transfer_->finishDownload();
        Finish(grpc::Status::OK);
        return;
      }
      out_.Clear();
      out_.set_chunk(std::move(data));
      StartWrite(&out_);
    });
  }

  void OnDone() override {
    guard_->onDone();
    delete this;
  }

 private:
  grpc::CallbackServerContext* const ctx_;
  common::Executor& io_;
  std::shared_ptr<CallGuard> guard_;
  std::shared_ptr<Transfer> transfer_;
  muster::v1::DownloadResponse out_;
};

}  // namespace

grpc::ServerReadReactor<muster::v1::UploadRequest>* newUploadReactor(
    grpc::CallbackServerContext* ctx, muster::v1::ArtifactRef* response, const ArtifactRpcs& rpcs) {
  return new UploadReactor(ctx, response, rpcs);
}

grpc::ServerWriteReactor<muster::v1::DownloadResponse>* newDownloadReactor(
    grpc::CallbackServerContext* ctx, const muster::v1::DownloadRequest* request,
    const ArtifactRpcs& rpcs) {
  return new DownloadReactor(ctx, request, rpcs);
}

}  // namespace muster::server::grpcadapter
