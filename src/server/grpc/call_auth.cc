// Authentication shared by the AgentLink calls.
#include "server/grpc/call_auth.h"

#include <grpc/grpc_security.h>

#include "absl/strings/str_cat.h"
#include "common/ids.h"
#include "crypto/certs.h"

namespace muster::server::grpcadapter {

grpc::Status toGrpc(const absl::Status& st) {
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

std::string metadataValue(const grpc::CallbackServerContext* ctx, const char* key) {
  auto range = ctx->client_metadata().equal_range(key);
  if (range.first == range.second) return {};
  return std::string(range.first->second.data(), range.first->second.size());
}

// The fingerprint (SHA-256 of the DER) of the client certificate of this call's connection
// (verified against musterd's CA by the full handshake that made its TLS session); "" when the
// agent presented none. A certificate made out to another agent than the call names is
// refused here: the identity of the certificate must be the agent id of every call. So is one
// outside its validity now: a resumed TLS session is not verified again, so a certificate that
// expired since its full handshake must not ride on it.
absl::StatusOr<std::string> clientCertificate(const grpc::CallbackServerContext* ctx,
                                              const std::string& agent_id, int64_t now_s) {
  auto auth = ctx->auth_context();
  if (!auth) return std::string();
  auto pems = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pems.empty()) return std::string();
  auto info = crypto::inspectCert(std::string_view(pems.front().data(), pems.front().size()));
  if (!info.ok()) return absl::UnauthenticatedError("unreadable client certificate");
  if (info->uri != crypto::agentUri(agent_id)) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the client certificate names '", info->subject_cn.substr(0, 140), "', not agent '",
        agent_id.substr(0, 140), "': each agent presents its own certificate"));
  }
  if (now_s < info->not_before_s || now_s >= info->not_after_s) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the client certificate of agent '", agent_id.substr(0, 140),
        "' is not valid now (expired, or not yet valid): enroll it again with a token from "
        "`muster token create --enroll --host ",
        agent_id.substr(0, 140), "`"));
  }
  return info->sha256_hex;
}

absl::StatusOr<std::string> authenticateCall(const grpc::CallbackServerContext* ctx,
                                             ControlPlane& plane) {
  if (!plane.accepting()) return absl::UnavailableError("server is shutting down; retry later");
  std::string agent_id = metadataValue(ctx, "x-muster-agent-id");
  std::string auth = metadataValue(ctx, "authorization");
  const std::string kBearer = "Bearer ";
  if (auth.rfind(kBearer, 0) != 0) {
    return absl::UnauthenticatedError("missing agent credential (authorization: Bearer ...)");
  }
  if (!common::isValidAgentId(agent_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid agent id '", agent_id.substr(0, 140),
                                                   "': ids match [A-Za-z0-9._-]{1,128}"));
  }
  auto cert = clientCertificate(ctx, agent_id, plane.clock().nowMs() / 1000);
  if (!cert.ok()) return cert.status();
  if (auto st = plane.hosts().authenticate(agent_id, auth.substr(kBearer.size()), *cert);
      !st.ok()) {
    return st;
  }
  return agent_id;
}

}  // namespace muster::server::grpcadapter
