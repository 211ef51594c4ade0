// CommandService: the command lifecycle.
#include "server/core/command_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/ids.h"
#include "crypto/secrets.h"
#include "model/selector.h"

namespace muster::server {
namespace {
using model::CommandState;

const std::vector<CommandState> kOpenStates = {CommandState::kQueued, CommandState::kDispatched,
                                               CommandState::kRunning};

std::string fingerprintOf(const CreateRunRequest& r) {
  std::vector<std::string> hosts = r.host_ids;
  std::sort(hosts.begin(), hosts.end());
  std::string canon;
  auto add = [&canon](absl::string_view s) { absl::StrAppend(&canon, s.size(), ":", s, ";"); };
  for (const auto& h : hosts) add(h);
  add("|");
  for (const auto& a : r.exec.argv) add(a);
  add(r.exec.script);
  for (const auto& [k, v] : r.exec.env) {
    add(k);
    add(v);
  }
  add(r.exec.cwd);
  add(absl::StrCat(r.exec.timeout_ms, ",", r.exec.kill_grace_ms, ",", r.expire_in_ms));
  return crypto::sha256Hex(canon);
}
}  // namespace

CommandService::CommandService(store::Store& store, HostRegistry& hosts, OutputBus& bus,
                               common::Executor& slow_path, const common::Clock& clock,
                               const CoreConfig& config)
    : store_(store),
      hosts_(hosts),
      bus_(bus),
      slow_path_(slow_path),
      clock_(clock),
      config_(config) {}

absl::Status CommandService::load() {
  completeInterruptedRuns();
  auto open = store_.loadOpenCommands();
  if (!open.ok()) return open.status();
  std::lock_guard lock(mu_);
  for (auto& c : *open) addOpenLocked(std::move(c));
  spdlog::info("{} open commands loaded", open->size());
  return absl::OkStatus();
}

void CommandService::addOpenLocked(model::Command command) {
  open_by_host_[command.host_id].insert(command.id);
  std::string id = command.id;
  open_[id] = Open{std::move(command), 0};
}

void CommandService::removeOpenLocked(const std::string& id) {
  auto it = open_.find(id);
  if (it == open_.end()) return;
  removeOpenLocked(it, it->second.command.host_id);
}

void CommandService::removeOpenLocked(OpenMap::iterator it, const std::string& host_id) {
  auto hit = open_by_host_.find(host_id);
  if (hit != open_by_host_.end()) {
    hit->second.erase(it->first);
    if (hit->second.empty()) open_by_host_.erase(hit);
  }
  open_.erase(it);
}

size_t CommandService::openCount() const {
  std::lock_guard lock(mu_);
  return open_.size();
}

namespace {
absl::Status selectorError(const std::string& message) {
  absl::Status st = absl::InvalidArgumentError(message);
  st.SetPayload(kInvalidSelectorPayload, absl::Cord(message));
  return st;
}
}  // namespace

absl::Status CommandService::resolveTargets(CreateRunRequest& r) const {
  if (!r.selector.empty() && !r.host_ids.empty()) {
    return absl::InvalidArgumentError("give target hosts or a selector, not both");
  }
  if (r.selector.empty()) return absl::OkStatus();
  std::string error;
  auto selector = model::Selector::parse(r.selector, &error);
  if (!selector) return selectorError(error);
  r.host_ids = hosts_.selectTargetIds(*selector);
  if (r.host_ids.empty()) {
    return selectorError(absl::StrCat("selector '", r.selector,
                                      "' matches no enrolled host: `muster hosts -l '", r.selector,
                                      "'` shows what it matches"));
  }
  return absl::OkStatus();
}

absl::Status CommandService::validate(const CreateRunRequest& r) const {
  if (r.host_ids.empty()) {
    return absl::InvalidArgumentError("no target hosts: name host ids or give a selector");
  }
  if (static_cast<int>(r.host_ids.size()) > config_.max_hosts_per_run) {
    return absl::InvalidArgumentError(absl::StrCat("too many targets (", r.host_ids.size(),
                                                   "): at most ", config_.max_hosts_per_run,
                                                   " hosts per run"));
  }
  for (const auto& id : r.host_ids) {
    if (!common::isValidAgentId(id)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid host id '", id.substr(0, 140),
                                                     "': ids match [A-Za-z0-9._-]{1,128}"));
    }
  }
  auto statuses = hosts_.statuses(r.host_ids);
  for (size_t i = 0; i < r.host_ids.size(); ++i) {
    const std::string& id = r.host_ids[i];
    if (!statuses[i]) {
      return absl::NotFoundError(
          absl::StrCat("unknown host '", id, "': `muster hosts` lists the enrolled hosts"));
    }
    if (*statuses[i] == model::HostStatus::kRevoked) {
      return absl::FailedPreconditionError(absl::StrCat(
          "host '", id, "' was decommissioned: re-enroll it before running commands on it"));
    }
  }
  if (r.exec.argv.empty() && r.exec.script.empty()) {
    return absl::InvalidArgumentError("nothing to run: give argv or a script");
  }
  if (!r.exec.argv.empty() && r.exec.argv[0].empty()) {
    return absl::InvalidArgumentError("argv[0] is empty: name the program to run");
  }
  for (const auto& [k, v] : r.exec.env) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid environment variable name '", k, "'"));
    }
  }
  if (r.exec.timeout_ms < 0 || r.exec.kill_grace_ms < 0 || r.expire_in_ms < 0) {
    return absl::InvalidArgumentError("timeout, kill grace and expiry must not be negative");
  }
  if (r.idempotency_key.size() > 200) {
    return absl::InvalidArgumentError("idempotency key too long: at most 200 bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<CreateRunResult> CommandService::replay(const store::Run& run,
                                                       const std::string& fingerprint) {
  if (run.request_fingerprint != fingerprint) {
    return absl::AlreadyExistsError(absl::StrCat("idempotency key '", run.idempotency_key,
                                                 "' was already used for run ", run.id,
                                                 " with a different request: use a new key"));
  }
  if (!run.pending_targets.empty()) {
    auto have = store_.runHostIds(run.id);
    return absl::UnavailableError(absl::StrCat(
        "run ", run.id, " (idempotency key '", run.idempotency_key, "') is stored for ",
        have.ok() ? absl::StrCat(have->size()) : std::string("some"), " of ",
        run.pending_targets.size(),
        " hosts so far: it is still being stored, or the store failed and the server stores "
        "the rest when it recovers; do not submit it again: GET /api/v1/runs/",
        run.id, " shows its progress"));
  }
  store::CommandFilter filter;
  filter.run_id = run.id;
  filter.limit = 1000;
  CreateRunResult result{run.id, {}, true};
  while (true) {
    auto page = store_.listCommands(filter);
    if (!page.ok()) return page.status();
    for (auto& c : *page) result.commands.push_back(std::move(c));
    if (static_cast<int>(page->size()) < filter.limit) break;
    filter.before_id = result.commands.back().id;
  }
  std::reverse(result.commands.begin(), result.commands.end());
  return result;
}

absl::StatusOr<CreateRunResult> CommandService::createRun(CreateRunRequest request) {
  const int64_t t_begin = clock_.steadyMs();
  if (auto st = resolveTargets(request); !st.ok()) return st;
  std::sort(request.host_ids.begin(), request.host_ids.end());
  request.host_ids.erase(std::unique(request.host_ids.begin(), request.host_ids.end()),
                         request.host_ids.end());
  if (auto st = validate(request); !st.ok()) return st;
  std::string fingerprint = fingerprintOf(request);
  if (!request.idempotency_key.empty()) {
    auto existing = store_.findRunByIdempotencyKey(request.idempotency_key);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) return replay(**existing, fingerprint);
  }

  int64_t now = clock_.nowMs();
  store::InsertRun insert;
  insert.run = store::Run{
      common::newUlid(now), request.idempotency_key, fingerprint, request.created_by, now, {}};
  model::ExecSpec exec = request.exec;
  if (exec.timeout_ms == 0) exec.timeout_ms = config_.default_timeout_ms;
  if (exec.kill_grace_ms == 0) exec.kill_grace_ms = config_.default_kill_grace_ms;
  int64_t expire_in = request.expire_in_ms > 0 ? request.expire_in_ms : config_.default_expiry_ms;
  for (const auto& host : request.host_ids) {
    model::Command c;
    c.id = common::newUlid(now);
    c.run_id = insert.run.id;
    c.host_id = host;
    c.exec = exec;
    c.idempotency_key = request.idempotency_key;
    c.created_by = request.created_by;
    c.created_at_ms = now;
    c.expires_at_ms = now + expire_in;
    insert.commands.push_back(std::move(c));
  }
  CreateRunResult result{insert.run.id, {}, false};
  const int64_t t_prepared = clock_.steadyMs();
  int64_t t_stored = 0;
  absl::Status written;
  const bool sliced = insert.commands.size() > std::max<size_t>(config_.run_slice_commands, 1);
  if (sliced) {
    // Stored and sent in slices, each delivered as soon as it is committed.
    written = createInSlices(std::move(insert), request.host_ids, result);
  } else {
    result.commands = insert.commands;
    written = store_.writeAndWait(std::move(insert)).status;
    if (written.ok()) {
      // Durable now; only then does anything reach an agent.
      t_stored = clock_.steadyMs();
      {
        std::lock_guard lock(mu_);
        for (const auto& c : result.commands) addOpenLocked(c);
      }
      metrics_.commands_created.fetch_add(result.commands.size());
      deliverAll(result.commands);
    }
  }
  if (absl::IsAlreadyExists(written) && !request.idempotency_key.empty()) {
    auto existing = store_.findRunByIdempotencyKey(request.idempotency_key);
    if (existing.ok() && existing->has_value()) return replay(**existing, fingerprint);
  }
  if (!written.ok()) return written;
  const int64_t t_delivered = clock_.steadyMs();
  {
    std::lock_guard lock(mu_);
    for (auto& c : result.commands) {
      auto it = open_.find(c.id);
      if (it != open_.end()) c = it->second.command;
    }
  }
  if (sliced) {
    spdlog::info(
        "run {}: {} command(s) created by {} (validate {} ms, stored and sent in slices of {} in "
        "{} ms)",
        result.run_id, result.commands.size(), request.created_by, t_prepared - t_begin,
        config_.run_slice_commands, t_delivered - t_prepared);
  } else {
    spdlog::info("run {}: {} command(s) created by {} (validate {} ms, store {} ms, deliver {} ms)",
                 result.run_id, result.commands.size(), request.created_by, t_prepared - t_begin,
                 t_stored - t_prepared, t_delivered - t_stored);
  }
  return result;
}

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
  {
    std::lock_guard lock(mu_);
    for (size_t i = begin; i < end; ++i) addOpenLocked(job->commands[i]);
  }
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

