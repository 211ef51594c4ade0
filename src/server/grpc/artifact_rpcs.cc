// The artifact calls' reactors.
#include "server/grpc/artifact_rpcs.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
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
    if (!ok) {  // the agent sent everything (or the call was cancelled, or we finished)
      bool start_worker = false;
      {
        std::lock_guard lock(mu_);
        read_in_flight_ = false;
        reads_done_ = true;
        start_worker = !worker_running_ && !finished_;
        if (start_worker) worker_running_ = true;
      }
      if (start_worker) io_.post([this] { drain(); });
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
      {
        std::lock_guard lock(mu_);
        worker_running_ = true;  // the header's task: no chunk is read before it is admitted
      }
      io_.post([this, header = std::move(header)] {
        auto offset = transfer_->beginUpload(header);
        if (!offset.ok()) {
          finishOnce(toGrpc(offset.status()));
          return;
        }
        ctx_->AddInitialMetadata("x-muster-upload-offset", absl::StrCat(*offset));
        StartSendInitialMetadata();
        {
          std::lock_guard lock(mu_);
          read_in_flight_ = true;
        }
        StartRead(&in_);
        drain();  // nothing queued yet: marks the worker idle
      });
      return;
    }
    // A chunk (or a message that is not one) joins the queue of the transfer's worker; the
    // next read starts at once unless two chunks already wait, so the network, the
    // decryption and the disk overlap instead of taking turns.
    Item item;
    if (in_.has_chunk()) {
      item.data = std::move(*in_.mutable_chunk());
    } else {
      item.error = absl::InvalidArgumentError("after its header an upload sends chunks only");
    }
    bool read_more = false, start_worker = false;
    {
      std::lock_guard lock(mu_);
      read_in_flight_ = false;
      queue_.push_back(std::move(item));
      start_worker = !worker_running_;
      worker_running_ = true;
      read_more = queue_.size() < kMaxQueued && !finished_ && !reads_done_;
      if (read_more) read_in_flight_ = true;
    }
    if (read_more) StartRead(&in_);
    if (start_worker) io_.post([this] { drain(); });
  }

  void OnDone() override {
    guard_->onDone();
    delete this;
  }

 private:
  static constexpr size_t kMaxQueued = 2;
  struct Item {
    std::string data;
    absl::Status error;  // not a chunk: the upload fails with this
  };

  // Before any worker task exists (the first message): on the reaction's thread.
  void fail(const absl::Status& st) {
    transfer_->abort(st);
    finishOnce(toGrpc(st));
  }

  // Finish exactly once, from whichever path ends the call first; a read still in flight
  // then completes with !ok.
  void finishOnce(const grpc::Status& status) {
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  // The transfer's worker: one at a time per call (worker_running_), so the Transfer is
  // only ever used from here. Writes queued chunks, restarts reads the queue held back, and
  // completes the upload once the reads are done and the queue is empty.
  void drain() {
    while (true) {
      Item item;
      bool read_more = false, all_read = false;
      {
        std::lock_guard lock(mu_);
        if (finished_) {
          worker_running_ = false;
          return;
        }
        if (queue_.empty()) {
          if (!reads_done_) {
            worker_running_ = false;  // the read in flight brings more
            return;
          }
          all_read = true;
        } else {
          item = std::move(queue_.front());
          queue_.pop_front();
          read_more = !read_in_flight_ && !reads_done_ && queue_.size() < kMaxQueued;
          if (read_more) read_in_flight_ = true;
        }
      }
      if (read_more) StartRead(&in_);
      if (all_read) {
        complete();
        std::lock_guard lock(mu_);
        worker_running_ = false;
        return;
      }
      absl::Status st = item.error.ok() ? transfer_->chunk(item.data) : item.error;
      if (!st.ok()) {
        transfer_->abort(st);
        finishOnce(toGrpc(st));
      }
    }
  }

  void complete() {
    absl::Status why;
    if (guard_->cancelled(&why) || ctx_->IsCancelled()) {
      if (why.ok()) why = absl::CancelledError("the agent cancelled the upload");
      transfer_->abort(why);
      finishOnce(toGrpc(why));
      return;
    }
    if (!header_seen_) {
      fail(absl::InvalidArgumentError("an upload without a header"));
      return;
    }
    auto stored = transfer_->finishUpload();
    if (!stored.ok()) {
      finishOnce(toGrpc(stored.status()));
      return;
    }
    toProto(*stored, response_);
    finishOnce(grpc::Status::OK);
  }

  grpc::CallbackServerContext* const ctx_;
  muster::v1::ArtifactRef* const response_;
  common::Executor& io_;
  std::shared_ptr<CallGuard> guard_;
  std::shared_ptr<Transfer> transfer_;
  muster::v1::UploadRequest in_;
  bool header_seen_ = false;  // reaction threads only (reads are one at a time)
  std::mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool worker_running_ ABSL_GUARDED_BY(mu_) = false;
  bool read_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
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
      {
        std::lock_guard lock(mu_);
        write_in_flight_ = true;
        reading_ = true;
      }
      StartWrite(&out_);
      prefetch();
    });
  }

  // The next chunk is read from disk while the one before it is being sent.
  void OnWriteDone(bool ok) override {
    bool post = false, write_next = false;
    {
      std::lock_guard lock(mu_);
      write_in_flight_ = false;
      if (!ok) write_failed_ = true;
      if (ok && ready_) {
        takeReadyLocked();
        write_next = true;
      }
      post = !reading_;  // the worker reads on, or ends the call
      if (post) reading_ = true;
    }
    if (write_next) StartWrite(&out_);
    if (post) io_.post([this] { prefetch(); });
  }

  void OnDone() override {
    guard_->onDone();
    delete this;
  }

 private:
  // Moves the prefetched chunk into the message to write. Only while no write is in flight.
  void takeReadyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_.Clear();
    out_.set_chunk(std::move(*ready_));
    ready_.reset();
    write_in_flight_ = true;
  }

  // The worker (one at a time: reading_): keeps one chunk read ahead of the write in flight,
  // and ends the call at the end of the artifact or on a failure. The Transfer is only ever
  // used from here. Goes idle while a chunk waits for the write in flight; OnWriteDone
  // starts it again.
  void prefetch() {
    enum class Step { kRead, kWrite, kFinish, kFail };
    while (true) {
      Step step;
      {
        std::lock_guard lock(mu_);
        if (write_failed_) {
          step = Step::kFail;
        } else if (ready_ && !write_in_flight_) {
          takeReadyLocked();
          step = Step::kWrite;
        } else if (ready_ || (eof_ && write_in_flight_)) {
          reading_ = false;
          return;
        } else {
          step = eof_ ? Step::kFinish : Step::kRead;
        }
      }
      absl::Status why;
      if (step == Step::kFail || guard_->cancelled(&why)) {
        if (why.ok()) why = absl::CancelledError("the agent went away");
        transfer_->abort(why);
        finishOnce(toGrpc(why));
        return;
      }
      if (step == Step::kFinish) {
        transfer_->finishDownload();
        finishOnce(grpc::Status::OK);
        return;
      }
      if (step == Step::kWrite) {
        StartWrite(&out_);
        continue;
      }
      std::string data;
      if (auto st = transfer_->nextChunk(&data); !st.ok()) {
        finishOnce(toGrpc(st));
        return;
      }
      std::lock_guard lock(mu_);
      if (data.empty()) {
        eof_ = true;
      } else {
        ready_ = std::move(data);
      }
    }
  }

  void finishOnce(const grpc::Status& status) {
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  grpc::CallbackServerContext* const ctx_;
  common::Executor& io_;
  std::shared_ptr<CallGuard> guard_;
  std::shared_ptr<Transfer> transfer_;
  muster::v1::DownloadResponse out_;  // the message being written
  std::mutex mu_;
  std::optional<std::string> ready_ ABSL_GUARDED_BY(mu_);  // read ahead, not yet written
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // the worker runs
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
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
