// CommandService: runs too large for one transaction, stored and sent slice by slice; the
// retry of a slice that failed to store; completing at start a run a crash interrupted.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "server/core/command_service.h"

namespace muster::server {

struct CommandService::SlicedRun {
  std::string run_id;
  std::vector<model::Command> commands;  // every command of the run, in slice order; const
  size_t slice = 1;
  std::mutex mu;
  std::condition_variable cv;
  size_t stored = 0;                 // commands committed so far (slices commit in order)
  size_t deliveries = 0;             // delivery tasks posted and not finished
  bool settled = false;              // every slice committed, a slice failed, or stopped
  bool retrying = false;             // tick() is storing the rest after a failure
  bool cancelled = false;            // the operator cancelled the run: no more slices
  bool run_exists = false;           // completing a run stored before (at start, after a crash)
  int64_t next_retry_steady_ms = 0;  // after a failure, tick() retries from then on
  absl::Status status;               // the failure, if any
};

absl::Status CommandService::createInSlices(store::InsertRun insert,
                                            std::vector<std::string> targets,
                                            CreateRunResult& result) {
  auto job = std::make_shared<SlicedRun>();
  job->run_id = insert.run.id;
  job->slice = std::max<size_t>(config_.run_slice_commands, 1);
  job->commands = std::move(insert.commands);
  {
    std::lock_guard lock(sliced_mu_);
    sliced_[job->run_id] = job;
  }
  // The run row lists every target until the last slice commits.
  insert.run.pending_targets = std::move(targets);
  const size_t end = std::min(job->slice, job->commands.size());
  insert.commands.assign(job->commands.begin(), job->commands.begin() + end);
  store_.write(std::move(insert),
               [this, job, end](store::WriteResult r) { onSliceStored(job, 0, end, r); });
  std::unique_lock lock(job->mu);
  job->cv.wait(lock, [&] { return job->settled && job->deliveries == 0; });
  if (!job->status.ok() && job->stored == 0) return job->status;  // nothing stored
  if (!job->status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "run ", job->run_id, " was stored and sent for ", job->stored, " of ", job->commands.size(),
        " hosts when the store failed (", job->status.message(),
        "); the rest are stored and sent as soon as the store recovers (retried every "
        "second, and at the next start): do not submit the run again; GET /api/v1/runs/",
        job->run_id, " shows its progress"));
  }
  // Complete, or cancelled part-way (then only what was stored exists).
  result.commands.assign(job->commands.begin(), job->commands.begin() + job->stored);
  return absl::OkStatus();
}

void CommandService::storeSlice(const std::shared_ptr<SlicedRun>& job, size_t begin) {
  {
    // Queued under the job's lock, so a cancel is ordered against it: a slice queued
    // before the cancel is stored (and cancelled with the run), none after it.
    std::lock_guard lock(job->mu);
    if (!job->cancelled && !slicing_stopped_) {
      const size_t end = std::min(begin + job->slice, job->commands.size());
      store::InsertCommands next;
      next.run_id = job->run_id;
      next.commands.assign(job->commands.begin() + begin, job->commands.begin() + end);
      next.completes_run = end == job->commands.size();
      store_.write(std::move(next), [this, job, begin, end](store::WriteResult r) {
        onSliceStored(job, begin, end, r);
      });
      return;
    }
    job->settled = true;
    job->retrying = false;
    if (!job->cancelled && job->status.ok()) {
      job->status = absl::UnavailableError("the server is shutting down");
    }
  }
  job->cv.notify_all();
  if (job->cancelled) forgetSliced(job->run_id);
}

void CommandService::forgetSliced(const std::string& run_id) {
  std::lock_guard lock(sliced_mu_);
  sliced_.erase(run_id);
}

void CommandService::onSliceStored(const std::shared_ptr<SlicedRun>& job, size_t begin, size_t end,
                                   const store::WriteResult& written) {
  if (!written.status.ok()) {
    spdlog::error("run {}: cannot store commands {}-{} of {}{}: {}", job->run_id, begin, end,
                  job->commands.size(), begin > 0 ? " (retried every second)" : "",
                  written.status.message());
    {
      std::lock_guard lock(job->mu);
      job->status = written.status;
      job->settled = true;
      job->retrying = false;
      job->next_retry_steady_ms = clock_.steadyMs() + 1000;
    }
    job->cv.notify_all();
    // Nothing stored of a new run: it does not exist, and the caller gets the error.
    if (begin == 0 && !job->run_exists) forgetSliced(job->run_id);
    return;
  }
  // Durable now; only then does anything reach an agent.
  open_.add(job->commands.data() + begin, job->commands.data() + end);
  metrics_.commands_created.fetch_add(end - begin);
  constexpr size_t kChunk = 256;
  const model::Command* base = job->commands.data();
  for (size_t first = begin; first < end; first += kChunk) {
    const size_t last = std::min(end, first + kChunk);
    if (fanout_ == nullptr) {
      deliverRange(base + first, base + last);
      continue;
    }
    {
      std::lock_guard lock(job->mu);
      ++job->deliveries;
    }
    fanout_->post([this, job, base, first, last] {
      deliverRange(base + first, base + last);
      std::lock_guard lock(job->mu);
      if (--job->deliveries == 0) job->cv.notify_all();
    });
  }
  const bool last_slice = end == job->commands.size();
  bool was_retry = false;
  {
    std::lock_guard lock(job->mu);
    job->stored = end;
    if (last_slice) {
      was_retry = !job->status.ok();
      job->status = absl::OkStatus();
      job->settled = true;
      job->retrying = false;
    }
  }
  if (!last_slice) {
    storeSlice(job, end);
    return;
  }
  job->cv.notify_all();
  forgetSliced(job->run_id);
  if (was_retry) spdlog::info("run {}: the remaining commands are stored and sent", job->run_id);
}

