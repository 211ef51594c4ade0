// Output reassembly and UTF-8 clean-up.
#include "server/core/output_text.h"

#include "absl/strings/str_cat.h"

namespace muster::server {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Length of the valid UTF-8 sequence starting at s[i]; 0 if invalid, -1 if it is a valid
// prefix cut short by the end of the input.
int sequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return -1;
    unsigned char b = byte(i + k);
    unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) return 0;
  }
  return len;
}

}  // namespace

std::string truncationMarker(uint64_t bytes) {
  return absl::StrCat("\n[... ", bytes, " bytes truncated ...]\n");
}

std::string sanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    int len = sequenceLength(s, i);
    if (len > 0) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out.append(kReplacement);
      ++i;
    }
  }
  return out;
}

std::optional<StreamCursor::Piece> StreamCursor::accept(uint64_t offset, std::string_view data) {
  uint64_t end = offset + data.size();
  if (data.empty() || end <= next_) return std::nullopt;
  Piece piece;
  if (offset > next_) {
    piece.gap_bytes = offset - next_;
    piece.offset = offset;
    piece.data = data;
  } else {
    piece.offset = next_;
    piece.data = data.substr(next_ - offset);
  }
  next_ = end;
  return piece;
}

std::string Utf8Splitter::take(std::string_view more) {
  carry_.append(more);
  // Find where a trailing incomplete (but so far valid) sequence starts.
  size_t keep_from = carry_.size();
  for (size_t back = 1; back <= 3 && back <= carry_.size(); ++back) {
    size_t i = carry_.size() - back;
    auto b = static_cast<unsigned char>(carry_[i]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
    if (b >= 0xC2 && sequenceLength(carry_, i) == -1) keep_from = i;
    break;
  }
  std::string ready = sanitizeUtf8(std::string_view(carry_).substr(0, keep_from));
  carry_.erase(0, keep_from);
  return ready;
}

std::string Utf8Splitter::flush() {
  std::string out = sanitizeUtf8(carry_);
  carry_.clear();
  return out;
}

}  // namespace muster::server
