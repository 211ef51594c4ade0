// AgentLink.UploadArtifact and DownloadArtifact over gRPC's callback API: each call is one
// core Transfer (server/core/artifact_service.h); its disk work runs on `io`, never on a gRPC
// thread, one step at a time, so a call reads (or writes) its next message only once the
// previous one is on disk (or read): flow control end to end. Internal to the adapter.
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/worker_pool.h"
#include "muster/v1/agent.grpc.pb.h"
#include "server/core/artifact_service.h"
#include "server/core/control_plane.h"

namespace muster::server::grpcadapter {

struct ArtifactRpcs {
  ControlPlane& plane;
  ArtifactService* artifacts;  // null: the RPCs answer UNIMPLEMENTED
  common::Executor& io;
};

grpc::ServerReadReactor<muster::v1::UploadRequest>* newUploadReactor(
    grpc::CallbackServerContext* ctx, muster::v1::ArtifactRef* response, const ArtifactRpcs& rpcs);
grpc::ServerWriteReactor<muster::v1::DownloadResponse>* newDownloadReactor(
    grpc::CallbackServerContext* ctx, const muster::v1::DownloadRequest* request,
    const ArtifactRpcs& rpcs);

}  // namespace muster::server::grpcadapter