void CommandService::deliverRange(const model::Command* first, const model::Command* last) {
  // One registry lock and one command lock per slice, then the sends outside both.
  int64_t now = clock_.nowMs();
  auto sessions = hosts_.sessionsFor(first, last);
  std::vector<std::pair<Session*, ServerEvent>> events;
  std::vector<std::string> dispatched;
  {
    std::lock_guard lock(mu_);
    for (const model::Command* c = first; c != last; ++c) {
      Session* session = sessions[c - first].get();
      if (session == nullptr) continue;
      auto it = open_.find(c->id);
      if (it == open_.end()) continue;  // finished or cancelled meanwhile
      if (pastDeadline(it->second.command, now)) continue;
      events.emplace_back(session, eventForLocked(it->second.command, now, &dispatched));
    }
  }
  for (auto& [session, event] : events) session->send(std::move(event));
  markDispatched(std::move(dispatched), now);
}

void CommandService::deliverAll(const std::vector<model::Command>& commands) {
  constexpr size_t kChunk = 256;
  const model::Command* base = commands.data();
  if (!fanout_ || commands.size() <= kChunk) {
    deliverRange(base, base + commands.size());
    return;
  }
  // Split across the fanout workers; wait, so the reply shows the dispatched states.
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = (commands.size() + kChunk - 1) / kChunk;
  for (size_t begin = 0; begin < commands.size(); begin += kChunk) {
    size_t end = std::min(commands.size(), begin + kChunk);
    fanout_->post([&, begin, end] {
      deliverRange(base + begin, base + end);
      std::lock_guard lock(mu);
      if (--pending == 0) cv.notify_one();
    });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return pending == 0; });
}

