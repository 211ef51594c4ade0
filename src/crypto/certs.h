// X.509 for the agent link (OpenSSL, no gRPC): musterd's own CA, its server certificate,
// agents' keys and CSRs, client certificates, fingerprints (the CA pin) and verification
// with a reason a person can act on. Keys are ECDSA P-256; everything is PEM in and out.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace muster::crypto {

struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;  // a CSR for createKeyAndCsr
};

struct CertInfo {
  std::string subject_cn;
  std::string issuer_cn;
  int64_t not_before_s = 0;
  int64_t not_after_s = 0;
  std::string serial_hex;
  std::string sha256_hex;          // of the DER encoding: the pin of a CA
  std::string spki_sha256_base64;  // of the public key (curl --pinnedpubkey sha256//...)
  std::vector<std::string> names;  // DNS and IP subject alternative names
  std::string uri;                 // the URI SAN (agents: muster://agent/ID)
  bool is_ca = false;
};

// The URI SAN an agent's client certificate carries.
std::string agentUri(std::string_view agent_id);

// A self-signed CA valid `days` from `now_s` (seconds since the epoch).
absl::StatusOr<KeyAndCert> createCa(std::string_view common_name, int64_t now_s, int days);
// A server certificate for `names` (host names and IP addresses; the first is the CN),
// signed by `ca`. Reuses `key_pem` when given (a renewal keeps the key), else makes one.
absl::StatusOr<KeyAndCert> issueServerCert(const KeyAndCert& ca,
                                           const std::vector<std::string>& names,
                                           std::string_view key_pem, int64_t now_s, int days);
// A new key and a CSR whose CN is `common_name`.
absl::StatusOr<KeyAndCert> createKeyAndCsr(std::string_view common_name);
// Signs `csr_pem` (its signature must verify) for `agent_id`: CN and URI SAN name the
// agent whatever the CSR asked for; client-auth only; valid `lifetime_s` seconds from `now_s`.
// Returns the certificate's PEM.
absl::StatusOr<std::string> signClientCsr(const KeyAndCert& ca, std::string_view csr_pem,
                                          std::string_view agent_id, int64_t now_s,
                                          int64_t lifetime_s);
// The public key of a CSR and of a certificate are the same key.
absl::StatusOr<bool> csrMatchesKey(std::string_view csr_pem, std::string_view key_pem);

// The first certificate in `cert_pem` is for the private key `key_pem`.
absl::StatusOr<bool> certMatchesKey(std::string_view cert_pem, std::string_view key_pem);

// The first certificate in `pem`.
absl::StatusOr<CertInfo> inspectCert(std::string_view pem);
// Every certificate in `pem`, in order.
absl::StatusOr<std::vector<std::string>> splitPemCerts(std::string_view pem);
// Lower-case hex SHA-256 of the first certificate's DER encoding.
absl::StatusOr<std::string> certSha256(std::string_view pem);
// Checks that `chain_pem` (leaf first, intermediates after) is signed by `ca_pem`, is
// valid at `now_s` and names `host` (a DNS name or IP address; empty: not checked).
// The error says what failed and what to check.
absl::Status verifyServerChain(std::string_view chain_pem, std::string_view ca_pem,
                               std::string_view host, int64_t now_s);

}  // namespace muster::crypto
