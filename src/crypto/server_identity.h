// musterd's TLS identity: its CA and server certificate, kept in DATA/tls/ or given by the
// operator (--tls-cert/--tls-key/--tls-ca). Readers take a consistent snapshot (key, chain
// and CA together); renewal swaps in a new snapshot, so connections already up keep theirs
// and new handshakes get the new certificate. No gRPC or Beast here: the adapters turn a
// snapshot into their own credentials.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "crypto/certs.h"

namespace muster::crypto {

struct TlsMaterial {
  std::string key_pem;
  std::string chain_pem;  // the server certificate, then the CA (agents fetch it from here)
  std::string ca_pem;
  std::string ca_sha256;  // the pin enrollment tokens carry
  int64_t not_after_s = 0;
  // The server key's pin (SHA-256 of its public key, base64), for curl --pinnedpubkey in the
  // install one-liner; stable across renewals, which keep the key.
  std::string key_pin;
  uint64_t generation = 0;  // grows with every renewal or reload
};

class ServerIdentity {
 public:
  struct Options {
    std::string dir;                 // DATA/tls: created with mode 0700
    std::vector<std::string> names;  // SANs of a certificate musterd makes itself
    // Given by the operator: musterd then makes nothing and reloads these files when they
    // change. ca_key_file (optional) lets it sign agents' client certificates.
    std::string cert_file, key_file, ca_file, ca_key_file;
    int ca_days = 3650;
    int server_cert_days = 90;
    int renew_before_days = 30;  // renewed when less than this is left
  };

  static absl::StatusOr<std::unique_ptr<ServerIdentity>> open(const Options& options,
                                                              const common::Clock& clock);

  std::shared_ptr<const TlsMaterial> current() const;
  // True when musterd holds the CA key (its own CA, or --tls-ca-key).
  bool canSignClients() const { return !ca_.key_pem.empty(); }
  // A client certificate for `agent_id` from the agent's CSR.
  absl::StatusOr<std::string> signClient(std::string_view csr_pem, std::string_view agent_id,
                                         int64_t lifetime_s) const;
  // Renews the server certificate when it is due (own CA) or reloads the operator's files
  // when they changed. Returns true when a new snapshot was installed.
  absl::StatusOr<bool> refresh();
  // The key that encrypts TLS session tickets (80 bytes), kept in DIR/session-ticket.key so
  // that agents resume their sessions after musterd restarts instead of each making a full
  // handshake. Made afresh at start-up when missing or older than kTicketKeyDays: tickets
  // live that long, and a key is not used for longer.
  const std::string& sessionTicketKey() const { return ticket_key_; }
  static constexpr int kTicketKeyBytes = 80;
  static constexpr int kTicketKeyDays = 7;

 private:
  ServerIdentity(Options options, const common::Clock& clock)
      : options_(std::move(options)), clock_(clock) {}
  absl::Status loadOwn();
  absl::Status loadGiven();
  absl::Status install(std::string key_pem, std::string cert_pem);
  absl::Status loadTicketKey();
  int64_t nowS() const { return clock_.nowMs() / 1000; }

  const Options options_;
  const common::Clock& clock_;
  KeyAndCert ca_;                  // key empty unless musterd may sign
  std::string given_fingerprint_;  // operator's files as last loaded (content hash)
  std::string ticket_key_;
  mutable std::mutex mu_;
  std::shared_ptr<const TlsMaterial> current_;
  uint64_t generation_ = 0;
};

}  // namespace muster::crypto