ServerEvent CommandService::eventForLocked(model::Command& c, int64_t now,
                                           std::vector<std::string>* dispatched) {
  if (c.cancel_requested) return CancelMsg{c.id, "cancelled by an operator"};
  if (c.state == CommandState::kQueued) {
    c.state = CommandState::kDispatched;
    c.dispatched_at_ms = now;
    dispatched->push_back(c.id);
  }
  return DispatchMsg{c};
}

void CommandService::deliver(const std::shared_ptr<Session>& session,
                             const std::vector<std::string>& ids) {
  int64_t now = clock_.nowMs();
  std::vector<ServerEvent> events;
  std::vector<std::string> dispatched;
  {
    std::lock_guard lock(mu_);
    for (const auto& id : ids) {
      auto it = open_.find(id);
      if (it == open_.end() || it->second.command.host_id != session->agentId()) continue;
      if (pastDeadline(it->second.command, now)) continue;
      events.push_back(eventForLocked(it->second.command, now, &dispatched));
    }
  }
  for (auto& e : events) session->send(std::move(e));
  markDispatched(std::move(dispatched), now);
}

void CommandService::markDispatched(std::vector<std::string> ids, int64_t now) {
  // Stored later by tick(), and only for commands still waiting then: a quick command's
  // result stores its dispatch time itself, so a fan-out of quick commands costs the store
  // one write per command, not two. Losing a mark in a crash is harmless: queued and
  // dispatched commands are both redelivered when their host connects.
  if (ids.empty()) return;
  int64_t steady = clock_.steadyMs();  // the delay is timed on the steady clock
  std::lock_guard lock(marks_mu_);
  for (auto& id : ids) deferred_marks_.push_back({std::move(id), now, steady});
}