void CommandService::stopSlicesOfCancelledRun(const std::string& run_id) {
  std::shared_ptr<SlicedRun> job;
  {
    std::lock_guard lock(sliced_mu_);
    auto it = sliced_.find(run_id);
    if (it == sliced_.end()) return;
    job = it->second;
  }
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;
  absl::Status cleared;
  {
    std::lock_guard lock(job->mu);
    job->cancelled = true;
    // Slices queued before this are committed before it (the writer is FIFO), so when it
    // returns they are open and the caller cancels them with the rest.
    store_.write(store::InsertCommands{run_id, {}, true}, [&](store::WriteResult r) {
      std::lock_guard done_lock(done_mu);
      cleared = r.status;
      done = true;
      done_cv.notify_all();
    });
  }
  {
    std::unique_lock lock(done_mu);
    done_cv.wait(lock, [&] { return done; });
  }
  if (!cleared.ok()) {
    spdlog::error("run {}: cancelled, but its pending targets could not be cleared: {}", run_id,
                  cleared.message());
  }
  bool idle;
  {
    std::lock_guard lock(job->mu);
    idle = job->settled;  // failed earlier: no chain left to stop it
  }
  if (idle) forgetSliced(run_id);
}

void CommandService::retryFailedSlices() {
  std::vector<std::pair<std::shared_ptr<SlicedRun>, size_t>> retry;
  {
    const int64_t steady = clock_.steadyMs();
    std::lock_guard lock(sliced_mu_);
    for (const auto& [run_id, job] : sliced_) {
      std::lock_guard job_lock(job->mu);
      // Only runs whose slice failed, once a second.
      if (job->status.ok() || !job->settled || job->cancelled ||
          (job->stored == 0 && !job->run_exists) || steady < job->next_retry_steady_ms) {
        continue;
      }
      job->retrying = true;
      job->settled = false;
      retry.emplace_back(job, job->stored);
    }
  }
  for (auto& [job, from] : retry) storeSlice(job, from);
}

void CommandService::completeInterruptedRuns() {
  auto runs = store_.loadIncompleteRuns();
  if (!runs.ok()) {
    spdlog::error("cannot look for runs interrupted while being stored: {}",
                  runs.status().message());
    return;
  }
  for (const store::Run& run : *runs) {
    auto have = store_.runHostIds(run.id);
    store::CommandFilter filter;
    filter.run_id = run.id;
    filter.limit = 1;
    auto sample = store_.listCommands(filter);
    if (!have.ok() || !sample.ok()) {
      spdlog::error("run {}: cannot read it to complete it: {}", run.id,
                    (have.ok() ? sample.status() : have.status()).message());
      continue;
    }
    store::InsertCommands rest;
    rest.run_id = run.id;
    rest.completes_run = true;
    if (!sample->empty()) {
      // Every command of a run shares the spec, author and deadlines of the first.
      const model::Command& like = sample->front();
      std::set<std::string> stored(have->begin(), have->end());
      auto statuses = hosts_.statuses(run.pending_targets);
      for (size_t i = 0; i < run.pending_targets.size(); ++i) {
        const std::string& host = run.pending_targets[i];
        if (stored.count(host)) continue;
        // Decommissioned (or gone) since: it gets no command.
        if (!statuses[i] || *statuses[i] == model::HostStatus::kRevoked) continue;
        model::Command c;
        c.id = common::newUlid(clock_.nowMs());
        c.run_id = run.id;
        c.host_id = host;
        c.exec = like.exec;
        c.idempotency_key = like.idempotency_key;
        c.created_by = like.created_by;
        c.created_at_ms = like.created_at_ms;
        c.expires_at_ms = like.expires_at_ms;
        rest.commands.push_back(std::move(c));
      }
    }
    const size_t n = rest.commands.size();
    std::vector<model::Command> missing = rest.commands;
    auto written = store_.writeAndWait(std::move(rest));
    if (!written.status.ok()) {
      spdlog::error("run {}: cannot store the commands a crash left out (retried every second): {}",
                    run.id, written.status.message());
      // tick() stores them in slices, as for a slice that failed while the server ran.
      auto job = std::make_shared<SlicedRun>();
      job->run_id = run.id;
      job->commands = std::move(missing);
      job->slice = std::max<size_t>(config_.run_slice_commands, 1);
      job->run_exists = true;
      job->settled = true;
      job->status = written.status;
      job->next_retry_steady_ms = clock_.steadyMs() + 1000;
      std::lock_guard lock(sliced_mu_);
      sliced_[run.id] = std::move(job);
      continue;
    }
    spdlog::warn(
        "run {}: was interrupted while being stored; stored the commands of its {} "
        "remaining host(s)",
        run.id, n);
  }
}

}  // namespace muster::server
