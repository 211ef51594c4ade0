// The audit log in the core: link events from enrollment, stream refusals and decommission,
// and the janitor sweeping old events (real SQLite store, FakeClock).
#include "server/core/audit.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/duration.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "server/core/janitor.h"
#include "store/sqlite/sqlite_store.h"
#include "tests/unit/server/fake_session.h"

namespace muster::server {
namespace {

using common::kDayMs;

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-audit-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store = store::SqliteStore::open((dir_ / "muster.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    config_.events_retention_ms = 90 * kDayMs;
    plane_ = std::make_unique<ControlPlane>(*store_, inline_, clock_, config_);
    ASSERT_TRUE(plane_->start().ok());
  }
  void TearDown() override {
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Every stored event, oldest first.
  std::vector<model::Event> events(model::EventQuery q = {}) {
    EXPECT_TRUE(store_->flush().ok());
    q.limit = 1000;
    auto page = store_->listEvents(q);
    EXPECT_TRUE(page.ok()) << page.status();
    std::vector<model::Event> out = page.ok() ? *page : std::vector<model::Event>{};
    std::reverse(out.begin(), out.end());
    return out;
  }
  std::vector<std::string> kinds(const std::vector<model::Event>& list) {
    std::vector<std::string> out;
    for (const auto& e : list) out.push_back(e.kind);
    return out;
  }
  absl::StatusOr<std::string> enroll(const std::string& id, const std::string& token,
                                     const std::string& current = "",
                                     const std::string& source = "ipv4:10.0.0.5") {
    return plane_->enrollment().enroll(EnrollRequest{.token = token,
                                                     .agent_id = id,
                                                     .facts = {},
                                                     .labels = {},
                                                     .current_credential = current,
                                                     .attempt_id = "",
                                                     .source = source});
  }
  std::string newToken(const std::string& host = "") {
    auto t = plane_->enrollment().createToken(1, host.empty() ? 0 : 3'600'000, {}, "admin", host);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->secret : "";
  }

  std::filesystem::path dir_;
  common::FakeClock clock_;
  common::InlineExecutor inline_;
  CoreConfig config_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<ControlPlane> plane_;
};

TEST_F(AuditTest, EnrollmentsAreRecordedByTheWayTheIdWasTaken) {
  auto first = enroll("web-1", newToken());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(enroll("web-1", newToken("web-1")).ok());  // re-imaged
  auto rotated = enroll("web-1", newToken("web-1"));     // bound again: re-enrolled
  ASSERT_TRUE(rotated.ok());
  ASSERT_TRUE(enroll("web-1", newToken(), *rotated).ok());  // holds the credential
  auto list = events();
  EXPECT_EQ(kinds(list), (std::vector<std::string>{"link.enrolled", "link.reenrolled",
                                                   "link.reenrolled", "link.credential_rotated"}));
  for (const auto& e : list) {
    EXPECT_EQ(e.actor, "web-1");
    EXPECT_EQ(e.host_id, "web-1");
    EXPECT_EQ(e.source, "ipv4:10.0.0.5");
    EXPECT_EQ(e.result, "ok");
    EXPECT_FALSE(e.detail.at("token_id").empty());
  }
}

TEST_F(AuditTest, RefusedEnrollmentsCarryTheReason) {
  ASSERT_TRUE(enroll("web-1", newToken()).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(enroll("web-1", newToken(), "", "ipv4:10.0.0.6").status()));
  EXPECT_TRUE(
      absl::IsUnauthenticated(enroll("web-2", "mst_enroll_nope", "", "ipv4:10.0.0.7").status()));
  EXPECT_TRUE(
      absl::IsPermissionDenied(enroll("web-3", newToken("web-9"), "", "ipv4:10.0.0.8").status()));
  auto refused = events(model::EventQuery{.kind = "link.refused"});
  ASSERT_EQ(refused.size(), 3u);
  EXPECT_EQ(refused[0].result, "already_exists");
  EXPECT_EQ(refused[0].target, "web-1");
  EXPECT_NE(refused[0].detail.at("message").find("already enrolled"), std::string::npos);
  EXPECT_EQ(refused[1].result, "unauthenticated");
  EXPECT_EQ(refused[2].result, "permission_denied");
  EXPECT_EQ(refused[2].source, "ipv4:10.0.0.8");
}

TEST_F(AuditTest, RefusalsFromOneSourceAreRateLimitedAndCounted) {
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(enroll("web-1", "mst_enroll_nope").ok());
  EXPECT_EQ(events(model::EventQuery{.kind = "link.refused"}).size(), 1u);
  clock_.advanceMs(10'000);
  EXPECT_FALSE(enroll("web-1", "mst_enroll_nope").ok());
  auto refused = events(model::EventQuery{.kind = "link.refused"});
  ASSERT_EQ(refused.size(), 2u);
  EXPECT_EQ(refused[1].detail.at("suppressed"), "4");
}

TEST_F(AuditTest, RevocationAndRefusedStreamsAreLinkEvents) {
  auto credential = enroll("web-1", newToken());
  ASSERT_TRUE(credential.ok());
  ASSERT_TRUE(
      plane_->decommission("web-1", Actor{.name = "alice", .id = "tok1", .source = "1.2.3.4:5"})
          .ok());
  auto stream = std::make_shared<testing::FakeSession>("web-1", "s1");
  EXPECT_FALSE(plane_->openStream(stream, *credential).ok());
  auto link = events(model::EventQuery{.kind = "link"});
  ASSERT_EQ(kinds(link),
            (std::vector<std::string>{"link.enrolled", "link.revoked", "link.refused"}));
  EXPECT_EQ(link[1].actor, "alice");
  EXPECT_EQ(link[1].actor_id, "tok1");
  EXPECT_EQ(link[1].host_id, "web-1");
  EXPECT_EQ(link[2].result, "permission_denied");
  EXPECT_EQ(link[2].detail.at("stage"), "stream");
}

TEST_F(AuditTest, CertificateIssuedIsRecordedForTheTlsWork) {
  plane_->audit().certificateIssued("web-1", "ipv4:10.0.0.5", "0a1b", "ff00", 1'800'000'000'000);
  auto list = events(model::EventQuery{.kind = "link.certificate_issued"});
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].target, "0a1b");
  EXPECT_EQ(list[0].host_id, "web-1");
  EXPECT_EQ(list[0].detail.at("not_after_ms"), "1800000000000");
}

TEST_F(AuditTest, IdsFollowRecordingOrderAndFollowersSeeTheSameOrder) {
  std::vector<std::string> seen;
  uint64_t token = plane_->audit().subscribe([&](const model::Event& e) { seen.push_back(e.id); });
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(plane_->audit().record(AuditRecord{.kind = "api.token.create",
                                                     .actor = {},
                                                     .target = std::to_string(i),
                                                     .host_id = "",
                                                     .result = "201",
                                                     .detail = {}}));
  }
  plane_->audit().unsubscribe(token);
  EXPECT_EQ(seen, ids);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  auto stored = events();
  ASSERT_EQ(stored.size(), 50u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(stored[i].id, ids[i]);
  EXPECT_EQ(plane_->audit().recordedByFamily().at("api.token"), 50u);
}

TEST_F(AuditTest, AFullStoreBacklogDropsEventsWithoutFailingTheCaller) {
  Audit audit(*store_, clock_, /*max_store_backlog=*/0);
  EXPECT_EQ(audit.record(AuditRecord{.kind = "api.host.delete",
                                     .actor = {},
                                     .target = "x",
                                     .host_id = "",
                                     .result = "200",
                                     .detail = {}}),
            "");
  EXPECT_EQ(audit.dropped(), 1u);
  EXPECT_TRUE(events().empty());
}

void recordAt(Audit& audit, common::FakeClock& clock, int64_t at_ms, const std::string& target) {
  clock.setMs(at_ms);
  audit.record(AuditRecord{.kind = "api.command.create",
                           .actor = {},
                           .target = target,
                           .host_id = "",
                           .result = "201",
                           .detail = {}});
}

TEST_F(AuditTest, JanitorSweepsOldEventsInBatchesAndKeepsNewOnes) {
  const int64_t now = 1'800'000'000'000;
  for (int i = 0; i < 2500; ++i) recordAt(plane_->audit(), clock_, now - 100 * kDayMs + i, "old");
  for (int i = 0; i < 10; ++i) recordAt(plane_->audit(), clock_, now - 89 * kDayMs + i, "new");
  clock_.setMs(now);
  auto results = plane_->janitor().sweepNow();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].task, "events");
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].swept, 2500);
  EXPECT_EQ(plane_->janitor().swept("events"), 2500u);
  auto left = events();
  ASSERT_EQ(left.size(), 10u);
  for (const auto& e : left) EXPECT_EQ(e.target, "new");
}

