// Artifact transfers: admission against a command's expectations, slots, attempts,
// deadlines, resume, and the retention sweep.
#include "server/core/artifact_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"

namespace muster::server {
namespace {

using model::TransferDirection;

size_t dirIndex(TransferDirection d) { return d == TransferDirection::kUpload ? 0 : 1; }

const char* dirWord(TransferDirection d) {
  return d == TransferDirection::kUpload ? "upload" : "download";
}

}  // namespace

std::string_view toString(TransferRefusal refusal) {
  switch (refusal) {
    case TransferRefusal::kNotInFlight: return "not_in_flight";
    case TransferRefusal::kNoExpectation: return "no_expectation";
    case TransferRefusal::kInProgress: return "in_progress";
    case TransferRefusal::kAttempts: return "attempts";
    case TransferRefusal::kSlots: return "slots";
    case TransferRefusal::kTooLarge: return "too_large";
    case TransferRefusal::kQuota: return "quota";
    case TransferRefusal::kBadRequest: return "bad_request";
    case TransferRefusal::kVerification: return "verification";
    case TransferRefusal::kDeadline: return "deadline";
    case TransferRefusal::kChanged: return "changed";
    case TransferRefusal::kCommandEnded: return "command_ended";
    case TransferRefusal::kStorage: return "storage";
    case TransferRefusal::kCount: break;
  }
  return "unknown";
}

// --- Transfer ----------------------------------------------------------------------------

Transfer::Transfer(ArtifactService& service, TransferDirection direction, std::string agent_id,
                   std::function<void(absl::Status)> cancel, int64_t now_steady_ms)
    : service_(service),
      direction_(direction),
      agent_id_(std::move(agent_id)),
      cancel_(std::move(cancel)),
      opened_ms_(now_steady_ms),
      last_progress_ms_(now_steady_ms) {}

Transfer::~Transfer() { end(false, TransferRefusal::kCommandEnded); }

void Transfer::end(bool success, TransferRefusal reason) {
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
    cancel_ = nullptr;
  }
  if (holds_expectation_) {
    service_.giveBack(command_id_, expectation_,
                      success && direction_ == TransferDirection::kUpload,
                      success && direction_ == TransferDirection::kUpload ? &stored_ref_ : nullptr);
    holds_expectation_ = false;
  }
  upload_.reset();  // a failed upload's staging stays for a resume (unless discarded)
  reader_.reset();
  auto& m = service_.metrics_;
  if (!success) {
    auto& failed = direction_ == TransferDirection::kUpload ? m.upload_failed : m.download_failed;
    failed[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  }
  service_.releaseSlot(direction_, agent_id_);
}

// The metric's reason for a refused admission (ArtifactService::admit's codes).
TransferRefusal Transfer::refusalOf(const absl::Status& st) {
  if (st.code() == absl::StatusCode::kAlreadyExists) return TransferRefusal::kInProgress;
  if (st.code() == absl::StatusCode::kResourceExhausted) return TransferRefusal::kAttempts;
  if (st.message().find("in flight") != std::string_view::npos) {
    return TransferRefusal::kNotInFlight;
  }
  return TransferRefusal::kNoExpectation;
}

void Transfer::hold(const std::string& command_id, size_t expectation) {
  command_id_ = command_id;
  {
    std::lock_guard lock(mu_);
    command_of_ = command_id_;
  }
  expectation_ = expectation;
  holds_expectation_ = true;
}

absl::Status Transfer::fail(TransferRefusal reason, absl::Status st) {
  end(false, reason);
  return st;
}

void Transfer::abort(const absl::Status& why) {
  TransferRefusal reason = TransferRefusal::kCommandEnded;
  if (why.code() == absl::StatusCode::kDeadlineExceeded) reason = TransferRefusal::kDeadline;
  if (why.code() == absl::StatusCode::kInvalidArgument) reason = TransferRefusal::kBadRequest;
  end(false, reason);
}

absl::StatusOr<uint64_t> Transfer::beginUpload(const UploadHeader& header) {
  if (direction_ != TransferDirection::kUpload || admitted_) {
    return fail(TransferRefusal::kBadRequest,
                absl::FailedPreconditionError("not an upload waiting for its header"));
  }
  if (header.command_id.empty()) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError("the upload header names no command"));
  }
  if (header.purpose == model::ArtifactPurpose::kUnspecified) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError("the upload header has no purpose (LOGS, BUNDLE, ...)"));
  }
  if (!crypto::isSha256Hex(header.declared_sha256)) {
    return fail(
        TransferRefusal::kBadRequest,
        absl::InvalidArgumentError("the upload header's sha256 must be 64 lower-case hex digits"));
  }
  if (header.resume_offset > header.declared_size) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError(absl::StrCat("resume offset ", header.resume_offset,
                                                        " is past the declared size ",
                                                        header.declared_size)));
  }
  model::ArtifactExpectation want{.direction = TransferDirection::kUpload,
                                  .purpose = header.purpose,
                                  .artifact_id = header.artifact_id,
                                  .device = header.device};
  auto admitted = service_.admit(agent_id_, header.command_id, want, &header);
  if (!admitted.ok()) {
    return fail(refusalOf(admitted.status()), admitted.status());
  }
  hold(header.command_id, admitted->index);
  header_ = header;
  uint64_t limit = service_.limitFor(header.purpose, admitted->expectation.max_bytes);
  if (header.declared_size > limit) {
    return fail(TransferRefusal::kTooLarge,
                absl::InvalidArgumentError(
                    absl::StrCat("artifact upload refused: ", header.declared_size,
                                 " bytes declared, over the limit of ", limit, " bytes for ",
                                 common::sv(model::toString(header.purpose)), " artifacts")));
  }
  admitted_ = true;
  last_progress_ms_ = service_.clock_.steadyMs();
  if (admitted->completed) {
    // The reply to an earlier attempt was lost: its bytes are stored. Drain and verify this
    // one against them, and answer with the stored ref.
    if (admitted->ref.size != header.declared_size ||
        admitted->ref.sha256 != header.declared_sha256) {
      return fail(TransferRefusal::kNoExpectation,
                  absl::FailedPreconditionError(absl::StrCat(
                      "command ", command_id_, " already received this upload as artifact ",
                      admitted->ref.id, " (", admitted->ref.size, " bytes, sha256 ",
                      admitted->ref.sha256, "); a different file cannot replace it")));
    }
    draining_ = true;
    stored_ref_ = admitted->ref;
    drain_hash_ = std::make_unique<crypto::Sha256Stream>();
    return uint64_t{0};
  }
  auto upload =
      service_.store_.stage({.key = ArtifactService::stagingKey(command_id_, expectation_),
                             .declared_size = header.declared_size,
                             .declared_sha256 = header.declared_sha256,
                             .resume_offset = header.resume_offset});
  if (!upload.ok()) {
    TransferRefusal reason = upload.status().code() == absl::StatusCode::kResourceExhausted
                                 ? TransferRefusal::kQuota
                                 : TransferRefusal::kStorage;
    return fail(reason, upload.status());
  }
  upload_ = *std::move(upload);
  last_progress_ms_ = service_.clock_.steadyMs();  // after a resume's rehash of its prefix
  received_ = upload_->offset();
  if (received_ > 0) service_.metrics_.resumed_uploads.fetch_add(1, std::memory_order_relaxed);
  return received_;
}

