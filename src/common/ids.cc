// ULID generation and id validation.
#include "common/ids.h"

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

std::string newUlid(int64_t now_ms) {
  std::string out(26, '0');
  auto ts = static_cast<uint64_t>(now_ms) & ((uint64_t{1} << 48) - 1);
  for (int i = 9; i >= 0; --i) {
    out[i] = kCrockford[ts & 31];
    ts >>= 5;
  }
  uint64_t hi = randomWord(), lo = randomWord();
  for (int i = 10; i < 26; ++i) {
    uint64_t& word = i < 18 ? hi : lo;
    out[i] = kCrockford[word & 31];
    word >>= 5;
  }
  return out;
}

bool isValidAgentId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
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
