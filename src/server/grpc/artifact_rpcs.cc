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

// Orders a call's Start* against its one Finish, across threads: an operation starts only
// before Finish, and a Finish asked for while another thread is starting one is issued by
// that thread once its Start* has returned. None of its lock is held across a gRPC call
// (reactions may run inline inside Start*).
class FinishGate {
 public:
  bool beginStart() {
    std::lock_guard lock(mu_);
    if (finished_) return false;
    ++starting_;
    return true;
  }
  // After the Start* returned: the status to Finish with now, if a Finish was asked for
  // meanwhile and this was the last start in progress.
  std::optional<grpc::Status> endStart() {
    std::lock_guard lock(mu_);
    --starting_;
    if (starting_ > 0 || !pending_) return std::nullopt;
    auto status = std::move(pending_);
    pending_.reset();
    return status;
  }
  // The status to Finish with now; nullopt when the call is finished already or a start in
  // progress will issue it.
  std::optional<grpc::Status> finish(grpc::Status status) {
    std::lock_guard lock(mu_);
    if (finished_) return std::nullopt;
    finished_ = true;
    if (starting_ > 0) {
      pending_ = std::move(status);
      return std::nullopt;
    }
    return status;
  }
  bool finished() {
    std::lock_guard lock(mu_);
    return finished_;
  }

 private:
  std::mutex mu_;
  bool finished_ = false;
  int starting_ = 0;
  std::optional<grpc::Status> pending_;
};

// Start* through the gate: false once the call is finished (nothing was started).
template <class Reactor, class Start>
bool startThrough(FinishGate& gate, Reactor* reactor, Start start) {
  if (!gate.beginStart()) return false;
  start();
  if (auto f = gate.endStart()) {
    reactor->Finish(*f);
    return false;
  }
  return true;
}

// Finish through the gate; from a worker task, its last use of the reactor.
template <class Reactor>
void finishThrough(FinishGate& gate, Reactor* reactor, const grpc::Status& status) {
  if (auto f = gate.finish(status)) reactor->Finish(*f);
}

// A transfer call's start: authenticated, and one of the agent's slots taken, cancellable by
// the core through `guard`.
absl::StatusOr<std::shared_ptr<Transfer>> openTransfer(grpc::CallbackServerContext* ctx,
                                                       const ArtifactRpcs& rpcs,
                                                       model::TransferDirection direction,
                                                       std::shared_ptr<CallGuard> guard) {
  if (rpcs.artifacts == nullptr)
    return absl::UnimplementedError("this musterd stores no artifacts");
  auto agent = authenticateCall(ctx, rpcs.plane);
  if (!agent.ok()) return agent.status();
  return rpcs.artifacts->open(direction, *agent, [guard = std::move(guard)](absl::Status why) {
    guard->cancel(std::move(why));
  });
}

// Upload: a chunk read from the stream is queued for the call's worker and the next read
// starts at once, up to kMaxQueued chunks waiting, so the network, the decryption and the
// disk overlap. What a worker task uses lives in State, which the tasks share: the reactor
// may be gone once Finish was called, and a task never touches it after that.
class UploadReactor final : public grpc::ServerReadReactor<muster::v1::UploadRequest> {
 public:
  UploadReactor(grpc::CallbackServerContext* ctx, muster::v1::ArtifactRef* response,
                const ArtifactRpcs& rpcs)
      : ctx_(ctx), response_(response), io_(rpcs.io), state_(std::make_shared<State>()) {
    state_->guard = std::make_shared<CallGuard>(ctx);
    auto transfer = openTransfer(ctx, rpcs, model::TransferDirection::kUpload, state_->guard);
    if (!transfer.ok()) {
      finishOnce(toGrpc(transfer.status()));
      return;
    }
    state_->transfer = *std::move(transfer);
    {
      std::lock_guard lock(state_->mu);
      state_->read_in_flight = true;
    }
    startRead();
  }

