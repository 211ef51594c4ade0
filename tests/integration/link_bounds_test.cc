// Bounds on the agent port against a real musterd: an agent that stops reading its stream
// (but keeps answering pings) is cut off, by its send queue or by a stuck write; an Enroll
// flood is refused with RESOURCE_EXHAUSTED instead of queueing; the server keeps serving.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "agent/link_client.h"
#include "muster/v1/agent.grpc.pb.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

// A link client that says Hello and then never reads: its stream window fills and the
// server's writes stall, while gRPC's transport still answers pings.
class DeafStream final
    : public grpc::ClientBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage> {
 public:
  DeafStream(muster::v1::AgentLink::Stub* stub, const std::string& id,
             const std::string& credential) {
    ctx_.AddMetadata("x-muster-agent-id", id);
    ctx_.AddMetadata("authorization", "Bearer " + credential);
    hello_.mutable_hello()->set_agent_id(id);
    hello_.mutable_hello()->set_version("deaf");
    stub->async()->Connect(&ctx_, this);
    StartWrite(&hello_);
    StartCall();
  }
  void OnWriteDone(bool) override {}
  void OnDone(const grpc::Status& status) override { done_.set_value(status); }
  // The status the server ended the stream with, or nullopt if it is still open.
  std::optional<grpc::Status> waitDone(std::chrono::seconds timeout) {
    if (future_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return future_.get();
  }
  void cancel() { ctx_.TryCancel(); }

 private:
  grpc::ClientContext ctx_;
  muster::v1::AgentMessage hello_;
  std::promise<grpc::Status> done_;
  std::future<grpc::Status> future_ = done_.get_future();
};

std::string metric(const Musterd& server, const std::string& line_prefix) {
  std::string text = server.get("/metrics").body;
  size_t at = text.find(line_prefix);
  if (at == std::string::npos) return "";
  size_t end = text.find('\n', at);
  return text.substr(at + line_prefix.size(), end - at - line_prefix.size());
}

class LinkBoundsTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> flags) {
    server_ = std::make_unique<Musterd>(dir_, std::move(flags));
    agent::ChannelOptions options;
    options.target = server_->grpcTarget();
    options.own_connection = true;
    options.security.plaintext = server_->plaintext();
    options.security.ca_pem = server_->caPem();
    channel_ = agent::makeChannel(options);
    stub_ = muster::v1::AgentLink::NewStub(channel_);
    muster::v1::EnrollRequest request;
    request.set_token(server_->enrollToken());
    request.set_agent_id("deaf");
    auto response = agent::enroll(channel_, request, 10'000);
    ASSERT_TRUE(response.ok()) << response.status();
    credential_ = response->credential();
  }
  // Commands of ~20 KB each until the server ends the stream or `max` were created.
  void flood(DeafStream& stream, int max) {
    std::string script = "true # " + std::string(20'000, 'x');
    for (int i = 0; i < max; ++i) {
      if (server_->hostStatus("deaf") != "online" && i > 0) return;
      auto r = server_->run({"deaf"}, script);
      if (first_command_.empty()) {
        first_command_ = std::string(r.at("commands").as_array()[0].at("id").as_string());
      }
    }
  }
  const std::string& firstCommand() const { return first_command_; }

  TempDir dir_;
  std::unique_ptr<Musterd> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<muster::v1::AgentLink::Stub> stub_;
  std::string credential_;
  std::string first_command_;
};

TEST_F(LinkBoundsTest, AgentThatStopsReadingIsCutOffAtItsSendQueue) {
  start({"--max-send-queue", "16", "--stuck-write-timeout", "0"});
  DeafStream stream(stub_.get(), "deaf", credential_);
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("deaf") == "online"; }));
  flood(stream, 200);
  // The server ends the stream (the peer, which reads nothing, cannot be told why: its
  // trailers would queue behind the data it does not read; the server logs the reason).
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("deaf") == "offline"; }))
      << server_->process().err();
  EXPECT_EQ(metric(*server_, "muster_limit_hits_total{limit=\"agent_send_queue\"} "), "1");
  EXPECT_NE(server_->process().err().find("is not reading its stream"), std::string::npos);
  EXPECT_EQ(metric(*server_, "muster_limit_hits_total{limit=\"agent_stuck_write\"} "), "0");
  stream.cancel();
  EXPECT_TRUE(stream.waitDone(std::chrono::seconds(10)).has_value());
  // The commands stay open for the agent's next stream.
  EXPECT_EQ(server_->command(firstCommand()).at("state").as_string(), "dispatched");
  EXPECT_EQ(server_->get("/healthz").status, 200);
}

TEST_F(LinkBoundsTest, StuckWriteCancelsTheStream) {
  start({"--stuck-write-timeout", "1s"});
  DeafStream stream(stub_.get(), "deaf", credential_);
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("deaf") == "online"; }));
  // Enough to fill the stream's flow-control window, far below the send queue's bound.
  std::string script = "true # " + std::string(20'000, 'x');
  for (int i = 0; i < 12; ++i) server_->run({"deaf"}, script);
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("deaf") == "offline"; }))
      << "a stuck write was never cancelled:\n"
      << server_->process().err();
  EXPECT_EQ(metric(*server_, "muster_limit_hits_total{limit=\"agent_stuck_write\"} "), "1");
  EXPECT_EQ(metric(*server_, "muster_limit_hits_total{limit=\"agent_send_queue\"} "), "0");
  stream.cancel();
  EXPECT_TRUE(stream.waitDone(std::chrono::seconds(10)).has_value());
}

TEST_F(LinkBoundsTest, EnrollFloodIsRefusedWithResourceExhausted) {
  start({"--max-pending-enrolls", "1"});
  std::string token = server_->enrollToken();
  constexpr int kCalls = 400;
  std::atomic<int> ok{0}, exhausted{0}, other{0};
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts(kCalls);
  std::vector<muster::v1::EnrollRequest> requests(kCalls);
  std::vector<muster::v1::EnrollResponse> responses(kCalls);
  std::atomic<int> pending{kCalls};
  std::promise<void> all_done;
  for (int i = 0; i < kCalls; ++i) {
    contexts[i] = std::make_unique<grpc::ClientContext>();
    contexts[i]->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    requests[i].set_token(token);
    requests[i].set_agent_id("flood-" + std::to_string(i));
    stub_->async()->Enroll(contexts[i].get(), &requests[i], &responses[i], [&](grpc::Status st) {
      if (st.ok()) {
        ok++;
      } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        exhausted++;
      } else {
        other++;
      }
      if (--pending == 0) all_done.set_value();
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_GT(exhausted.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(metric(*server_, "muster_limit_hits_total{limit=\"enroll_backlog\"} "),
            std::to_string(exhausted.load()));
  // Refused agents retry: the server still enrolls.
  muster::v1::EnrollRequest again;
  again.set_token(token);
  again.set_agent_id("after-flood");
  EXPECT_TRUE(agent::enroll(channel_, again, 10'000).ok());
}

}  // namespace
}  // namespace muster::itest
