// The agent's end of the link: one AgentLink.Connect stream as a gRPC callback reactor (no
// thread per stream, so the load generator can hold thousands), plus the Enroll call.
// gRPC headers stay in the .cc; callers see the wire messages only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "muster/v1/agent.pb.h"

namespace grpc {
class Channel;
}

namespace muster::agent {

struct ChannelOptions {
  std::string target;  // host:port
  // A private TCP connection for this channel even when others go to the same target
  // (the load generator simulates many hosts in one process).
  bool own_connection = false;
  int keepalive_ms = 30'000;
};

std::shared_ptr<grpc::Channel> makeChannel(const ChannelOptions& options);

absl::StatusOr<muster::v1::EnrollResponse> enroll(const std::shared_ptr<grpc::Channel>& channel,
                                                  const muster::v1::EnrollRequest& request,
                                                  int64_t deadline_ms);

class LinkStream {
 public:
  struct Handlers {
    // Run on gRPC threads: must not block.
    std::function<void(const muster::v1::ServerMessage&)> on_message;
    std::function<void(const absl::Status&)> on_closed;  // exactly once
  };

  static std::shared_ptr<LinkStream> open(const std::shared_ptr<grpc::Channel>& channel,
                                          const std::string& agent_id,
                                          const std::string& credential, Handlers handlers);
  virtual ~LinkStream() = default;
  // Queues a message; false once the stream is closing.
  virtual bool send(muster::v1::AgentMessage message) = 0;
  // Bytes queued but not yet written (flow control for output).
  virtual size_t queuedBytes() const = 0;
  // Ends the stream; on_closed follows.
  virtual void close() = 0;
};

}  // namespace muster::agent
