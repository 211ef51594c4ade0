// What every authenticated AgentLink call shares: the agent's metadata, its credential and
// client certificate checked against the core, and Status conversion. Included by the
// adapter's .cc files only (gRPC headers).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/statusor.h"
#include "server/core/control_plane.h"

namespace muster::server::grpcadapter {

grpc::Status toGrpc(const absl::Status& st);
std::string metadataValue(const grpc::CallbackServerContext* ctx, const char* key);
// The fingerprint of the call's verified client certificate ("" when none), refused when it
// names another agent or is outside its validity (see the .cc).
absl::StatusOr<std::string> clientCertificate(const grpc::CallbackServerContext* ctx,
                                              const std::string& agent_id, int64_t now_s);
// A call other than Connect: its agent id once metadata, credential and certificate are
// accepted. Never blocks.
absl::StatusOr<std::string> authenticateCall(const grpc::CallbackServerContext* ctx,
                                             ControlPlane& plane);

}  // namespace muster::server::grpcadapter
