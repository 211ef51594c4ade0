// ULID generation and id validation.
#include "common/ids.h"

#include <mutex>
#include <random>

namespace muster::common {
namespace {
constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

uint64_t randomWord() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

bool isIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}
}  // namespace

std::string UlidGenerator::next(int64_t now_ms) {
  constexpr uint64_t kTsMask = (uint64_t{1} << 48) - 1;
  uint64_t ts = static_cast<uint64_t>(now_ms < 0 ? 0 : now_ms) & kTsMask;
  uint64_t hi, lo;
  {
    std::lock_guard lock(mu_);
    if (!started_ || ts > last_ms_) {
      started_ = true;
      last_ms_ = ts;
      last_hi_ = randomWord() & 0xffff;
      // Headroom below 2^80 so that a burst rarely has to borrow the next millisecond.
      last_lo_ = randomWord() >> 1;
    } else if (++last_lo_ == 0 && ++last_hi_ > 0xffff) {
      last_hi_ = 0;
      last_ms_ = (last_ms_ + 1) & kTsMask;
    }
    ts = last_ms_;
    hi = last_hi_;
    lo = last_lo_;
  }
  std::string out(26, '0');
  for (int i = 9; i >= 0; --i) {
    out[i] = kCrockford[ts & 31];
    ts >>= 5;
  }
  // 80 random bits in 16 characters: the low 64 bits in `lo`, the top 16 in `hi`;
  // character 13 straddles both.
  for (int i = 25; i >= 10; --i) {
    out[i] = kCrockford[lo & 31];
    lo = (lo >> 5) | (hi << 59);
    hi >>= 5;
  }
  return out;
}

void UlidGenerator::setStateForTest(int64_t ms, uint64_t random_hi16, uint64_t random_lo64) {
  std::lock_guard lock(mu_);
  started_ = true;
  last_ms_ = static_cast<uint64_t>(ms);
  last_hi_ = random_hi16 & 0xffff;
  last_lo_ = random_lo64;
}

std::string newUlid(int64_t now_ms) {
  static UlidGenerator generator;
  return generator.next(now_ms);
}

bool isValidAgentId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  // They name files and URL path segments: "." and ".." would be the directory itself or its
  // parent.
  if (id == "." || id == "..") return false;
  for (char c : id) {
    if (!isIdChar(c)) return false;
  }
  return true;
}

bool isValidLabelKey(std::string_view key) {
  if (key.empty() || key.size() > 63) return false;
  for (char c : key) {
    if (!isIdChar(c) && c != '/') return false;
  }
  return true;
}

bool isValidLabelValue(std::string_view value) {
  if (value.size() > 255) return false;
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace muster::common
