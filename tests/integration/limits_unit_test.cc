// The small pieces every bound relies on: loopback decided on resolved addresses, durations
// that never overflow, range errors that name the value, and the rate-limited log line.
#include <gtest/gtest.h>
#include <netdb.h>

#include <map>

#include "cli/http_client.h"
#include "common/duration.h"
#include "common/log.h"
#include "common/net.h"

namespace muster::common {
namespace {

TEST(LoopbackTest, OnlyLoopbackAddressesAreLoopback) {
  for (const char* yes : {"127.0.0.1", "127.255.255.254", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1",
                          "::ffff:127.0.0.1", "::ffff:127.9.9.9"}) {
    EXPECT_TRUE(isLoopbackAddress(yes)) << yes;
  }
  for (const char* no : {"0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "126.255.255.255",
                         "::ffff:10.0.0.1", "::ffff:0.0.0.0", "::2", "fe80::1", "::1%lo",
                         "localhost", "127.evil.com", "", "127.0.0.1 ", "::127.0.0.1"}) {
    EXPECT_FALSE(isLoopbackAddress(no)) << no;
  }
}

TEST(DurationLimitTest, HugeDurationsAreErrorsNeverWrapped) {
  EXPECT_EQ(*parseDurationMs("1d"), kDayMs);
  EXPECT_EQ(*parseDurationMs("36500d"), kMaxDurationMs);
  EXPECT_EQ(*parseDurationMs("36499d23h59m59s999ms"), kMaxDurationMs - 1);
  for (const char* huge : {"9999999999999h", "999999999999d", "106751991167d", "36500d1ms",
                           "99999999999999999999999999999ms", "1000000000000000s", "36000d36000d",
                           "2562047788015215h30m"}) {
    auto ms = parseDurationMs(huge);
    EXPECT_TRUE(absl::IsOutOfRange(ms.status())) << huge << ": " << ms.status();
  }
  // Malformed stays malformed, however long.
  EXPECT_TRUE(absl::IsInvalidArgument(parseDurationMs("99999999999999999999x").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(parseDurationMs("99999999999999999999d-").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(parseDurationMs(std::string(100'000, '9')).status()));
  EXPECT_LT(parseDurationMs(std::string(100'000, '9')).status().message().size(), 200u);
}

TEST(DurationLimitTest, RangeErrorsNameTheValueAndTheRange) {
  auto week = parseDurationMsInRange("--timeout", "8d", 0, kMaxCommandTimeoutMs);
  ASSERT_FALSE(week.ok());
  std::string message(week.status().message());
  EXPECT_NE(message.find("--timeout"), std::string::npos) << message;
  EXPECT_NE(message.find("8d"), std::string::npos) << message;
  EXPECT_NE(message.find("7d"), std::string::npos) << message;
  EXPECT_EQ(*parseDurationMsInRange("--timeout", "7d", 0, kMaxCommandTimeoutMs),
            kMaxCommandTimeoutMs);
  auto junk = parseDurationMsInRange("--ttl", "soon", 0, kMaxTokenTtlMs);
  EXPECT_NE(std::string(junk.status().message()).find("--ttl"), std::string::npos);
  EXPECT_FALSE(parseDurationMsInRange("--ttl", "9999999999999h", 0, kMaxTokenTtlMs).ok());
  EXPECT_FALSE(checkDurationRange("x", -1, 0, 10).ok());
  EXPECT_TRUE(checkDurationRange("x", 10, 0, 10).ok());
  // Every ceiling fits the agent link's uint32 milliseconds.
  EXPECT_LT(kMaxCommandTimeoutMs, int64_t{UINT32_MAX});
  EXPECT_LT(kMaxKillGraceMs, int64_t{UINT32_MAX});
}

TEST(RateLimitedLogTest, OneLinePerIntervalCountingTheRest) {
  RateLimitedLog log(10'000);
  uint64_t skipped = 99;
  EXPECT_TRUE(log.allow(1'000, &skipped));
  EXPECT_EQ(skipped, 0u);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(log.allow(1'000 + i * 1000, &skipped));
  EXPECT_FALSE(log.allow(10'999, &skipped));
  EXPECT_TRUE(log.allow(11'000, &skipped));
  EXPECT_EQ(skipped, 6u);
  EXPECT_FALSE(log.allow(11'001, &skipped));
  EXPECT_TRUE(log.allow(50'000, &skipped));
  EXPECT_EQ(skipped, 1u);
}

// The CLI's event-stream parser keeps at most one line and one event in memory, each
// bounded: a server (or anything at --server) streaming a line without end is refused.
TEST(SseParserBoundTest, ALineOrAnEventPastTheBoundIsRefused) {
  std::vector<std::string> data;
  auto collect = [&](const cli::SseEvent& e) { data.push_back(e.data); };
  cli::SseParser ok(64);
  EXPECT_TRUE(ok.feed("data: hello\n\n", collect).ok());
  ASSERT_EQ(data, std::vector<std::string>{"hello"});

  cli::SseParser endless(64);
  absl::Status st;
  for (int i = 0; i < 10 && st.ok(); ++i) st = endless.feed(std::string(20, 'x'), collect);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_FALSE(endless.feed("\n\n", collect).ok());  // nothing more is taken

  cli::SseParser big_event(64);
  st = absl::OkStatus();
  for (int i = 0; i < 10 && st.ok(); ++i) st = big_event.feed("data: 0123456789\n", collect);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_EQ(data.size(), 1u);  // the oversized event was never delivered
}

}  // namespace
}  // namespace muster::common
