// Unit tests of src/common and src/crypto helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/backoff.h"
#include "common/duration.h"
#include "common/heap_trim.h"
#include "common/ids.h"
#include "common/log.h"
#include "crypto/secrets.h"

namespace muster::common {
namespace {

TEST(UlidTest, SortsByTimeAndIsUnique) {
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 1000; ++i) {
    auto id = newUlid(1'700'000'000'000 + i);
    EXPECT_EQ(id.size(), 26u);
    EXPECT_GT(id, prev);
    prev = id;
    EXPECT_TRUE(seen.insert(id).second);
  }
}

TEST(UlidTest, IncreasesStrictlyWithinOneMillisecond) {
  UlidGenerator gen;
  std::string prev = gen.next(1'700'000'000'000);
  for (int i = 0; i < 20'000; ++i) {
    auto id = gen.next(1'700'000'000'000);
    ASSERT_GT(id, prev) << "after " << i << " ids in one millisecond";
    ASSERT_EQ(id.substr(0, 10), prev.substr(0, 10));  // same timestamp
    prev = id;
  }
}

TEST(UlidTest, NeverGoesBackWhenTheClockDoes) {
  UlidGenerator gen;
  auto a = gen.next(1'700'000'000'500);
  auto b = gen.next(1'700'000'000'000);
  EXPECT_GT(b, a);
}

TEST(UlidTest, CarriesAcrossTheWordBoundaryAndIntoTheNextMillisecond) {
  UlidGenerator gen;
  gen.setStateForTest(1'700'000'000'000, 0x0001, ~uint64_t{0});
  auto before = gen.next(1'700'000'000'000);  // low word wraps, carry into the high bits
  gen.setStateForTest(1'700'000'000'000, 0x0001, ~uint64_t{0} - 1);
  auto earlier = gen.next(1'700'000'000'000);
  EXPECT_GT(before, earlier);
  gen.setStateForTest(1'700'000'000'000, 0xffff, ~uint64_t{0});
  auto borrowed = gen.next(1'700'000'000'000);  // 80 bits overflow: next millisecond
  EXPECT_GT(borrowed, before);
  EXPECT_EQ(borrowed.substr(0, 10), UlidGenerator().next(1'700'000'000'001).substr(0, 10));
  EXPECT_EQ(borrowed.substr(10), std::string(16, '0'));
}

TEST(UlidTest, ProcessIdsAreOrderedAcrossThreads) {
  std::vector<std::string> ids;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2'000; ++i) {
        auto id = newUlid(1'700'000'000'000);
        std::lock_guard lock(mu);
        ids.push_back(std::move(id));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size());
}

TEST(AgentIdTest, AcceptsOnlyTheDocumentedAlphabet) {
  EXPECT_TRUE(isValidAgentId("web-01.prod_eu"));
  EXPECT_TRUE(isValidAgentId(std::string(128, 'a')));
  EXPECT_FALSE(isValidAgentId(std::string(129, 'a')));
  EXPECT_FALSE(isValidAgentId(""));
  EXPECT_FALSE(isValidAgentId("a b"));
  EXPECT_FALSE(isValidAgentId("../etc"));
  EXPECT_FALSE(isValidAgentId("."));
  EXPECT_FALSE(isValidAgentId(".."));
  EXPECT_TRUE(isValidAgentId("..."));
  EXPECT_FALSE(isValidAgentId(std::string("a\0b", 3)));
}