absl::Status Transfer::chunk(std::string_view bytes) {
  if (!admitted_ || (!upload_ && !draining_)) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError("a chunk before an admitted upload header"));
  }
  if (bytes.empty() || bytes.size() > service_.config_.max_chunk_bytes) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError(
                    absl::StrCat("a chunk of ", bytes.size(), " bytes: chunks carry 1 to ",
                                 service_.config_.max_chunk_bytes, " bytes")));
  }
  if (!service_.commands_.isOpen(command_id_)) {
    return fail(
        TransferRefusal::kCommandEnded,
        absl::AbortedError(absl::StrCat("command ", command_id_, " ended during the upload")));
  }
  last_progress_ms_ = service_.clock_.steadyMs();
  service_.metrics_.bytes_in.fetch_add(bytes.size(), std::memory_order_relaxed);
  if (draining_) {
    if (bytes.size() > header_.declared_size - received_) {
      return fail(TransferRefusal::kVerification,
                  absl::InvalidArgumentError(
                      absl::StrCat("more bytes than declared: ", received_ + bytes.size(),
                                   " received, ", header_.declared_size, " declared")));
    }
    drain_hash_->update(bytes);
    received_ += bytes.size();
    return absl::OkStatus();
  }
  absl::Status st = upload_->append(bytes);
  if (!st.ok()) {
    TransferRefusal reason = st.code() == absl::StatusCode::kInvalidArgument
                                 ? TransferRefusal::kVerification
                                 : TransferRefusal::kStorage;
    if (reason == TransferRefusal::kVerification) upload_->discard();
    return fail(reason, st);
  }
  received_ = upload_->offset();
  return absl::OkStatus();
}

