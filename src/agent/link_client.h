// The gRPC implementation of the agent's Link: one AgentLink.Connect stream as a gRPC callback
// reactor (no thread per stream, so the load generator can hold thousands), plus the Enroll
// call. gRPC headers stay in the .cc; callers see the wire messages only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/link.h"
#include "muster/v1/agent.pb.h"

namespace grpc {
class Channel;
class ChannelCredentials;
}  // namespace grpc

namespace muster::agent {

struct ChannelOptions {
  std::string target;  // host:port
  // A private TCP connection for this channel even when others go to the same target
  // (the load generator simulates many hosts in one process).
  bool own_connection = false;
  int keepalive_ms = 30'000;
  LinkSecurity security;  // TLS unless security.plaintext
  // TLS session cache shared by channels (resumption across reconnects); may be null.
  void* session_cache = nullptr;
  // Credentials from makeCredentials(security), reused by every channel made again for the
  // same security (a reconnect): its channels share one TLS context, so a reconnect neither
  // makes one nor parses the CA again. Null: made for this channel.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

std::shared_ptr<grpc::ChannelCredentials> makeCredentials(const LinkSecurity& security);
std::shared_ptr<grpc::Channel> makeChannel(const ChannelOptions& options);

absl::StatusOr<muster::v1::EnrollResponse> enroll(const std::shared_ptr<grpc::Channel>& channel,
                                                  const muster::v1::EnrollRequest& request,
                                                  int64_t deadline_ms);

// Opens one AgentLink.Connect stream on `channel` (the load generator opens thousands).
std::shared_ptr<LinkStream> openStream(const std::shared_ptr<grpc::Channel>& channel,
                                       const std::string& agent_id, const std::string& credential,
                                       LinkStream::Handlers handlers);

}  // namespace muster::agent
