// The agent runtime's transport port: enrollment and the link stream, as wire messages only.
// The gRPC implementation lives in link_client.cc; the runtime (agent.cc) knows no gRPC, so a
// second transport (HTTP long-poll) plugs in here.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "muster/v1/agent.pb.h"

namespace muster::agent {

// One open link stream to the server.
class LinkStream {
 public:
  struct Handlers {
    // Run on transport threads: must not block.
    std::function<void(const muster::v1::ServerMessage&)> on_message;
    std::function<void(const absl::Status&)> on_closed;  // exactly once
  };

  virtual ~LinkStream() = default;
  // Queues a message; false once the stream is closing.
  virtual bool send(muster::v1::AgentMessage message) = 0;
  // Bytes queued but not yet written (flow control for output and replays).
  virtual size_t queuedBytes() const = 0;
  // Ends the stream; on_closed follows.
  virtual void close() = 0;
};

// How the link is secured: TLS verified against `ca_pem` (the default), or plaintext on
// purpose. A client key and certificate are presented when given (mTLS).
struct LinkSecurity {
  bool plaintext = false;
  std::string ca_pem;
  std::string client_key_pem;
  std::string client_cert_pem;
};

// A way to reach the server.
class Link {
 public:
  virtual ~Link() = default;
  // Takes effect for the next connection (reset() drops the current one).
  virtual void secure(const LinkSecurity& security) { (void)security; }
  // A renewed client certificate, presented from the next connection on (reset()): the
  // stream up now keeps the one it was opened with.
  virtual void presentCertificate(const std::string& key_pem, const std::string& cert_pem) {
    (void)key_pem;
    (void)cert_pem;
  }
  // A client certificate for `csr_pem`, authenticated like open(). Blocks up to the deadline.
  virtual absl::StatusOr<std::string> renewCertificate(const std::string& agent_id,
                                                       const std::string& credential,
                                                       const std::string& csr_pem,
                                                       int64_t deadline_ms) {
    return absl::UnimplementedError("this link cannot renew certificates");
  }
  virtual absl::StatusOr<muster::v1::EnrollResponse> enroll(
      const muster::v1::EnrollRequest& request, int64_t deadline_ms) = 0;
  virtual std::shared_ptr<LinkStream> open(const std::string& agent_id,
                                           const std::string& credential,
                                           LinkStream::Handlers handlers) = 0;
  // Drops the connection, so that the next open() dials afresh (after a stream ended: the
  // old connection would reconnect on the transport's own schedule, not our backoff's).
  virtual void reset() = 0;
};

// The gRPC link to `target` (HOST:PORT).
std::unique_ptr<Link> makeGrpcLink(const std::string& target);

}  // namespace muster::agent
