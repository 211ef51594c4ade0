// Fuzz target: PEM from the other end of the agent link. An agent reads the chain a server
// presents (splitPemCerts, inspectCert, certSha256 against its pin, verifyServerChain);
// musterd reads the CSR an agent sends at enrollment (signClientCsr with its CA,
// csrMatchesKey). Each input goes through all of them.
#include <string>

#include "crypto/certs.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using namespace muster;

constexpr int64_t kNow = 1'700'000'000;

struct Fixture {
  crypto::KeyAndCert ca;
  std::string server_pem;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    fuzz::quietLogs();
    auto ca = crypto::createCa("Fuzz CA", kNow - 86'400, 3650);
    MUSTER_FUZZ_CHECK(ca.ok());
    auto server = crypto::issueServerCert(*ca, {"127.0.0.1", "musterd.fuzz"}, "", kNow, 90);
    MUSTER_FUZZ_CHECK(server.ok());
    return Fixture{*ca, server->cert_pem};
  }();
  return f;
}

bool lowerHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = fixture();
  std::string_view pem(reinterpret_cast<const char*>(data), size);

  // What the agent does with a server's chain.
  auto info = crypto::inspectCert(pem);
  auto certs = crypto::splitPemCerts(pem);
  MUSTER_FUZZ_CHECK(info.ok() == certs.ok());  // both read the first certificate
  if (info.ok()) {
    MUSTER_FUZZ_CHECK(lowerHex64(info->sha256_hex));
    auto sha = crypto::certSha256(pem);
    MUSTER_FUZZ_CHECK(sha.ok() && *sha == info->sha256_hex);
    // The agent pins a certificate it took out of the chain: splitting must not change it.
    MUSTER_FUZZ_CHECK(!certs->empty());
    auto first = crypto::certSha256(certs->front());
    MUSTER_FUZZ_CHECK(first.ok() && *first == info->sha256_hex);
    for (const auto& cert : *certs) MUSTER_FUZZ_CHECK(crypto::inspectCert(cert).ok());
  }
  auto verdict = crypto::verifyServerChain(pem, f.ca.cert_pem, "127.0.0.1", kNow);
  if (verdict.ok()) MUSTER_FUZZ_CHECK(info.ok());
  // Fuzzed intermediates behind a good leaf, and a fuzzed CA (what STATE/ca.crt may hold).
  (void)crypto::verifyServerChain(f.server_pem + std::string(pem), f.ca.cert_pem, "musterd.fuzz",
                                  kNow);
  (void)crypto::verifyServerChain(f.server_pem, pem, "", kNow);

  // What musterd does with an agent's CSR.
  auto signed_cert = crypto::signClientCsr(f.ca, pem, "fuzz-agent", kNow, 86400);
  if (signed_cert.ok()) {
    auto issued = crypto::inspectCert(*signed_cert);
    MUSTER_FUZZ_CHECK(issued.ok());
    // The CA decides who the certificate names, never the CSR.
    MUSTER_FUZZ_CHECK(issued->subject_cn == "fuzz-agent");
    MUSTER_FUZZ_CHECK(issued->uri == crypto::agentUri("fuzz-agent"));
    MUSTER_FUZZ_CHECK(!issued->is_ca);
    MUSTER_FUZZ_CHECK(crypto::verifyServerChain(*signed_cert, f.ca.cert_pem, "", kNow).ok());
  } else {
    MUSTER_FUZZ_CHECK(absl::IsInvalidArgument(signed_cert.status()));
  }
  (void)crypto::csrMatchesKey(pem, f.ca.key_pem);
  return 0;
}
