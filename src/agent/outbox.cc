// Outbox: the on-disk journal and result store of the agent.
#include "agent/outbox.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/fs.h"

namespace muster::agent {
namespace {
constexpr const char* kStreams[] = {"stdout", "stderr"};

uint64_t fileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Outbox>> Outbox::open(std::string dir, const common::Clock& clock) {
  if (auto st = common::makeDirs(dir, 0700); !st.ok()) return st;
  return std::unique_ptr<Outbox>(new Outbox(std::move(dir), clock));
}

bool Outbox::isSafeId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Outbox::Known Outbox::lookup(const std::string& id) const {
  std::string d = dirFor(id);
  if (!common::fileExists(d + "/spec.pb")) return Known::kNew;
  if (common::fileExists(d + "/acked")) return Known::kAcked;
  if (common::fileExists(d + "/result.pb")) return Known::kFinished;
  return Known::kRunning;
}

absl::Status Outbox::accept(const muster::v1::Command& command) {
  std::string d = dirFor(command.command_id());
  if (auto st = common::makeDirs(d, 0700); !st.ok()) return st;
  if (auto st = common::writeFileAtomic(d + "/spec.pb", command.SerializeAsString(), 0600);
      !st.ok()) {
    return st;
  }
  return common::fsyncDir(dir_);
}

absl::Status Outbox::finish(const muster::v1::CommandResult& result) {
  return common::writeFileAtomic(dirFor(result.command_id()) + "/result.pb",
                                 result.SerializeAsString(), 0600);
}

absl::Status Outbox::markAcked(const std::string& id) {
  if (!isSafeId(id)) return absl::InvalidArgumentError("unsafe command id");
  std::string d = dirFor(id);
  if (!common::fileExists(d + "/result.pb")) return absl::OkStatus();
  if (auto st = common::writeFileAtomic(d + "/acked", "", 0600); !st.ok()) return st;
  for (const char* s : kStreams) {
    ::unlink((d + "/" + s).c_str());
    ::unlink((d + "/" + s + ".tail").c_str());
  }
  return absl::OkStatus();
}

std::vector<std::string> Outbox::listIds() const {
  std::vector<std::string> ids;
  DIR* dir = ::opendir(dir_.c_str());
  if (!dir) return ids;
  while (auto* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (isSafeId(name)) ids.push_back(name);
  }
  ::closedir(dir);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<std::string> Outbox::recoverInterrupted() {
  std::vector<std::string> out;
  for (const auto& id : listIds()) {
    if (lookup(id) != Known::kRunning) continue;
    std::string d = dirFor(id);
    muster::v1::CommandResult result;
    result.set_command_id(id);
    result.set_outcome(muster::v1::COMMAND_OUTCOME_FAILED);
    result.set_error("agent restarted while the command was running");
    result.set_stdout_bytes(fileSize(d + "/stdout"));
    result.set_stderr_bytes(fileSize(d + "/stderr"));
    result.set_finished_at_ms(clock_.nowMs());
    if (auto st = finish(result); !st.ok()) {
      spdlog::error("command {}: cannot record the interrupted run: {}", id, st.message());
      continue;
    }
    spdlog::warn("command {} was running when the agent stopped; reporting it failed", id);
    out.push_back(id);
  }
  return out;
}

std::vector<std::string> Outbox::unacked() const {
  std::vector<std::string> out;
  for (const auto& id : listIds()) {
    if (lookup(id) == Known::kFinished) out.push_back(id);
  }
  return out;
}

std::vector<std::string> Outbox::inFlight() const {
  std::vector<std::string> out;
  for (const auto& id : listIds()) {
    if (lookup(id) == Known::kRunning) out.push_back(id);
  }
  return out;
}

std::vector<muster::v1::AgentMessage> Outbox::replay(const std::string& id, bool include_result,
                                                     size_t chunk_bytes) const {
  std::vector<muster::v1::AgentMessage> out;
  std::string d = dirFor(id);
  for (int s = 0; s < 2; ++s) {
    auto stream = s == 0 ? muster::v1::OUTPUT_STREAM_STDOUT : muster::v1::OUTPUT_STREAM_STDERR;
    auto emit = [&](uint64_t offset, const std::string& bytes) {
      for (size_t pos = 0; pos < bytes.size(); pos += chunk_bytes) {
        auto* o = out.emplace_back().mutable_output();
        o->set_command_id(id);
        o->set_stream(stream);
        o->set_offset(offset + pos);
        o->set_data(bytes.substr(pos, chunk_bytes));
      }
    };
    if (auto head = common::readFile(d + "/" + kStreams[s]); head.ok()) emit(0, *head);
    if (auto tail = common::readFile(d + "/" + kStreams[s] + ".tail");
        tail.ok() && tail->size() >= 8) {
      uint64_t offset = 0;
      std::memcpy(&offset, tail->data(), 8);
      emit(offset, tail->substr(8));
    }
  }
  if (include_result) {
    auto raw = common::readFile(d + "/result.pb");
    muster::v1::CommandResult result;
    if (raw.ok() && result.ParseFromString(*raw)) *out.emplace_back().mutable_result() = result;
  }
  return out;
}

void Outbox::prune(int64_t max_age_ms) {
  int64_t now_s = clock_.nowMs() / 1000;
  for (const auto& id : listIds()) {
    struct stat st;
    std::string marker = dirFor(id) + "/acked";
    if (::stat(marker.c_str(), &st) != 0) continue;
    if (now_s - st.st_mtime < max_age_ms / 1000) continue;
    std::error_code ec;
    std::filesystem::remove_all(dirFor(id), ec);
  }
}

}  // namespace muster::agent
