// Installing an agent with one line: musterd serves the muster-agent binary it ships with
// and a shell script that fetches it (over TLS pinned to musterd's server key), checks its
// size and SHA-256, keeps the enrollment token in a 0600 file and starts the agent as a
// systemd service. `muster token create --enroll` prints the line:
//
//   curl -fsS --pinnedpubkey sha256//KEYPIN -k https://HOST:7080/install/agent.sh | sudo \
//     MUSTER_ENROLL_TOKEN='mst_enroll_...' sh
//
// -k because the host does not have musterd's CA yet: --pinnedpubkey is the check (curl
// refuses any other key before it sends anything), and the agent then pins the CA itself
// from the token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/server_identity.h"

namespace muster::server::http {

class AgentInstall {
 public:
  std::string binary_path;  // empty: nothing to serve (the routes answer 404 saying why)
  int agent_port = 7443;
  int http_port = 0;  // the REST port (0: as the caller's Host header says)
  // The name hosts reach musterd by, used when the operator called the API over loopback
  // (the first --advertise name, else this host's name).
  std::string public_name;
  std::shared_ptr<crypto::ServerIdentity> tls;  // null: plaintext (--insecure-plaintext)
  AgentInstall();

  bool available() const { return !binary_path.empty(); }
  // The binary's size and SHA-256, read on first use (and again when the file changes);
  // blocks: call from a worker. NOT_FOUND when it cannot be read.
  struct Fingerprint {
    uint64_t size = 0;
    std::string sha256;
  };
  absl::StatusOr<Fingerprint> fingerprint() const;
  // The shell script, for a caller that reached musterd as `host_header` (HOST[:PORT]).
  absl::StatusOr<std::string> script(std::string_view host_header) const;
  // The one-line command that runs it with `enroll_token` (and `agent_id`, if not empty).
  std::string command(std::string_view host_header, std::string_view enroll_token,
                      std::string_view agent_id = "") const;

 private:
  struct Cache;
  std::shared_ptr<Cache> cache_;  // the fingerprint, shared by copies
};

}  // namespace muster::server::http
