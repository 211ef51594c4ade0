// ControlPlane::onAgentMessage / onStreamClosed: the agent link's protocol as every transport
// gets it from the core (Hello first and once, then the reports), with a real SQLite store.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/clock.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "store/sqlite/sqlite_store.h"
#include "tests/unit/server/fake_session.h"

namespace muster::server {
namespace {
using model::CommandState;
using testing::FakeSession;

class AgentMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-agent-message-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store = store::SqliteStore::open((dir_ / "muster.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    plane_ = std::make_unique<ControlPlane>(*store_, inline_, clock_, CoreConfig{});
    ASSERT_TRUE(plane_->start().ok());
    auto token = plane_->enrollment().createToken(1, 0, {}, "test");
    ASSERT_TRUE(token.ok());
    auto credential = plane_->enrollment().enroll({.token = token->secret, .agent_id = "web-1"});
    ASSERT_TRUE(credential.ok()) << credential.status();
    credential_ = *credential;
  }
  void TearDown() override {
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A stream that authenticated and has not said anything yet.
  std::shared_ptr<FakeSession> open(const std::string& sid = "s1") {
    auto s = std::make_shared<FakeSession>("web-1", sid);
    EXPECT_TRUE(plane_->openStream(s, credential_).ok());
    return s;
  }
  static HelloInfo hello(const std::string& id = "web-1") {
    HelloInfo h;
    h.agent_id = id;
    h.version = "test";
    return h;
  }
  std::string runOne() {
    CreateRunRequest req;
    req.host_ids = {"web-1"};
    req.exec.argv = {"true"};
    req.created_by = "test";
    auto r = plane_->commands().createRun(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->commands.at(0).id : "";
  }
  model::Command stored(const std::string& id) {
    EXPECT_TRUE(store_->flush().ok());
    auto c = store_->getCommand(id);
    EXPECT_TRUE(c.ok() && c->has_value());
    return c.ok() && c->has_value() ? **c : model::Command{};
  }
  static ResultMsg succeeded(const std::string& id) {
    ResultMsg m;
    m.result.command_id = id;
    m.result.state = CommandState::kSucceeded;
    m.result.exit_code = 0;
    return m;
  }
  model::HostStatus status() { return plane_->hosts().get("web-1")->status; }

  std::filesystem::path dir_;
  common::FakeClock clock_;
  common::InlineExecutor inline_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<ControlPlane> plane_;
  std::string credential_;
};

TEST_F(AgentMessageTest, MessageBeforeHelloIsRefused) {
  const std::string id = runOne();
  auto s = open();
  absl::Status st = plane_->onAgentMessage(s, HeartbeatMsg{});
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(st.message(), "the first message on the link must be Hello");
  // A result before Hello reaches nothing: the command is not ended, nothing is acked.
  st = plane_->onAgentMessage(s, succeeded(id));
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(stored(id).state, CommandState::kQueued);
  EXPECT_TRUE(s->sent<ResultAckMsg>().empty());
  EXPECT_TRUE(s->sent<WelcomeMsg>().empty());
  EXPECT_NE(status(), model::HostStatus::kOnline);
}

TEST_F(AgentMessageTest, HelloTwiceIsRefused) {
  auto s = open();
  ASSERT_TRUE(plane_->onAgentMessage(s, hello()).ok());
  EXPECT_EQ(status(), model::HostStatus::kOnline);
  absl::Status st = plane_->onAgentMessage(s, hello());
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(st.message(), "Hello sent twice on one stream");
  EXPECT_EQ(s->sent<WelcomeMsg>().size(), 1u);  // the second Hello got nothing
}

TEST_F(AgentMessageTest, ReportsAfterHelloReachTheCommandService) {
  const std::string id = runOne();
  auto s = open();
  ASSERT_TRUE(plane_->onAgentMessage(s, hello()).ok());
  ASSERT_EQ(s->sent<DispatchMsg>().size(), 1u);
  ASSERT_TRUE(plane_->onAgentMessage(s, AcceptedMsg{id, 0}).ok());
  EXPECT_EQ(plane_->commands().get(id)->state, CommandState::kRunning);
  OutputMsg out;
  out.chunk = {id, model::OutputStream::kStdout, 0, "hi\n"};
  ASSERT_TRUE(plane_->onAgentMessage(s, std::move(out)).ok());
  ASSERT_TRUE(plane_->onAgentMessage(s, succeeded(id)).ok());
  EXPECT_EQ(stored(id).state, CommandState::kSucceeded);
  auto acks = s->sent<ResultAckMsg>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].command_id, id);
  auto chunks = store_->readOutput(id, model::OutputStream::kStdout, 0, 1 << 20);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 1u);
  EXPECT_EQ(chunks->at(0).data, "hi\n");
}

TEST_F(AgentMessageTest, AStreamWhoseHelloWasRefusedTakesNoMoreMessages) {
  auto s = open();
  absl::Status st = plane_->onAgentMessage(s, hello("web-2"));
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_TRUE(absl::IsFailedPrecondition(plane_->onAgentMessage(s, HeartbeatMsg{})));
  EXPECT_TRUE(absl::IsFailedPrecondition(plane_->onAgentMessage(s, hello())));
  EXPECT_NE(status(), model::HostStatus::kOnline);
}

TEST_F(AgentMessageTest, OnlyAClosedLiveStreamTakesTheHostOffline) {
  auto live = open("live");
  ASSERT_TRUE(plane_->onAgentMessage(live, hello()).ok());
  auto silent = open("silent");  // never says Hello
  plane_->onStreamClosed(silent, absl::UnavailableError("stream closed"));
  EXPECT_EQ(status(), model::HostStatus::kOnline);
  plane_->onStreamClosed(live, absl::UnavailableError("stream closed"));
  EXPECT_EQ(status(), model::HostStatus::kOffline);
  EXPECT_EQ(plane_->hosts().connectedCount(), 0u);
}

TEST_F(AgentMessageTest, ResultOfAnotherHostsCommandEndsTheStream) {
  auto token = plane_->enrollment().createToken(1, 0, {}, "test");
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(plane_->enrollment().enroll({.token = token->secret, .agent_id = "web-2"}).ok());
  CreateRunRequest req;
  req.host_ids = {"web-2"};
  req.exec.argv = {"true"};
  auto theirs = plane_->commands().createRun(req);
  ASSERT_TRUE(theirs.ok()) << theirs.status();
  const std::string id = theirs->commands.at(0).id;
  auto s = open();
  ASSERT_TRUE(plane_->onAgentMessage(s, hello()).ok());
  EXPECT_TRUE(plane_->onAgentMessage(s, succeeded(id)).ok());  // the core ends the stream
  ASSERT_TRUE(s->closed());
  EXPECT_TRUE(absl::IsPermissionDenied(*s->closeStatus())) << *s->closeStatus();
  EXPECT_EQ(stored(id).state, CommandState::kQueued);
}

}  // namespace
}  // namespace muster::server
