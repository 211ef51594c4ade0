// Captures one command's stdout and stderr into its outbox directory with a cap per
// stream: the head (first half of the cap) is written and streamed live as it comes, the
// tail (last half) is kept in memory and written at the end; bytes between are dropped
// and the result says so.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace muster::agent {

struct CapturedChunk {
  int stream = 1;  // 1 stdout, 2 stderr
  uint64_t offset = 0;
  std::string data;
};

class OutputCapture {
 public:
  // `dir` is the command's outbox directory; `cap_bytes` is per stream (head + tail).
  OutputCapture(std::string dir, uint64_t cap_bytes);
  ~OutputCapture();
  OutputCapture(const OutputCapture&) = delete;
  OutputCapture& operator=(const OutputCapture&) = delete;

  // Appends bytes of a stream; returns the part to stream live (empty past the head).
  // A disk error stops the head file but never the command.
  std::vector<CapturedChunk> append(int stream, std::string_view data);
  // Writes the tails, fsyncs everything. Returns the tail chunks to send.
  std::vector<CapturedChunk> finish();

  uint64_t total(int stream) const { return streams_[index(stream)].total; }
  bool truncated() const;
  const absl::Status& diskStatus() const { return disk_status_; }

 private:
  struct Stream {
    int fd = -1;
    uint64_t total = 0;
    uint64_t head_written = 0;
    std::string tail;  // ring as a string; the last tail_cap bytes past the head
  };
  static int index(int stream) { return stream == 2 ? 1 : 0; }

  std::string dir_;
  uint64_t head_cap_;
  uint64_t tail_cap_;
  Stream streams_[2];
  absl::Status disk_status_;
};

}  // namespace muster::agent
