// Stored and live command output as text for clients: chunks reassembled by offset
// (overlaps dropped, gaps marked), bytes made valid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace muster::server {

// The line put where the agent dropped the middle of a large output.
std::string truncationMarker(uint64_t bytes);

// Replaces invalid UTF-8 sequences with U+FFFD.
std::string sanitizeUtf8(std::string_view bytes);

// Follows one stream through chunks that arrive in offset order, possibly repeated or
// overlapping (a resend after a reconnect), possibly with holes (head + tail kept).
class StreamCursor {
 public:
  // `start`: bytes before it count as already seen (a follower resuming at an offset).
  explicit StreamCursor(uint64_t start = 0) : next_(start) {}
  struct Piece {
    uint64_t gap_bytes = 0;  // bytes missing before `data` (0: contiguous)
    uint64_t offset = 0;     // stream offset of data[0]
    std::string_view data;   // new bytes only; points into the accepted chunk
  };
  // What `data` at `offset` adds; std::nullopt when nothing new.
  std::optional<Piece> accept(uint64_t offset, std::string_view data);
  // Next byte offset expected.
  uint64_t next() const { return next_; }

 private:
  uint64_t next_ = 0;
};

// Holds back an incomplete UTF-8 sequence at the end of a piece, so a character split
// across two chunks is sent whole.
class Utf8Splitter {
 public:
  // Text ready to send: the carried bytes plus `more`, minus an incomplete tail.
  std::string take(std::string_view more);
  // Whatever is held back, sanitized (at a gap or at the end).
  std::string flush();
  size_t carried() const { return carry_.size(); }

 private:
  std::string carry_;
};

}  // namespace muster::server