void CommandService::storeDispatchMarks() {
  const int64_t steady = clock_.steadyMs();
  std::vector<DeferredMark> due;
  {
    std::lock_guard lock(marks_mu_);
    while (!deferred_marks_.empty() &&
           steady - deferred_marks_.front().steady_ms >= config_.dispatch_mark_delay_ms) {
      due.push_back(std::move(deferred_marks_.front()));
      deferred_marks_.pop_front();
    }
  }
  if (due.empty()) return;
  std::vector<store::MarkDispatched> marks;
  {
    std::lock_guard lock(mu_);
    for (auto& mark : due) {
      auto it = open_.find(mark.id);
      if (it == open_.end() || it->second.command.state != CommandState::kDispatched) continue;
      if (marks.empty() || marks.back().at_ms != mark.at_ms) marks.push_back({{}, mark.at_ms});
      marks.back().command_ids.push_back(std::move(mark.id));
    }
  }
  for (auto& m : marks) store_.write(std::move(m), {});
}

void CommandService::onAgentConnected(const std::shared_ptr<Session>& session) {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    auto it = open_by_host_.find(session->agentId());
    if (it != open_by_host_.end()) ids.assign(it->second.begin(), it->second.end());
  }
  if (!ids.empty()) {
    spdlog::info("agent {}: delivering {} open command(s)", session->agentId(), ids.size());
    deliver(session, ids);
  }
}

