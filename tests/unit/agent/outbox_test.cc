// Agent outbox (journal, results, replay, crash recovery) and output capture.
#include "agent/outbox.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "agent/output_capture.h"
#include "common/clock.h"

namespace muster::agent {
namespace {

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-outbox-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto o = Outbox::open(dir_.string(), clock_);
    ASSERT_TRUE(o.ok());
    outbox_ = *std::move(o);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  muster::v1::Command command(const std::string& id) {
    muster::v1::Command c;
    c.set_command_id(id);
    c.mutable_exec()->add_argv("true");
    return c;
  }

  std::filesystem::path dir_;
  common::FakeClock clock_;
  std::unique_ptr<Outbox> outbox_;
};

TEST_F(OutboxTest, JournalRemembersEveryStageOfACommand) {
  EXPECT_EQ(outbox_->lookup("c1"), Outbox::Known::kNew);
  ASSERT_TRUE(outbox_->accept(command("c1")).ok());
  EXPECT_EQ(outbox_->lookup("c1"), Outbox::Known::kRunning);
  muster::v1::CommandResult r;
  r.set_command_id("c1");
  r.set_outcome(muster::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(outbox_->finish(r).ok());
  EXPECT_EQ(outbox_->lookup("c1"), Outbox::Known::kFinished);
  EXPECT_EQ(outbox_->unacked(), std::vector<std::string>{"c1"});
  ASSERT_TRUE(outbox_->markAcked("c1").ok());
  EXPECT_EQ(outbox_->lookup("c1"), Outbox::Known::kAcked);
  EXPECT_TRUE(outbox_->unacked().empty());
}

TEST_F(OutboxTest, InterruptedCommandIsReportedFailedAfterRestart) {
  ASSERT_TRUE(outbox_->accept(command("c1")).ok());
  auto recovered = outbox_->recoverInterrupted();
  ASSERT_EQ(recovered, std::vector<std::string>{"c1"});
  auto msgs = outbox_->replay("c1", true);
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(msgs.back().has_result());
  EXPECT_EQ(msgs.back().result().outcome(), muster::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_EQ(msgs.back().result().error(), "agent restarted while the command was running");
}

TEST_F(OutboxTest, UnsafeIdsAreRefused) {
  EXPECT_FALSE(Outbox::isSafeId(".."));
  EXPECT_FALSE(Outbox::isSafeId("a/b"));
  EXPECT_FALSE(Outbox::isSafeId(""));
  EXPECT_TRUE(Outbox::isSafeId("01JABCDEF"));
}

TEST_F(OutboxTest, CaptureKeepsHeadAndTailAndReplaysThemAtTheirOffsets) {
  ASSERT_TRUE(outbox_->accept(command("c1")).ok());
  OutputCapture capture(outbox_->dirFor("c1"), 100);  // 50 head + 50 tail per stream
  std::string all;
  for (int i = 0; i < 30; ++i) {
    std::string piece = std::string(10, static_cast<char>('a' + i % 26));
    all += piece;
    auto live = capture.append(1, piece);
    for (const auto& c : live) EXPECT_LT(c.offset, 50u);
  }
  auto tails = capture.finish();
  EXPECT_EQ(capture.total(1), 300u);
  EXPECT_TRUE(capture.truncated());
  ASSERT_EQ(tails.size(), 1u);
  EXPECT_EQ(tails[0].offset, 250u);
  EXPECT_EQ(tails[0].data, all.substr(250));
  auto msgs = outbox_->replay("c1", false, 16);
  std::string head, tail;
  for (const auto& m : msgs) {
    ASSERT_TRUE(m.has_output());
    if (m.output().offset() < 50)
      head += m.output().data();
    else
      tail += m.output().data();
  }
  EXPECT_EQ(head, all.substr(0, 50));
  EXPECT_EQ(tail, all.substr(250));
}

TEST_F(OutboxTest, SmallOutputIsNotTruncated) {
  ASSERT_TRUE(outbox_->accept(command("c1")).ok());
  OutputCapture capture(outbox_->dirFor("c1"), 100);
  capture.append(2, std::string(70, 'x'));
  capture.finish();
  EXPECT_FALSE(capture.truncated());
  EXPECT_EQ(capture.total(2), 70u);
}

}  // namespace
}  // namespace muster::agent
