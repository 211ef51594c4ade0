// Bad input on the agent link against a real musterd: the server answers with a clear
// gRPC status, logs it, keeps serving, and persists nothing half-done.
#include <gtest/gtest.h>

#include <future>

#include "agent/link_client.h"
#include "muster/v1/agent.pb.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

class LinkAbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Musterd>(dir_);
    agent::ChannelOptions options;
    options.target = server_->grpcTarget();
    options.own_connection = true;
    channel_ = agent::makeChannel(options);
    muster::v1::EnrollRequest request;
    request.set_token(server_->enrollToken());
    request.set_agent_id("probe");
    auto response = agent::enroll(channel_, request, 10'000);
    ASSERT_TRUE(response.ok()) << response.status();
    credential_ = response->credential();
  }

  // Opens a stream, sends `messages`, returns the status the server ended it with.
  absl::Status exchange(const std::string& id, const std::string& credential,
                        std::vector<muster::v1::AgentMessage> messages) {
    auto closed = std::make_shared<std::promise<absl::Status>>();
    agent::LinkStream::Handlers handlers;
    handlers.on_message = [](const muster::v1::ServerMessage&) {};
    handlers.on_closed = [closed](const absl::Status& st) { closed->set_value(st); };
    auto future = closed->get_future();
    auto stream = agent::LinkStream::open(channel_, id, credential, handlers);
    for (auto& m : messages) stream->send(std::move(m));
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      stream->close();
      future.wait();
      return absl::DeadlineExceededError("server kept the stream open");
    }
    return future.get();
  }

  static muster::v1::AgentMessage hello(const std::string& id) {
    muster::v1::AgentMessage m;
    m.mutable_hello()->set_agent_id(id);
    m.mutable_hello()->set_version("probe");
    return m;
  }

  TempDir dir_;
  std::unique_ptr<Musterd> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string credential_;
};

TEST_F(LinkAbuseTest, UnknownCredentialIsUnauthenticated) {
  auto st = exchange("probe", "mst_agent_not-it", {hello("probe")});
  EXPECT_TRUE(absl::IsUnauthenticated(st)) << st;
  st = exchange("nobody", credential_, {hello("nobody")});
  EXPECT_TRUE(absl::IsUnauthenticated(st)) << st;
}

TEST_F(LinkAbuseTest, InvalidAgentIdIsRefused) {
  auto st = exchange("../../etc", credential_, {hello("../../etc")});
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
}

TEST_F(LinkAbuseTest, HelloForAnotherIdIsRefused) {
  auto st = exchange("probe", credential_, {hello("someone-else")});
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_EQ(server_->hostStatus("someone-else"), "");
}

TEST_F(LinkAbuseTest, MessageBeforeHelloIsRefused) {
  muster::v1::AgentMessage beat;
  beat.mutable_heartbeat();
  auto st = exchange("probe", credential_, {beat});
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
}

TEST_F(LinkAbuseTest, OversizedMessageIsRejectedAndNothingStored) {
  muster::v1::AgentMessage big;
  auto* out = big.mutable_output();
  out->set_command_id("01FAKE");
  out->set_stream(muster::v1::OUTPUT_STREAM_STDOUT);
  out->set_data(std::string(5 << 20, 'x'));
  auto st = exchange("probe", credential_, {hello("probe"), big});
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_TRUE(server_->process().running());
}

TEST_F(LinkAbuseTest, ResultForAnotherAgentsCommandIsPermissionDenied) {
  auto run = server_->run({"probe"}, "echo hi");
  std::string id(run.at("commands").as_array()[0].at("id").as_string());
  // Another enrolled agent claims it.
  muster::v1::EnrollRequest request;
  request.set_token(server_->enrollToken());
  request.set_agent_id("intruder");
  auto intruder = agent::enroll(channel_, request, 10'000);
  ASSERT_TRUE(intruder.ok());
  muster::v1::AgentMessage result;
  result.mutable_result()->set_command_id(id);
  result.mutable_result()->set_outcome(muster::v1::COMMAND_OUTCOME_SUCCEEDED);
  auto st = exchange("intruder", intruder->credential(), {hello("intruder"), result});
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_EQ(server_->commandState(id), "queued");
}

TEST_F(LinkAbuseTest, MalformedOutputIsInvalidArgument) {
  muster::v1::AgentMessage bad;
  bad.mutable_output()->set_command_id("x");  // no stream
  auto st = exchange("probe", credential_, {hello("probe"), bad});
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
}

}  // namespace
}  // namespace muster::itest