  void OnReadDone(bool ok) override {
    auto st = state_;
    if (!ok) {  // the agent sent everything (or the call was cancelled, or we finished)
      bool start_worker = false;
      {
        std::lock_guard lock(st->mu);
        st->read_in_flight = false;
        st->reads_done = true;
        start_worker = !st->worker_running && !st->gate.finished();
        if (start_worker) st->worker_running = true;
      }
      if (start_worker) io_.post([this, st] { drain(st); });
      return;
    }
    if (!header_seen_) {
      header_seen_ = true;
      absl::Status bad;
      UploadHeader header;
      if (!in_.has_header()) {
        bad = absl::InvalidArgumentError(
            "the first message of an upload must be its header (UploadHeader)");
      } else {
        const auto& h = in_.header();
        bad = checkSizes(h.command_id(), h.artifact_id(), h.device(), h.name());
        header = UploadHeader{.command_id = h.command_id(),
                              .purpose = fromProto(h.purpose()),
                              .artifact_id = h.artifact_id(),
                              .device = h.device(),
                              .name = h.name(),
                              .declared_size = h.size(),
                              .declared_sha256 = h.sha256(),
                              .resume_offset = h.resume_offset()};
      }
      {
        std::lock_guard lock(st->mu);
        st->read_in_flight = false;
        st->worker_running = true;  // the header's task: no chunk is read before it is admitted
      }
      io_.post([this, st, bad, header = std::move(header)] {
        if (!bad.ok()) {
          st->transfer->abort(bad);
          finishTask(st, toGrpc(bad));
          return;
        }
        auto offset = st->transfer->beginUpload(header);
        if (!offset.ok()) {
          finishTask(st, toGrpc(offset.status()));
          return;
        }
        bool started = startThrough(st->gate, this, [&] {
          ctx_->AddInitialMetadata("x-muster-upload-offset", absl::StrCat(*offset));
          StartSendInitialMetadata();
        });
        if (!started) return;
        {
          std::lock_guard lock(st->mu);
          st->read_in_flight = true;
        }
        if (!startRead()) return;
        drain(st);  // nothing queued yet, or what arrived meanwhile
      });
      return;
    }
    Item item;
    if (in_.has_chunk()) {
      item.data = std::move(*in_.mutable_chunk());
    } else {
      item.error = absl::InvalidArgumentError("after its header an upload sends chunks only");
    }
    bool read_more = false, start_worker = false;
    {
      std::lock_guard lock(st->mu);
      st->read_in_flight = false;
      st->queue.push_back(std::move(item));
      start_worker = !st->worker_running;
      st->worker_running = true;
      read_more = st->queue.size() < kMaxQueued && !st->reads_done;
      if (read_more) st->read_in_flight = true;
    }
    if (read_more) startRead();
    if (start_worker) io_.post([this, st] { drain(st); });
  }

  void OnDone() override {
    state_->guard->onDone();
    delete this;
  }

 private:
  static constexpr size_t kMaxQueued = 2;
  struct Item {
    std::string data;
    absl::Status error;  // not a chunk: the upload fails with this
  };
  struct State {
    FinishGate gate;
    std::shared_ptr<CallGuard> guard;
    std::shared_ptr<Transfer> transfer;  // used by one worker task at a time
    std::mutex mu;
    std::deque<Item> queue ABSL_GUARDED_BY(mu);
    bool worker_running ABSL_GUARDED_BY(mu) = false;
    bool read_in_flight ABSL_GUARDED_BY(mu) = false;
    bool reads_done ABSL_GUARDED_BY(mu) = false;
  };

  // False once the call is finished (the read was not started).
  bool startRead() {
    return startThrough(state_->gate, this, [this] { StartRead(&in_); });
  }
  void finishOnce(const grpc::Status& status) { finishThrough(state_->gate, this, status); }
  void finishTask(const std::shared_ptr<State>& st, const grpc::Status& status) {
    finishThrough(st->gate, this, status);
  }

