// Bad input on the agent link against a real musterd: the server answers with a clear
// gRPC status, logs it, keeps serving, and persists nothing half-done.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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
    options.security.plaintext = server_->plaintext();
    options.security.ca_pem = server_->caPem();
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
    auto stream = agent::openStream(channel_, id, credential, handlers);
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

// The agent port never runs the process out of descriptors: past the ceiling connections are
// closed at once and counted, the server keeps serving, and takes agents again once
// descriptors free up (gRPC's own listener would have stopped for good at EMFILE).
TEST(DescriptorCeilingTest, RefusesPastTheCeilingAndRecovers) {
  TempDir dir;
  // 400 descriptors: the agent port stops at 300, leaving the rest to the store and HTTP.
  Musterd server(dir, {}, {"/usr/bin/prlimit", "--nofile=400:400", "--"});
  const int port = std::stoi(server.grpcTarget().substr(server.grpcTarget().rfind(':') + 1));
  std::vector<int> sockets;
  for (int i = 0; i < 450; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    sockets.push_back(fd);
  }
  auto refused = [&] {
    auto metrics = server.get("/metrics");
    auto at = metrics.body.find("\nmuster_agents_refused_total ");
    if (metrics.status != 200 || at == std::string::npos) return -1L;
    return std::stol(metrics.body.substr(at + 29));
  };
  EXPECT_TRUE(waitFor([&] { return refused() >= 100; }, std::chrono::seconds(20)))
      << "refused: " << refused();
  EXPECT_EQ(server.get("/healthz").status, 200);

  for (int fd : sockets) ::close(fd);
  // Descriptors free up as the server sees the connections close; agents get in again.
  agent::ChannelOptions options;
  options.target = server.grpcTarget();
  options.own_connection = true;
  options.security.plaintext = server.plaintext();
  options.security.ca_pem = server.caPem();
  std::string token = server.enrollToken();
  bool enrolled = waitFor(
      [&] {
        muster::v1::EnrollRequest request;
        request.set_token(token);
        request.set_agent_id("after-the-storm");
        request.set_attempt_id("after-the-storm-attempt");  // a retry is the same attempt
        return agent::enroll(agent::makeChannel(options), request, 2'000).ok();
      },
      std::chrono::seconds(30));
  EXPECT_TRUE(enrolled) << server.get("/metrics").body.substr(0, 200);
  EXPECT_NE(server.hostStatus("after-the-storm"), "");
}

// Extra agent addresses, IPv6 among them, are served by the same accept loop.
TEST(AgentPortTest, ServesEveryListenAddressIncludingIpv6) {
  TempDir dir;
  const int v6_port = freePort();
  Musterd server(dir, {"--grpc-listen", "[::1]:" + std::to_string(v6_port)});
  std::string token = server.enrollToken();
  for (const std::string& target :
       {server.grpcTarget(), std::string("ipv6:[::1]:") + std::to_string(v6_port)}) {
    agent::ChannelOptions options;
    options.target = target;
    options.own_connection = true;
    options.security.plaintext = server.plaintext();
    options.security.ca_pem = server.caPem();
    muster::v1::EnrollRequest request;
    request.set_token(token);
    request.set_agent_id(target.rfind("ipv6", 0) == 0 ? "over-v6" : "over-v4");
    auto response = agent::enroll(agent::makeChannel(options), request, 10'000);
    EXPECT_TRUE(response.ok()) << target << ": " << response.status();
  }
}

}  // namespace
}  // namespace muster::itest