void CommandService::onAccepted(const std::shared_ptr<Session>& session,
                                const std::string& command_id) {
  model::Command snapshot;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(command_id);
    if (it == open_.end() || it->second.command.host_id != session->agentId()) return;
    auto& c = it->second.command;
    if (c.state == CommandState::kRunning) return;
    c.state = CommandState::kRunning;
    c.started_at_ms = clock_.nowMs();
    if (c.dispatched_at_ms == 0) c.dispatched_at_ms = c.started_at_ms;
    snapshot = c;
  }
  store_.write(
      store::UpdateCommand{std::move(snapshot), {CommandState::kQueued, CommandState::kDispatched}},
      {});
}

void CommandService::onOutput(const std::shared_ptr<Session>& session, model::OutputChunk chunk) {
  if (chunk.data.size() > config_.max_output_chunk_bytes) {
    session->close(absl::InvalidArgumentError(
        absl::StrCat("output chunk of ", chunk.data.size(), " bytes for command ", chunk.command_id,
                     " exceeds the limit of ", config_.max_output_chunk_bytes)));
    return;
  }
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(chunk.command_id);
    if (it != open_.end()) {
      if (it->second.command.host_id != session->agentId()) {
        session->close(absl::PermissionDeniedError(absl::StrCat(
            "command ", chunk.command_id, " does not belong to agent ", session->agentId())));
        return;
      }
      // The agent keeps head and tail within max_output_bytes per stream; allow resends.
      it->second.received_bytes += chunk.data.size();
      if (it->second.received_bytes > 8 * config_.max_output_bytes) {
        spdlog::warn("command {}: agent {} sent more output than allowed; dropping",
                     chunk.command_id, session->agentId());
        return;
      }
      bus_.publishChunk(chunk);
      store_.write(store::AppendOutput{std::move(chunk)}, {});
      return;
    }
  }
  // Output for a command that is no longer open (a resend after a reconnect).
  slow_path_.post([this, session, chunk = std::move(chunk)]() mutable {
    auto stored = store_.getCommand(chunk.command_id);
    if (!stored.ok() || !stored->has_value()) return;
    if ((*stored)->host_id != session->agentId()) {
      session->close(absl::PermissionDeniedError(absl::StrCat(
          "command ", chunk.command_id, " does not belong to agent ", session->agentId())));
      return;
    }
    store_.write(store::AppendOutput{std::move(chunk)}, {});
  });
}

void CommandService::applyResult(model::Command& c, const model::CommandResult& r, int64_t now) {
  c.state = r.state;
  c.exit_code = r.exit_code;
  c.signal = r.signal;
  c.error = r.error;
  c.output_truncated = r.output_truncated;
  c.stdout_bytes = r.stdout_bytes;
  c.stderr_bytes = r.stderr_bytes;
  if (c.started_at_ms == 0) c.started_at_ms = now;
  if (c.dispatched_at_ms == 0) c.dispatched_at_ms = c.started_at_ms;
  c.finished_at_ms = now;
  c.result_source = model::ResultSource::kAgent;
}

void CommandService::onResult(const std::shared_ptr<Session>& session,
                              model::CommandResult result) {
  if (!model::isTerminal(result.state) || result.state == CommandState::kExpired) {
    session->close(absl::InvalidArgumentError(
        absl::StrCat("result for command ", result.command_id, " has no final outcome")));
    return;
  }
  model::Command updated;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(result.command_id);
    if (it == open_.end()) {
      updated.id.clear();
    } else if (it->second.command.host_id != session->agentId()) {
      session->close(absl::PermissionDeniedError(absl::StrCat(
          "command ", result.command_id, " does not belong to agent ", session->agentId())));
      return;
    } else {
      // Leaves the open set now: moved out, not copied (this runs once per result).
      updated = std::move(it->second.command);
      removeOpenLocked(it, updated.host_id);
      applyResult(updated, result, clock_.nowMs());
    }
  }
  if (updated.id.empty()) {
    slow_path_.post([this, session, result = std::move(result)]() mutable {
      resultSlowPath(session, std::move(result));
    });
    return;
  }
  storeTerminal(std::move(updated), kOpenStates, session);
}