  // The call's worker (one task at a time: worker_running). Writes queued chunks, restarts
  // the reads the queue held back, and completes the upload once every read is done and the
  // queue is empty. After Finish it touches only `st`.
  void drain(std::shared_ptr<State> st) {
    while (true) {
      Item item;
      bool read_more = false, all_read = false;
      {
        std::lock_guard lock(st->mu);
        if (st->gate.finished()) {
          st->worker_running = false;
          return;
        }
        if (st->queue.empty()) {
          if (!st->reads_done) {
            st->worker_running = false;  // the read in flight brings more
            return;
          }
          all_read = true;
        } else {
          item = std::move(st->queue.front());
          st->queue.pop_front();
          read_more = !st->read_in_flight && !st->reads_done && st->queue.size() < kMaxQueued;
          if (read_more) st->read_in_flight = true;
        }
      }
      if (all_read) {
        complete(st);
        return;
      }
      if (read_more && !startRead()) return;
      absl::Status result = item.error.ok() ? st->transfer->chunk(item.data) : item.error;
      if (!result.ok()) {
        st->transfer->abort(result);
        finishTask(st, toGrpc(result));
        return;
      }
    }
  }

  void complete(const std::shared_ptr<State>& st) {
    absl::Status why;
    if (st->guard->cancelled(&why) || ctx_->IsCancelled()) {
      if (why.ok()) why = absl::CancelledError("the agent cancelled the upload");
      st->transfer->abort(why);
      finishTask(st, toGrpc(why));
      return;
    }
    if (!header_seen_) {
      absl::Status bad = absl::InvalidArgumentError("an upload without a header");
      st->transfer->abort(bad);
      finishTask(st, toGrpc(bad));
      return;
    }
    auto stored = st->transfer->finishUpload();
    if (!stored.ok()) {
      finishTask(st, toGrpc(stored.status()));
      return;
    }
    toProto(*stored, response_);
    finishTask(st, grpc::Status::OK);
  }

  grpc::CallbackServerContext* const ctx_;
  muster::v1::ArtifactRef* const response_;
  common::Executor& io_;
  std::shared_ptr<State> state_;
  muster::v1::UploadRequest in_;
  bool header_seen_ = false;  // reaction threads, and the tasks they post (reads are serial)
};

// Download: the worker reads one chunk ahead of the write in flight. As above, tasks share
// State and never touch the reactor after Finish.
class DownloadReactor final : public grpc::ServerWriteReactor<muster::v1::DownloadResponse> {
 public:
  DownloadReactor(grpc::CallbackServerContext* ctx, const muster::v1::DownloadRequest* request,
                  const ArtifactRpcs& rpcs)
      : io_(rpcs.io), state_(std::make_shared<State>()) {
    state_->guard = std::make_shared<CallGuard>(ctx);
    if (auto st = checkSizes(request->command_id(), request->artifact_id(), request->device(), "");
        !st.ok()) {
      finishOnce(toGrpc(st));
      return;
    }
    auto transfer = openTransfer(ctx, rpcs, model::TransferDirection::kDownload, state_->guard);
    if (!transfer.ok()) {
      finishOnce(toGrpc(transfer.status()));
      return;
    }
    state_->transfer = *std::move(transfer);
    DownloadRequest req{.command_id = request->command_id(),
                        .artifact_id = request->artifact_id(),
                        .device = request->device(),
                        .offset = request->offset()};
    {
      std::lock_guard lock(state_->mu);
      state_->reading = true;
    }
    io_.post([this, st = state_, req = std::move(req)] {
      auto ref = st->transfer->beginDownload(req);
      if (!ref.ok()) {
        finishTask(st, toGrpc(ref.status()));
        return;
      }
      {
        std::lock_guard lock(st->mu);
        toProto(*ref, out_.mutable_header());
        st->write_in_flight = true;
      }
      if (!startWrite(st)) return;
      prefetch(st);
    });
  }

