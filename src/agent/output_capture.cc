// OutputCapture implementation.
#include "agent/output_capture.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/fs.h"

namespace muster::agent {
namespace {
const char* streamName(int i) { return i == 0 ? "stdout" : "stderr"; }
}  // namespace

OutputCapture::OutputCapture(std::string dir, uint64_t cap_bytes)
    : dir_(std::move(dir)), head_cap_(cap_bytes / 2), tail_cap_(cap_bytes - cap_bytes / 2) {
  for (int i = 0; i < 2; ++i) {
    std::string path = absl::StrCat(dir_, "/", streamName(i));
    streams_[i].fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (streams_[i].fd < 0 && disk_status_.ok()) {
      disk_status_ =
          absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    }
  }
}

OutputCapture::~OutputCapture() {
  for (auto& s : streams_) {
    if (s.fd >= 0) ::close(s.fd);
  }
}

std::vector<CapturedChunk> OutputCapture::append(int stream, std::string_view data) {
  std::vector<CapturedChunk> live;
  auto& s = streams_[index(stream)];
  if (s.total < head_cap_) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), head_cap_ - s.total));
    std::string_view head = data.substr(0, n);
    if (s.fd >= 0) {
      size_t done = 0;
      while (done < head.size()) {
        ssize_t w = ::write(s.fd, head.data() + done, head.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          disk_status_ = absl::ResourceExhaustedError(
              absl::StrCat("cannot write command output in ", dir_, ": ", std::strerror(errno)));
          ::close(s.fd);
          s.fd = -1;
          break;
        }
        done += static_cast<size_t>(w);
      }
    }
    live.push_back(CapturedChunk{stream, s.total, std::string(head)});
    s.total += n;
    s.head_written += n;
    data.remove_prefix(n);
  }
  if (!data.empty()) {
    s.tail.append(data);
    if (s.tail.size() > 2 * tail_cap_) s.tail.erase(0, s.tail.size() - tail_cap_);
    s.total += data.size();
  }
  return live;
}

std::vector<CapturedChunk> OutputCapture::finish() {
  std::vector<CapturedChunk> tails;
  for (int i = 0; i < 2; ++i) {
    auto& s = streams_[i];
    if (s.tail.size() > tail_cap_) s.tail.erase(0, s.tail.size() - tail_cap_);
    if (s.fd >= 0) {
      ::fsync(s.fd);
      ::close(s.fd);
      s.fd = -1;
    }
    if (s.tail.empty()) continue;
    uint64_t offset = s.total - s.tail.size();
    std::string file(8, '\0');
    std::memcpy(file.data(), &offset, 8);
    file += s.tail;
    auto st = common::writeFileAtomic(absl::StrCat(dir_, "/", streamName(i), ".tail"), file, 0600);
    if (!st.ok() && disk_status_.ok()) disk_status_ = st;
    tails.push_back(CapturedChunk{i + 1, offset, s.tail});
  }
  return tails;
}

bool OutputCapture::truncated() const {
  for (const auto& s : streams_) {
    if (s.total > head_cap_ + tail_cap_) return true;
  }
  return false;
}

}  // namespace muster::agent
