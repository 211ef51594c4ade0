// Conversions between wire messages (proto) and core types. Included by .cc files only.
#pragma once

#include "absl/status/statusor.h"
#include "model/artifact.h"
#include "muster/v1/agent.pb.h"
#include "server/core/session.h"

namespace muster::server::grpcadapter {

void toProto(const ServerEvent& event, muster::v1::ServerMessage* out);
void toProto(const model::Artifact& artifact, muster::v1::ArtifactRef* out);
// kUnspecified for 0 and for values this server does not know.
model::ArtifactPurpose fromProto(muster::v1::ArtifactPurpose purpose);
HelloInfo fromProto(const muster::v1::Hello& hello);
model::Metrics fromProto(const muster::v1::Metrics& metrics);
// False when the message is malformed (unknown stream or outcome).
bool fromProto(const muster::v1::CommandOutput& output, model::OutputChunk* out);
bool fromProto(const muster::v1::CommandResult& result, model::CommandResult* out);
// What the core's ControlPlane::onAgentMessage takes; INVALID_ARGUMENT for a malformed
// message or a kind this server does not know.
absl::StatusOr<AgentEvent> toAgentEvent(const muster::v1::AgentMessage& message);

}  // namespace muster::server::grpcadapter