void CommandService::queueAck(std::shared_ptr<Session> session, std::string command_id) {
  if (!fanout_) {
    session->send(ResultAckMsg{std::move(command_id), false, ""});
    return;
  }
  // Acks released by one commit go out in slices of up to kAckSlice per task, so both fanout
  // workers share them without a task per ack.
  static constexpr size_t kAckSlice = 256;
  bool post = false;
  {
    std::lock_guard lock(ack_mu_);
    pending_acks_.emplace_back(std::move(session), std::move(command_id));
    // Invariant: the tasks posted and not yet started can take every pending ack.
    if (pending_acks_.size() > ack_tasks_ * kAckSlice) {
      ++ack_tasks_;
      post = true;
    }
  }
  if (!post) return;
  fanout_->post([this] {
    std::vector<std::pair<std::shared_ptr<Session>, std::string>> acks;
    {
      std::lock_guard lock(ack_mu_);
      --ack_tasks_;
      size_t n = std::min(kAckSlice, pending_acks_.size());
      for (size_t i = 0; i < n; ++i) {
        acks.push_back(std::move(pending_acks_.front()));
        pending_acks_.pop_front();
      }
    }
    for (auto& [s, id] : acks) s->send(ResultAckMsg{std::move(id), false, ""});
  });
}

void CommandService::resultSlowPath(const std::shared_ptr<Session>& session,
                                    model::CommandResult result) {
  auto stored = store_.getCommand(result.command_id);
  if (!stored.ok()) {
    session->close(absl::UnavailableError(
        absl::StrCat("cannot read command ", result.command_id, ": ", stored.status().message())));
    return;
  }
  if (!stored->has_value()) {
    spdlog::warn("agent {} reported a result for unknown command {}; telling it to drop it",
                 session->agentId(), result.command_id);
    session->send(ResultAckMsg{result.command_id, true, "unknown command id"});
    return;
  }
  model::Command c = **stored;
  if (c.host_id != session->agentId()) {
    session->close(absl::PermissionDeniedError(absl::StrCat(
        "command ", result.command_id, " does not belong to agent ", session->agentId())));
    return;
  }
  if (model::isTerminal(c.state) && c.result_source == model::ResultSource::kAgent) {
    session->send(ResultAckMsg{c.id, false, ""});  // a resend of a stored result
    return;
  }
  // The server had inferred an outcome (expired, timed out); what the process did wins.
  CommandState was = c.state;
  applyResult(c, result, clock_.nowMs());
  storeTerminal(std::move(c), {was}, session);
}

