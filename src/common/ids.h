// Identifiers: ULIDs for everything the server creates, validation of agent-supplied ids.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace muster::common {

// 26-character Crockford base32 ULIDs in the spec's monotonic mode: within one millisecond
// (or while the clock stands still or steps back) the previous id's 80 random bits are
// incremented, so the ids of one generator strictly increase and a listing ordered by id is
// creation order. An increment past 80 bits borrows the next millisecond.
class UlidGenerator {
 public:
  std::string next(int64_t now_ms);
  void setStateForTest(int64_t ms, uint64_t random_hi16, uint64_t random_lo64);

 private:
  std::mutex mu_;
  bool started_ = false;
  uint64_t last_ms_ = 0, last_hi_ = 0, last_lo_ = 0;
};

// The process's generator: every id this process makes is greater than the one before.
std::string newUlid(int64_t now_ms);

// Agent ids are chosen by the agent: [A-Za-z0-9._-]{1,128}.
bool isValidAgentId(std::string_view id);

// Label keys and values: keys [A-Za-z0-9._/-]{1,63}, values printable, up to 255 bytes.
bool isValidLabelKey(std::string_view key);
bool isValidLabelValue(std::string_view value);

}  // namespace muster::common