absl::StatusOr<model::Artifact> Transfer::finishUpload() {
  if (!admitted_ || (!upload_ && !draining_)) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError("the upload ended before its header was admitted"));
  }
  if (draining_) {
    std::string got = drain_hash_->finishHex();
    if (received_ != header_.declared_size || got != header_.declared_sha256) {
      return fail(
          TransferRefusal::kVerification,
          absl::InvalidArgumentError(absl::StrCat(
              "retry of a stored upload does not match it: ", received_, " bytes, sha256 ", got,
              "; declared ", header_.declared_size, " bytes, sha256 ", header_.declared_sha256)));
    }
    service_.metrics_.retries_answered.fetch_add(1, std::memory_order_relaxed);
    service_.metrics_.uploads_ok.fetch_add(1, std::memory_order_relaxed);
    model::Artifact ref = stored_ref_;
    end(true, TransferRefusal::kCount);
    return ref;
  }
  model::Artifact meta;
  meta.name = model::sanitizeArtifactName(header_.name);
  meta.purpose = header_.purpose;
  meta.host_id = agent_id_;
  meta.command_id = command_id_;
  meta.created_by = agent_id_;
  meta.expectation = static_cast<int>(expectation_);
  auto stored = upload_->commit(std::move(meta));
  if (!stored.ok()) {
    TransferRefusal reason = stored.status().code() == absl::StatusCode::kInvalidArgument
                                 ? TransferRefusal::kVerification
                                 : TransferRefusal::kStorage;
    return fail(reason, stored.status());
  }
  stored_ref_ = *stored;
  service_.metrics_.uploads_ok.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("artifact {} stored: {} ({} bytes) uploaded by {} for command {}", stored->id,
               stored->name, stored->size, agent_id_, command_id_);
  end(true, TransferRefusal::kCount);
  return stored;
}

absl::StatusOr<model::Artifact> Transfer::beginDownload(const DownloadRequest& request) {
  if (direction_ != TransferDirection::kDownload || admitted_) {
    return fail(TransferRefusal::kBadRequest,
                absl::FailedPreconditionError("not a download waiting for its request"));
  }
  if (request.command_id.empty() || request.artifact_id.empty()) {
    return fail(TransferRefusal::kBadRequest,
                absl::InvalidArgumentError("a download names its command and artifact"));
  }
  model::ArtifactExpectation want{.direction = TransferDirection::kDownload,
                                  .artifact_id = request.artifact_id,
                                  .device = request.device};
  auto admitted = service_.admit(agent_id_, request.command_id, want, nullptr);
  if (!admitted.ok()) {
    return fail(refusalOf(admitted.status()), admitted.status());
  }
  hold(request.command_id, admitted->index);
  auto reader = service_.store_.openRead(request.artifact_id);
  if (!reader.ok()) {
    return fail(TransferRefusal::kChanged,
                absl::FailedPreconditionError(
                    absl::StrCat("artifact ", request.artifact_id, " of command ", command_id_,
                                 " cannot be read: ", reader.status().message())));
  }
  const model::Artifact& have = (*reader)->artifact();
  const model::ArtifactExpectation& exp = admitted->expectation;
  if ((!exp.sha256.empty() && exp.sha256 != have.sha256) ||
      (exp.size != 0 && exp.size != have.size)) {
    return fail(TransferRefusal::kChanged,
                absl::FailedPreconditionError(absl::StrCat(
                    "artifact ", have.id, " changed since command ", command_id_,
                    " was created: it was ", exp.size, " bytes with sha256 ", exp.sha256,
                    ", it is ", have.size, " bytes with sha256 ", have.sha256)));
  }
  if (request.offset > have.size) {
    return fail(TransferRefusal::kBadRequest,
                absl::OutOfRangeError(absl::StrCat("offset ", request.offset,
                                                   " is past the end of artifact ", have.id, " (",
                                                   have.size, " bytes)")));
  }
  reader_ = *std::move(reader);
  offset_ = request.offset;
  if (offset_ > 0) service_.metrics_.resumed_downloads.fetch_add(1, std::memory_order_relaxed);
  admitted_ = true;
  last_progress_ms_ = service_.clock_.steadyMs();
  return reader_->artifact();
}