TEST(DurationTest, ParsesOperatorDurations) {
  EXPECT_EQ(*parseDurationMs("30s"), 30'000);
  EXPECT_EQ(*parseDurationMs("5m"), 300'000);
  EXPECT_EQ(*parseDurationMs("24h"), 86'400'000);
  EXPECT_EQ(*parseDurationMs("1h30m"), 5'400'000);
  EXPECT_EQ(*parseDurationMs("250ms"), 250);
  EXPECT_FALSE(parseDurationMs("").ok());
  EXPECT_FALSE(parseDurationMs("30").ok());
  EXPECT_FALSE(parseDurationMs("-5s").ok());
  EXPECT_FALSE(parseDurationMs("5 s").ok());
  EXPECT_FALSE(parseDurationMs("99999999999999h").ok());
  EXPECT_EQ(formatDurationMs(90'000), "1m30s");
}

TEST(BackoffTest, JitterStaysUnderTheCappedCeilingAndRetriesKeepAFloor) {
  Backoff b(1000, 60'000, 42);
  for (int attempt = 0; attempt < 20; ++attempt) {
    int64_t ceiling = b.ceilingMs();
    EXPECT_LE(ceiling, 60'000);
    // Full jitter for the first attempt, at least half the ceiling for every retry.
    int64_t floor = attempt == 0 ? 0 : ceiling / 2;
    EXPECT_EQ(b.minDelayMs(), floor);
    int64_t d = b.nextDelayMs();
    EXPECT_GE(d, floor);
    EXPECT_LE(d, ceiling);
  }
  EXPECT_EQ(b.ceilingMs(), 60'000);
  b.reset();
  EXPECT_EQ(b.ceilingMs(), 1000);
}

TEST(BackoffTest, RetriesNeverComeSoonerThanHalfTheirCeiling) {
  // Over many seeds: the first delay may be anywhere in [0, 1 s]; the second never < 1 s.
  int64_t shortest_first = INT64_MAX, shortest_second = INT64_MAX;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    Backoff b(1000, 60'000, seed);
    shortest_first = std::min(shortest_first, b.nextDelayMs());
    shortest_second = std::min(shortest_second, b.nextDelayMs());
  }
  EXPECT_LT(shortest_first, 50);
  EXPECT_GE(shortest_second, 1000);
}

TEST(BackoffTest, ServerHintWidensOnlyTheFirstWindowAndNeverPastTheCap) {
  Backoff b(1000, 60'000, 7);
  b.setFirstWindowMs(10'000);
  EXPECT_EQ(b.ceilingMs(), 10'000);
  EXPECT_LE(b.nextDelayMs(), 10'000);
  // A failed first attempt goes on with the agent's own schedule: 2 s, 4 s, ...
  EXPECT_EQ(b.ceilingMs(), 2'000);
  b.nextDelayMs();
  EXPECT_EQ(b.ceilingMs(), 4'000);
  b.reset();
  EXPECT_EQ(b.ceilingMs(), 10'000);
  b.setFirstWindowMs(600'000);
  EXPECT_EQ(b.ceilingMs(), 60'000);
  b.setFirstWindowMs(500);  // narrower than the base: the base wins
  EXPECT_EQ(b.ceilingMs(), 1'000);
}

TEST(LogTest, JsonEscapeKeepsEveryLineValidJson) {
  EXPECT_EQ(jsonEscape(R"(say "hi" \ bye)"), R"(say \"hi\" \\ bye)");
  EXPECT_EQ(jsonEscape("a\nb\tc"), "a\\u000ab\\u0009c");
  EXPECT_EQ(jsonEscape("plain"), "plain");
}

TEST(SecretsTest, TokensAreRandomAndHashesStable) {
  auto a = crypto::randomToken("mst_");
  auto b = crypto::randomToken("mst_");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("mst_", 0), 0u);
  EXPECT_EQ(crypto::sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(crypto::constantTimeEquals("abc", "abc"));
  EXPECT_FALSE(crypto::constantTimeEquals("abc", "abd"));
  EXPECT_FALSE(crypto::constantTimeEquals("abc", "abcd"));
}

TEST(HeapTrimPolicyTest, TrimsOnceABurstIsFollowedByAQuietWindow) {
  HeapTrimPolicy p({.window_ms = 1000, .min_streams = 100, .max_streams = 1000});
  EXPECT_FALSE(p.due(0, 0));       // the first look only starts counting
  EXPECT_FALSE(p.due(50, 500));    // not a window yet
  EXPECT_FALSE(p.due(150, 1000));  // a burst still going
  EXPECT_FALSE(p.due(300, 2000));  // still going
  EXPECT_TRUE(p.due(300, 3000));   // quiet for a window after >= 100 new streams
  EXPECT_FALSE(p.due(300, 4000));  // nothing new since the trim
  EXPECT_FALSE(p.due(350, 5000));
  EXPECT_FALSE(p.due(350, 6000));  // quiet, but only 50 since the trim
}

TEST(HeapTrimPolicyTest, TrimsUnderChurnThatIsNeverQuiet) {
  HeapTrimPolicy p({.window_ms = 1000, .min_streams = 100, .max_streams = 1000});
  EXPECT_FALSE(p.due(0, 0));
  uint64_t opened = 0;
  int trims = 0;
  for (int64_t t = 1000; t <= 10000; t += 1000) {
    opened += 400;
    if (p.due(opened, t)) ++trims;
  }
  EXPECT_EQ(trims, 3);  // at 1200, 2400 and 3600 streams: every >= 1000
}

}  // namespace
}  // namespace muster::common