void CommandService::storeTerminal(model::Command updated, std::vector<CommandState> only_if,
                                   std::shared_ptr<Session> ack_to) {
  // A command dispatched in memory may still be queued in the store (its mark is deferred).
  if (std::find(only_if.begin(), only_if.end(), CommandState::kDispatched) != only_if.end() &&
      std::find(only_if.begin(), only_if.end(), CommandState::kQueued) == only_if.end()) {
    only_if.push_back(CommandState::kQueued);
  }
  // The callback keeps the command (for the bus and the ack); the store's queue gets only
  // the fields UpdateCommand writes, not a second copy of the run, host, spec and creator.
  auto command = std::make_shared<const model::Command>(std::move(updated));
  store::UpdateCommand mutation = store::UpdateCommand::of(*command, std::move(only_if));
  auto done = [this, command, ack_to](store::WriteResult r) mutable {
    const model::Command& updated = *command;
    if (!r.status.ok()) {
      spdlog::error("command {}: cannot store its result: {}", updated.id, r.status.message());
      {
        std::lock_guard lock(mu_);
        if (!open_.count(updated.id)) {
          // Still open in the store: keep it open here so sweeps and resends apply.
          auto stored = updated;
          stored.state = CommandState::kRunning;
          addOpenLocked(std::move(stored));
        }
      }
      // The agent keeps the result in its outbox and sends it again after reconnecting.
      if (ack_to) {
        ack_to->close(absl::UnavailableError(
            absl::StrCat("server cannot store results right now: ", r.status.message())));
      }
      return;
    }
    if (r.rows == 0) {
      // The stored state moved under us (e.g. expired concurrently); reconcile from the store.
      if (ack_to && updated.result_source == model::ResultSource::kAgent) {
        model::CommandResult again;
        again.command_id = updated.id;
        again.state = updated.state;
        again.exit_code = updated.exit_code;
        again.signal = updated.signal;
        again.error = updated.error;
        again.output_truncated = updated.output_truncated;
        again.stdout_bytes = updated.stdout_bytes;
        again.stderr_bytes = updated.stderr_bytes;
        slow_path_.post([this, ack_to, again] { resultSlowPath(ack_to, again); });
      }
      return;
    }
    // debug: at fleet scale one line per command would cost the writer thread more than the
    // commit; runs are logged when created, and every result is in the store.
    if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("command {} on {}: {}{}", updated.id, updated.host_id,
                    model::toString(updated.state),
                    updated.exit_code ? absl::StrCat(" (exit ", *updated.exit_code, ")") : "");
    }
    bus_.publishFinished(updated);
    metrics_.results_by_state[static_cast<size_t>(updated.state) % 8].fetch_add(1);
    if (updated.result_source == model::ResultSource::kAgent && updated.started_at_ms > 0) {
      metrics_.dispatch_to_result_seconds.observe(
          static_cast<double>(updated.finished_at_ms - updated.dispatched_at_ms) / 1000.0);
    }
    if (ack_to) queueAck(std::move(ack_to), updated.id);
  };
  store_.write(std::move(mutation), std::move(done));
}

absl::StatusOr<model::Command> CommandService::get(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(id);
    if (it != open_.end()) return it->second.command;
  }
  auto stored = store_.getCommand(id);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) {
    return absl::NotFoundError(absl::StrCat("no command with id '", id.substr(0, 140), "'"));
  }
  return **stored;
}

absl::StatusOr<std::vector<model::Command>> CommandService::list(
    const store::CommandFilter& filter) {
  auto page = store_.listCommands(filter);
  if (!page.ok()) return page.status();
  std::lock_guard lock(mu_);
  for (auto& c : *page) {
    auto it = open_.find(c.id);
    if (it != open_.end()) c = it->second.command;  // memory is ahead of the store
  }
  return page;
}

absl::StatusOr<model::Command> CommandService::cancel(const std::string& id,
                                                      const std::string& reason) {
  model::Command snapshot;
  bool terminal_now = false;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(id);
    if (it != open_.end()) {
      auto& c = it->second.command;
      if (c.state == CommandState::kQueued) {
        // Never left the server: cancelled for good right here.
        c.state = CommandState::kCancelled;
        c.error = reason;
        c.finished_at_ms = clock_.nowMs();
        c.result_source = model::ResultSource::kServer;
        terminal_now = true;
        snapshot = c;
        removeOpenLocked(id);
      } else {
        c.cancel_requested = true;
        snapshot = c;
      }
    }
  }
  if (snapshot.id.empty()) {
    auto c = get(id);
    if (!c.ok()) return c.status();
    return absl::FailedPreconditionError(absl::StrCat("command ", id, " already finished (",
                                                      std::string(model::toString(c->state)),
                                                      "); nothing to cancel"));
  }
  if (terminal_now) {
    auto r = store_.writeAndWait(store::UpdateCommand{snapshot, {CommandState::kQueued}});
    if (!r.status.ok()) return r.status;
    bus_.publishFinished(snapshot);
    metrics_.results_by_state[static_cast<size_t>(snapshot.state) % 8].fetch_add(1);
    return snapshot;
  }
  auto r = store_.writeAndWait(store::UpdateCommand{snapshot, kOpenStates});
  if (!r.status.ok()) return r.status;
  if (auto session = hosts_.sessionFor(snapshot.host_id)) {
    session->send(CancelMsg{id, reason});
  }
  return snapshot;
}