absl::Status Transfer::nextChunk(std::string* out) {
  if (!admitted_ || !reader_) {
    return fail(TransferRefusal::kBadRequest,
                absl::FailedPreconditionError("no admitted download"));
  }
  if (!service_.commands_.isOpen(command_id_)) {
    return fail(
        TransferRefusal::kCommandEnded,
        absl::AbortedError(absl::StrCat("command ", command_id_, " ended during the download")));
  }
  last_progress_ms_ = service_.clock_.steadyMs();
  absl::Status st = reader_->read(offset_, service_.config_.max_chunk_bytes, out);
  if (!st.ok()) return fail(TransferRefusal::kStorage, st);
  offset_ += out->size();
  service_.metrics_.bytes_out.fetch_add(out->size(), std::memory_order_relaxed);
  return absl::OkStatus();
}

void Transfer::finishDownload() {
  service_.metrics_.downloads_ok.fetch_add(1, std::memory_order_relaxed);
  end(true, TransferRefusal::kCount);
}

// --- ArtifactService ---------------------------------------------------------------------

ArtifactService::ArtifactService(store::ArtifactStore& store, CommandService& commands,
                                 const common::Clock& clock, ArtifactConfig config)
    : store_(store), commands_(commands), clock_(clock), config_(std::move(config)) {}

std::string ArtifactService::stagingKey(const std::string& command_id, size_t index) {
  return absl::StrCat(command_id, ".", index);
}

absl::Status ArtifactService::start() {
  std::vector<std::string> resumable;
  commands_.forEachOpenWithArtifacts([&](const model::Command& c) {
    for (size_t i = 0; i < c.artifacts.size(); ++i) {
      if (c.artifacts[i].direction == TransferDirection::kUpload) {
        resumable.push_back(stagingKey(c.id, i));
      }
    }
  });
  if (auto st = store_.open(resumable); !st.ok()) return st;
  // Uploads that completed before a restart stay completed: their artifacts name the
  // command and the expectation.
  std::vector<model::Command> with_uploads;
  commands_.forEachOpenWithArtifacts([&](const model::Command& c) { with_uploads.push_back(c); });
  for (const auto& c : with_uploads) {
    auto stored = store_.list({.command_id = c.id, .limit = 64});
    if (!stored.ok()) return stored.status();
    std::lock_guard lock(mu_);
    for (const auto& a : *stored) {
      if (a.expectation < 0 || static_cast<size_t>(a.expectation) >= c.artifacts.size() ||
          c.artifacts[a.expectation].direction != TransferDirection::kUpload) {
        continue;
      }
      auto [it, inserted] = by_command_.try_emplace(c.id);
      if (inserted) {
        it->second.host_id = c.host_id;
        it->second.expectations = c.artifacts;
        it->second.states.resize(c.artifacts.size());
      }
      it->second.states[a.expectation].completed = true;
      it->second.states[a.expectation].ref = a;
    }
  }
  return absl::OkStatus();
}

