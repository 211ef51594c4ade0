// What a command costs on the wire: between a real musterd and the agent's link client, a
// recording TCP proxy sees one segment per message and no more. gRPC 1.51 on its own follows
// every message read from a stream with a WINDOW_UPDATE in a segment of its own (2 of the 5
// segments of a command round trip); scripts/patches/grpc-1.51.1-stream-window-update.patch
// removes them, and this test fails without it.
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "agent/link_client.h"
#include "muster/v1/agent.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/recording_proxy.h"

namespace muster::itest {
namespace {

// Messages from the server, waited for one at a time.
class Inbox {
 public:
  void push(const muster::v1::ServerMessage& m) {
    std::lock_guard lock(mu_);
    messages_.push_back(m);
    cv_.notify_all();
  }
  bool next(muster::v1::ServerMessage* out) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !messages_.empty(); })) {
      return false;
    }
    *out = messages_.front();
    messages_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<muster::v1::ServerMessage> messages_;
};

TEST(LinkFramesTest, ACommandRoundTripIsOneSegmentPerMessage) {
  TempDir dir;
  Musterd server(dir);
  const std::string target = server.grpcTarget();
  const int port = std::stoi(target.substr(target.rfind(':') + 1));

  agent::ChannelOptions direct;
  direct.target = target;
  direct.own_connection = true;
  direct.security.ca_pem = server.caPem();  // TLS, as agents run
  muster::v1::EnrollRequest request;
  request.set_token(server.enrollToken());
  request.set_agent_id("probe");
  auto enrolled = agent::enroll(agent::makeChannel(direct), request, 10'000);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();

  RecordingProxy proxy(port);
  agent::ChannelOptions proxied;
  proxied.target = proxy.target();
  proxied.own_connection = true;
  proxied.security.ca_pem = server.caPem();
  auto channel = agent::makeChannel(proxied);
  auto inbox = std::make_shared<Inbox>();
  agent::LinkStream::Handlers handlers;
  handlers.on_message = [inbox](const muster::v1::ServerMessage& m) { inbox->push(m); };
  handlers.on_closed = [](const absl::Status&) {};
  auto stream = agent::openStream(channel, "probe", enrolled->credential(), handlers);
  muster::v1::AgentMessage hello;
  hello.mutable_hello()->set_agent_id("probe");
  hello.mutable_hello()->set_version("probe");
  stream->send(hello);
  muster::v1::ServerMessage m;
  ASSERT_TRUE(inbox->next(&m));
  ASSERT_TRUE(m.has_welcome());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // settings and their acks

  constexpr int kCommands = 10;
  const uint64_t to_server_before = proxy.readsToServer();
  const uint64_t to_client_before = proxy.readsToClient();
  for (int i = 0; i < kCommands; ++i) {
    server.run({"probe"}, "true");
    ASSERT_TRUE(inbox->next(&m));
    ASSERT_TRUE(m.has_command()) << m.DebugString();
    muster::v1::AgentMessage result;
    result.mutable_result()->set_command_id(m.command().command_id());
    result.mutable_result()->set_outcome(muster::v1::COMMAND_OUTCOME_SUCCEEDED);
    result.mutable_result()->set_has_exit_code(true);
    stream->send(result);
    ASSERT_TRUE(inbox->next(&m));
    ASSERT_TRUE(m.has_result_ack()) << m.DebugString();
    // Apart in time, so that nothing of one round trip shares a segment with the next.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const uint64_t to_server = proxy.readsToServer() - to_server_before;
  const uint64_t to_client = proxy.readsToClient() - to_client_before;
  // Per command: the result one way, the command and its ack the other (window updates ride
  // along). Unpatched gRPC: at least 2 and 3.
  EXPECT_LE(to_server, kCommands + 2)
      << "segments agent -> server for " << kCommands << " commands";
  EXPECT_LE(to_client, 2 * kCommands + 2)
      << "segments server -> agent for " << kCommands << " commands";
  stream->close();
}

}  // namespace
}  // namespace muster::itest