TEST_F(AuditTest, JanitorBatchesAreBoundedAndRetentionZeroKeepsAll) {
  common::FakeClock clock(1'000 * kDayMs);
  Janitor janitor(clock);
  std::vector<int64_t> batch_sizes;
  int64_t left = 2345;
  janitor.add(SweepTask{.name = "things",
                        .retention_ms = kDayMs,
                        .sweep_batch = [&](int64_t cutoff, int64_t max) -> absl::StatusOr<int64_t> {
                          EXPECT_EQ(cutoff, 999 * kDayMs);
                          batch_sizes.push_back(max);
                          int64_t n = std::min(left, max);
                          left -= n;
                          return n;
                        },
                        .batch_rows = 1000});
  janitor.add(SweepTask{.name = "forever",
                        .retention_ms = 0,
                        .sweep_batch = [](int64_t, int64_t) -> absl::StatusOr<int64_t> {
                          ADD_FAILURE() << "a task with retention 0 must not sweep";
                          return 0;
                        },
                        .batch_rows = 1000});
  auto results = janitor.sweepNow();
  EXPECT_EQ(batch_sizes, (std::vector<int64_t>{1000, 1000, 1000}));
  EXPECT_EQ(results[0].swept, 2345);
  EXPECT_EQ(results[1].swept, 0);
}

TEST_F(AuditTest, JanitorTickRunsOncePerInterval) {
  common::FakeClock clock(0);
  common::InlineExecutor executor;
  Janitor janitor(clock, /*interval_ms=*/3'600'000);
  int sweeps = 0;
  janitor.add(SweepTask{.name = "events",
                        .retention_ms = kDayMs,
                        .sweep_batch = [&](int64_t, int64_t) -> absl::StatusOr<int64_t> {
                          ++sweeps;
                          return 0;
                        },
                        .batch_rows = 1000});
  janitor.tick();  // no executor yet: nothing
  EXPECT_EQ(sweeps, 0);
  janitor.setExecutor(&executor);
  janitor.tick();  // the first at once
  EXPECT_EQ(sweeps, 1);
  clock.advanceMs(3'599'999);
  janitor.tick();
  EXPECT_EQ(sweeps, 1);
  clock.advanceMs(1);
  janitor.tick();
  EXPECT_EQ(sweeps, 2);
  janitor.stop();
  clock.advanceMs(3'600'000);
  janitor.tick();
  EXPECT_EQ(sweeps, 2);
}

}  // namespace
}  // namespace muster::server