uint64_t ArtifactService::limitFor(model::ArtifactPurpose purpose, uint64_t expectation_max) const {
  uint64_t limit = config_.max_artifact_bytes;
  if (auto it = config_.max_bytes_by_purpose.find(purpose);
      it != config_.max_bytes_by_purpose.end()) {
    limit = it->second;
  }
  if (expectation_max != 0) limit = std::min(limit, expectation_max);
  return limit;
}

absl::StatusOr<std::shared_ptr<Transfer>> ArtifactService::open(
    TransferDirection direction, const std::string& agent_id,
    std::function<void(absl::Status)> cancel) {
  size_t cap = direction == TransferDirection::kUpload ? config_.upload_slots_per_agent
                                                       : config_.download_slots_per_agent;
  {
    std::lock_guard lock(mu_);
    auto& used = slots_[agent_id][dirIndex(direction)];
    if (used >= cap) {
      auto& failed = direction == TransferDirection::kUpload ? metrics_.upload_failed
                                                             : metrics_.download_failed;
      failed[static_cast<size_t>(TransferRefusal::kSlots)].fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(
          absl::StrCat("agent ", agent_id, " already has ", used, " ", dirWord(direction),
                       "s in progress (the limit): retry when one ends"));
    }
    ++used;
  }
  (direction == TransferDirection::kUpload ? metrics_.upload_slots_in_use
                                           : metrics_.download_slots_in_use)
      .fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<Transfer> t(
      new Transfer(*this, direction, agent_id, std::move(cancel), clock_.steadyMs()));
  std::lock_guard lock(mu_);
  live_.push_back(t);
  return t;
}

void ArtifactService::releaseSlot(TransferDirection direction, const std::string& agent_id) {
  (direction == TransferDirection::kUpload ? metrics_.upload_slots_in_use
                                           : metrics_.download_slots_in_use)
      .fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  auto it = slots_.find(agent_id);
  if (it == slots_.end()) return;
  auto& used = it->second[dirIndex(direction)];
  if (used > 0) --used;
  if (it->second[0] == 0 && it->second[1] == 0) slots_.erase(it);
}

