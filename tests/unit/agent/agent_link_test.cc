// The agent runtime over its Link port, with a fake link instead of gRPC: what it sends on a
// new stream, and that a transport callback firing after the Agent is gone runs nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/agent.h"
#include "agent/link.h"
#include "common/clock.h"
#include "muster/v1/agent.pb.h"

namespace muster::agent {
namespace {

// What the fake link saw, shared with the test (it outlives the Agent).
struct Wire {
  std::mutex mu;
  std::vector<LinkStream::Handlers> handlers;  // one per stream opened
  std::vector<muster::v1::AgentMessage> sent;
  size_t streams() {
    std::lock_guard lock(mu);
    return handlers.size();
  }
};

class FakeStream final : public LinkStream {
 public:
  explicit FakeStream(std::shared_ptr<Wire> wire) : wire_(std::move(wire)) {}
  bool send(muster::v1::AgentMessage message) override {
    std::lock_guard lock(wire_->mu);
    wire_->sent.push_back(std::move(message));
    return true;
  }
  size_t queuedBytes() const override { return 0; }
  void close() override {}  // the test decides when on_closed fires

 private:
  std::shared_ptr<Wire> wire_;
};

class FakeLink final : public Link {
 public:
  explicit FakeLink(std::shared_ptr<Wire> wire) : wire_(std::move(wire)) {}
  absl::StatusOr<muster::v1::EnrollResponse> enroll(const muster::v1::EnrollRequest& request,
                                                    int64_t) override {
    muster::v1::EnrollResponse r;
    r.set_agent_id(request.agent_id());
    r.set_credential("mst_agent_fake");
    return r;
  }
  std::shared_ptr<LinkStream> open(const std::string&, const std::string&,
                                   LinkStream::Handlers handlers) override {
    std::lock_guard lock(wire_->mu);
    wire_->handlers.push_back(std::move(handlers));
    return std::make_shared<FakeStream>(wire_);
  }
  void reset() override {}

 private:
  std::shared_ptr<Wire> wire_;
};

class AgentLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-agent-link-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Agent> makeAgent() {
    AgentConfig config;
    config.state_dir = dir_.string();
    config.enroll_token = "mst_enroll_fake";
    config.id = "fake-1";
    config.flush_timeout_ms = 100;
    config.insecure_plaintext = true;  // a fake link in memory: nothing to secure
    auto agent =
        Agent::create(config, common::SystemClock::instance(), std::make_unique<FakeLink>(wire_));
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? *std::move(agent) : nullptr;
  }
  bool waitFor(const std::function<bool()>& condition) {
    for (int i = 0; i < 500; ++i) {
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  }

  std::filesystem::path dir_;
  std::shared_ptr<Wire> wire_ = std::make_shared<Wire>();
};

TEST_F(AgentLinkTest, EnrollsThroughTheLinkAndSaysHelloFirst) {
  auto agent = makeAgent();
  ASSERT_TRUE(agent);
  std::thread loop([&] { EXPECT_TRUE(agent->run().ok()); });
  // The stream opens before its first message is sent: wait for both.
  ASSERT_TRUE(waitFor([&] {
    if (wire_->streams() != 1) return false;
    std::lock_guard lock(wire_->mu);
    return !wire_->sent.empty();
  }));
  {
    std::lock_guard lock(wire_->mu);
    ASSERT_FALSE(wire_->sent.empty());
    EXPECT_TRUE(wire_->sent[0].has_hello());
    EXPECT_EQ(wire_->sent[0].hello().agent_id(), "fake-1");
  }
  agent->requestStop();
  loop.join();
}

TEST_F(AgentLinkTest, CallbacksAfterTheAgentIsGoneRunNothing) {
  auto agent = makeAgent();
  ASSERT_TRUE(agent);
  std::thread loop([&] { EXPECT_TRUE(agent->run().ok()); });
  ASSERT_TRUE(waitFor([&] { return wire_->streams() == 1; }));
  agent->requestStop();
  loop.join();
  agent.reset();
  // The transport delivers late: a message and the stream's end, after ~Agent. Without the
  // mailbox these would post into freed memory (ASan: heap-use-after-free).
  LinkStream::Handlers h;
  {
    std::lock_guard lock(wire_->mu);
    h = wire_->handlers[0];
  }
  muster::v1::ServerMessage welcome;
  welcome.mutable_welcome()->set_session_id("s");
  h.on_message(welcome);
  h.on_closed(absl::UnavailableError("late"));
  SUCCEED();
}

}  // namespace
}  // namespace muster::agent