  void OnWriteDone(bool ok) override {
    auto st = state_;
    bool post = false, write_next = false;
    {
      std::lock_guard lock(st->mu);
      st->write_in_flight = false;
      if (!ok) st->write_failed = true;
      if (ok && st->ready) {
        takeReadyLocked(*st);
        write_next = true;
      }
      post = !st->reading;  // the worker reads on, or ends the call
      if (post) st->reading = true;
    }
    if (write_next && !startWrite(st)) return;
    if (post) io_.post([this, st] { prefetch(st); });
  }

  void OnDone() override {
    state_->guard->onDone();
    delete this;
  }

 private:
  struct State {
    FinishGate gate;
    std::shared_ptr<CallGuard> guard;
    std::shared_ptr<Transfer> transfer;  // used by the worker only
    std::mutex mu;
    std::optional<std::string> ready ABSL_GUARDED_BY(mu);  // read ahead, not yet written
    bool write_in_flight ABSL_GUARDED_BY(mu) = false;
    bool write_failed ABSL_GUARDED_BY(mu) = false;
    bool reading ABSL_GUARDED_BY(mu) = false;  // the worker runs
    bool eof ABSL_GUARDED_BY(mu) = false;
  };

  // Moves the read-ahead chunk into the message to write; only while no write is in flight.
  void takeReadyLocked(State& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
    out_.Clear();
    out_.set_chunk(std::move(*st.ready));
    st.ready.reset();
    st.write_in_flight = true;
  }
  // False once the call is finished (the write was not started).
  bool startWrite(const std::shared_ptr<State>& st) {
    return startThrough(st->gate, this, [this] { StartWrite(&out_); });
  }
  void finishOnce(const grpc::Status& status) { finishThrough(state_->gate, this, status); }
  void finishTask(const std::shared_ptr<State>& st, const grpc::Status& status) {
    finishThrough(st->gate, this, status);
  }

  // The worker (one task at a time: reading): keeps one chunk read ahead of the write in
  // flight and ends the call at the end of the artifact or on a failure. Goes idle while a
  // chunk waits for the write in flight; OnWriteDone starts it again.
  void prefetch(std::shared_ptr<State> st) {
    enum class Step { kRead, kWrite, kFinish, kFail };
    while (true) {
      Step step;
      {
        std::lock_guard lock(st->mu);
        if (st->gate.finished()) {
          st->reading = false;
          return;
        }
        if (st->write_failed) {
          step = Step::kFail;
        } else if (st->ready && !st->write_in_flight) {
          takeReadyLocked(*st);
          step = Step::kWrite;
        } else if (st->ready || (st->eof && st->write_in_flight)) {
          st->reading = false;
          return;
        } else {
          step = st->eof ? Step::kFinish : Step::kRead;
        }
      }
      absl::Status why;
      if (step == Step::kFail || st->guard->cancelled(&why)) {
        if (why.ok()) why = absl::CancelledError("the agent went away");
        st->transfer->abort(why);
        finishTask(st, toGrpc(why));
        return;
      }
      if (step == Step::kFinish) {
        st->transfer->finishDownload();
        finishTask(st, grpc::Status::OK);
        return;
      }
      if (step == Step::kWrite) {
        if (!startWrite(st)) return;
        continue;
      }
      std::string data;
      if (auto read = st->transfer->nextChunk(&data); !read.ok()) {
        finishTask(st, toGrpc(read));
        return;
      }
      std::lock_guard lock(st->mu);
      if (data.empty()) {
        st->eof = true;
      } else {
        st->ready = std::move(data);
      }
    }
  }

  common::Executor& io_;
  std::shared_ptr<State> state_;
  muster::v1::DownloadResponse out_;  // the message being written (guarded by State::mu)
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