absl::StatusOr<ArtifactService::Admitted> ArtifactService::admit(
    const std::string& agent_id, const std::string& command_id,
    const model::ArtifactExpectation& want, const UploadHeader* upload) {
  const char* dir = dirWord(want.direction);
  auto not_in_flight = [&] {
    // The same answer for another host's command: ids of other hosts are not confirmed.
    return absl::FailedPreconditionError(absl::StrCat("artifact ", dir, " refused: command ",
                                                      command_id.substr(0, 64),
                                                      " is not in flight on this host"));
  };
  std::optional<model::Command> command = commands_.openCommand(command_id);
  if (!command || command->host_id != agent_id ||
      (command->state != model::CommandState::kDispatched &&
       command->state != model::CommandState::kRunning)) {
    return not_in_flight();
  }
  std::lock_guard lock(mu_);
  auto [it, inserted] = by_command_.try_emplace(command_id);
  CommandEntry& entry = it->second;
  if (inserted) {
    entry.host_id = command->host_id;
    entry.expectations = command->artifacts;
    entry.states.resize(entry.expectations.size());
  }
  // The closest miss, for the refusal's message.
  std::string why = absl::StrCat("command ", command_id, " expects no ", dir);
  bool matched_any = false, busy = false;
  // An expectation still to be met comes first; a completed one takes only a retry of the
  // same bytes (its reply was lost).
  std::optional<size_t> pick, completed_pick;
  for (size_t i = 0; i < entry.expectations.size(); ++i) {
    const auto& e = entry.expectations[i];
    if (e.direction != want.direction) continue;
    if (want.direction == TransferDirection::kUpload && e.purpose != want.purpose) {
      why = absl::StrCat("command ", command_id, " expects an upload of purpose ",
                         common::sv(model::toString(e.purpose)), ", not ",
                         common::sv(model::toString(want.purpose)));
      continue;
    }
    if (want.direction == TransferDirection::kDownload && e.artifact_id != want.artifact_id) {
      why = absl::StrCat("command ", command_id, " expects a download of artifact ", e.artifact_id,
                         ", not ", want.artifact_id.substr(0, 64));
      continue;
    }
    if (want.direction == TransferDirection::kUpload && !e.artifact_id.empty() &&
        e.artifact_id != want.artifact_id) {
      why = absl::StrCat("command ", command_id, " expects the upload of artifact id ",
                         e.artifact_id, ", not '", want.artifact_id.substr(0, 64), "'");
      continue;
    }
    if (!e.device.empty() && e.device != want.device) {
      why = absl::StrCat("command ", command_id, " expects the ", dir, " for device '", e.device,
                         "', not '", want.device.substr(0, 64), "'");
      continue;
    }
    matched_any = true;
    ExpectationState& s = entry.states[i];
    if (s.in_progress) {
      busy = true;
      continue;
    }
    if (s.attempts >= config_.max_attempts) continue;
    if (!s.completed) {
      pick = i;
      break;
    }
    if (!completed_pick || (upload != nullptr && s.ref.size == upload->declared_size &&
                            s.ref.sha256 == upload->declared_sha256)) {
      completed_pick = i;
    }
  }
  if (!pick) pick = completed_pick;
  if (pick) {
    ExpectationState& s = entry.states[*pick];
    ++s.attempts;
    s.in_progress = true;
    return Admitted{*pick, entry.expectations[*pick], s.completed, s.ref};
  }
  if (!matched_any) {
    return absl::FailedPreconditionError(absl::StrCat("artifact ", dir, " refused: ", why));
  }
  if (busy) {
    return absl::AlreadyExistsError(absl::StrCat("artifact ", dir, " refused: another ", dir,
                                                 " for command ", command_id,
                                                 " is in progress; wait for it to end"));
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("artifact ", dir, " refused: command ", command_id, " used all ",
                   config_.max_attempts, " attempts of this ", dir, "; run the command again"));
}

void ArtifactService::giveBack(const std::string& command_id, size_t index, bool completed,
                               const model::Artifact* ref) {
  std::lock_guard lock(mu_);
  auto it = by_command_.find(command_id);
  if (it == by_command_.end() || index >= it->second.states.size()) return;
  ExpectationState& s = it->second.states[index];
  s.in_progress = false;
  if (completed && ref != nullptr) {
    s.completed = true;
    s.ref = *ref;
  }
}

std::string ArtifactService::missingUploads(const std::string& command_id) {
  std::optional<model::Command> command = commands_.openCommand(command_id);
  if (!command) return {};
  std::lock_guard lock(mu_);
  auto it = by_command_.find(command_id);
  for (size_t i = 0; i < command->artifacts.size(); ++i) {
    const auto& e = command->artifacts[i];
    if (e.direction != TransferDirection::kUpload) continue;
    bool done =
        it != by_command_.end() && i < it->second.states.size() && it->second.states[i].completed;
    if (!done) {
      return absl::StrCat("the command reported success, but its expected ",
                          common::sv(model::toString(e.purpose)), " upload never completed");
    }
  }
  return {};
}