absl::StatusOr<std::vector<model::Command>> CommandService::cancelRun(const std::string& run_id,
                                                                      const std::string& reason) {
  auto run = store_.getRun(run_id);
  if (!run.ok()) return run.status();
  if (!run->has_value()) {
    return absl::NotFoundError(absl::StrCat("no run with id '", run_id.substr(0, 140), "'"));
  }
  // A run still being stored in slices: no further slice is stored, and the slices already
  // queued are open when this returns, so the loop below cancels them too.
  stopSlicesOfCancelledRun(run_id);
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, open] : open_) {
      if (open.command.run_id == run_id) ids.push_back(id);
    }
  }
  std::vector<model::Command> out;
  for (const auto& id : ids) {
    auto c = cancel(id, reason);
    if (c.ok()) out.push_back(*std::move(c));
  }
  return out;
}

void CommandService::cancelAllForHost(const std::string& host_id, const std::string& reason) {
  std::vector<std::pair<model::Command, CommandState>> ended;
  {
    std::lock_guard lock(mu_);
    auto it = open_by_host_.find(host_id);
    if (it == open_by_host_.end()) return;
    std::vector<std::string> ids(it->second.begin(), it->second.end());
    for (const auto& id : ids) {
      auto& c = open_.at(id).command;
      CommandState was = c.state;
      c.state = CommandState::kCancelled;
      c.error = reason;
      c.finished_at_ms = clock_.nowMs();
      c.result_source = model::ResultSource::kServer;
      ended.emplace_back(c, was);
      removeOpenLocked(id);
    }
  }
  for (auto& [c, was] : ended) storeTerminal(std::move(c), {was}, nullptr);
}

std::array<uint64_t, 8> CommandService::openByState() const {
  std::array<uint64_t, 8> out{};
  std::lock_guard lock(mu_);
  for (const auto& [id, open] : open_) out[static_cast<size_t>(open.command.state) % 8]++;
  return out;
}

void CommandService::tick() {
  int64_t now = clock_.nowMs();
  storeDispatchMarks();
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
  std::vector<std::pair<model::Command, CommandState>> ended;
  {
    std::lock_guard lock(mu_);
    std::vector<std::string> remove;
    for (auto& [id, open] : open_) {
      auto& c = open.command;
      bool waiting = c.state == CommandState::kQueued || c.state == CommandState::kDispatched;
      int64_t hard_deadline = c.started_at_ms + c.exec.timeout_ms + c.exec.kill_grace_ms +
                              config_.server_timeout_grace_ms;
      if (waiting && c.expires_at_ms > 0 && now >= c.expires_at_ms) {
        CommandState was = c.state;
        c.state = CommandState::kExpired;
        c.error = "expired before the host took it (host offline or busy until the deadline)";
        ended.emplace_back(c, was);
      } else if (c.state == CommandState::kRunning && c.exec.timeout_ms > 0 &&
                 now >= hard_deadline) {
        c.state = CommandState::kTimedOut;
        c.error = absl::StrCat("no result from the agent within the timeout (", c.exec.timeout_ms,
                               " ms) plus grace; the host may be down");
        ended.emplace_back(c, CommandState::kRunning);
      } else {
        continue;
      }
      c.finished_at_ms = now;
      c.result_source = model::ResultSource::kServer;
      remove.push_back(id);
    }
    for (const auto& id : remove) removeOpenLocked(id);
  }
  for (auto& [c, was] : ended) {
    spdlog::warn("command {} on {}: {}", c.id, c.host_id, c.error);
    storeTerminal(std::move(c), {was}, nullptr);
  }
}

}  // namespace muster::server