void ArtifactService::tick() {
  const int64_t now = clock_.steadyMs();
  // Copies of transfers die outside mu_: the last one ends its transfer, which takes mu_.
  std::vector<std::shared_ptr<Transfer>> alive;
  std::vector<std::pair<std::shared_ptr<Transfer>, absl::Status>> to_cancel;
  std::vector<std::string> ended_commands, drop_keys;
  {
    std::lock_guard lock(mu_);
    std::erase_if(live_, [](const std::weak_ptr<Transfer>& w) { return w.expired(); });
    for (const auto& w : live_) {
      if (auto t = w.lock()) alive.push_back(std::move(t));
    }
    for (const auto& [id, entry] : by_command_) ended_commands.push_back(id);
  }
  for (const auto& t : alive) {
    absl::Status why;
    if (!t->admitted_ && now - t->opened_ms_ > config_.header_timeout_ms) {
      why = absl::DeadlineExceededError(
          absl::StrCat("no transfer header within ", config_.header_timeout_ms, " ms"));
    } else if (t->admitted_ && now - t->last_progress_ms_ > config_.progress_timeout_ms) {
      why = absl::DeadlineExceededError(
          absl::StrCat("no progress for ", config_.progress_timeout_ms, " ms"));
    } else if (now - t->opened_ms_ > config_.transfer_timeout_ms) {
      why = absl::DeadlineExceededError(
          absl::StrCat("the transfer took longer than ", config_.transfer_timeout_ms, " ms"));
    }
    if (!why.ok()) to_cancel.emplace_back(t, std::move(why));
  }
  // Expectations of commands that ended go, and so do their transfers and staged bytes.
  std::erase_if(ended_commands, [&](const std::string& id) { return commands_.isOpen(id); });
  if (!ended_commands.empty()) {
    {
      std::lock_guard lock(mu_);
      for (const auto& id : ended_commands) {
        auto it = by_command_.find(id);
        if (it == by_command_.end()) continue;
        for (size_t i = 0; i < it->second.expectations.size(); ++i) {
          if (it->second.expectations[i].direction == TransferDirection::kUpload) {
            drop_keys.push_back(stagingKey(id, i));
          }
        }
        by_command_.erase(it);
      }
    }
    std::set<std::string> ended(ended_commands.begin(), ended_commands.end());
    for (const auto& t : alive) {
      if (ended.contains(t->commandId())) {
        to_cancel.emplace_back(
            t, absl::AbortedError(absl::StrCat("command ", t->commandId(), " ended")));
      }
    }
    for (const auto& key : drop_keys) store_.dropStaging(key);
  }
  for (auto& [t, why] : to_cancel) {
    std::function<void(absl::Status)> cancel;
    {
      std::lock_guard lock(t->mu_);
      if (t->ended_) continue;
      cancel = std::move(t->cancel_);
      t->cancel_ = nullptr;
    }
    spdlog::warn("artifact {} from agent {}: {}", dirWord(t->direction()), t->agentId(),
                 why.message());
    if (cancel) cancel(why);
  }
}

absl::Status ArtifactService::resolve(std::vector<model::ArtifactExpectation>& expectations) {
  for (auto& e : expectations) {
    if (e.direction != TransferDirection::kDownload) continue;
    auto a = store_.get(e.artifact_id);
    if (!a.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "artifact ", e.artifact_id.substr(0, 64),
          " is not stored: `muster artifact ls` lists artifacts, `muster artifact push` adds one"));
    }
    uint64_t limit = limitFor(e.purpose, e.max_bytes);
    if (a->size > limit) {
      return absl::FailedPreconditionError(absl::StrCat("artifact ", a->id, " is ", a->size,
                                                        " bytes, over the limit of ", limit,
                                                        " for this download"));
    }
    e.sha256 = a->sha256;
    e.size = a->size;
  }
  return absl::OkStatus();
}

bool ArtifactService::neededByOpenCommand(const model::Artifact& artifact) {
  bool needed = false;
  commands_.forEachOpenWithArtifacts([&](const model::Command& c) {
    if (c.id == artifact.command_id) needed = true;
    for (const auto& e : c.artifacts) needed = needed || e.artifact_id == artifact.id;
  });
  return needed;
}

absl::StatusOr<int64_t> ArtifactService::sweepBatch(int64_t cutoff_ms, int64_t max_rows) {
  // Artifacts an open command refers to are kept, whatever their age.
  std::set<std::string> needed_ids, open_commands;
  commands_.forEachOpenWithArtifacts([&](const model::Command& c) {
    open_commands.insert(c.id);
    for (const auto& e : c.artifacts) {
      if (!e.artifact_id.empty()) needed_ids.insert(e.artifact_id);
    }
  });
  return store_.sweep(cutoff_ms, max_rows, [&](const model::Artifact& a) {
    return needed_ids.contains(a.id) || open_commands.contains(a.command_id);
  });
}

}  // namespace muster::server
