// Unit tests of src/crypto/certs: the CA, server and client certificates musterd makes, the
// pin (certSha256) and the verdicts verifyServerChain gives an agent.
#include "crypto/certs.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

namespace muster::crypto {
namespace {

constexpr int64_t kNow = 1'700'000'000;
constexpr int64_t kDay = 86'400;

// absl::string_view (Debian's Abseil) and std::string_view alike.
template <typename Text>
bool contains(const Text& text, std::string_view needle) {
  return std::string_view(text.data(), text.size()).find(needle) != std::string_view::npos;
}

KeyAndCert mustCa(const std::string& cn = "Muster CA") {
  auto ca = createCa(cn, kNow, 3650);
  EXPECT_TRUE(ca.ok()) << ca.status();
  return ca.ok() ? *ca : KeyAndCert{};
}

KeyAndCert mustServer(const KeyAndCert& ca, const std::vector<std::string>& names) {
  auto cert = issueServerCert(ca, names, "", kNow, 90);
  EXPECT_TRUE(cert.ok()) << cert.status();
  return cert.ok() ? *cert : KeyAndCert{};
}

// A CSR for `subject_key` signed by `signing_key`: its signature cannot verify.
std::string csrSignedByAnotherKey() {
  auto key_a = createKeyAndCsr("a");
  auto key_b = createKeyAndCsr("b");
  EXPECT_TRUE(key_a.ok() && key_b.ok());
  auto read_key = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return key;
  };
  EVP_PKEY* subject = read_key(key_a->key_pem);
  EVP_PKEY* signer = read_key(key_b->key_pem);
  X509_REQ* req = X509_REQ_new();
  X509_REQ_set_version(req, 0);
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("liar"), -1, -1, 0);
  X509_REQ_set_pubkey(req, subject);
  X509_REQ_sign(req, signer, EVP_sha256());
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(out, req);
  char* data = nullptr;
  long n = BIO_get_mem_data(out, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(out);
  X509_REQ_free(req);
  EVP_PKEY_free(subject);
  EVP_PKEY_free(signer);
  return pem;
}

TEST(CertsTest, CreatesACaThatIsACa) {
  auto ca = mustCa("Test CA");
  auto info = inspectCert(ca.cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->subject_cn, "Test CA");
  EXPECT_EQ(info->issuer_cn, "Test CA");
  EXPECT_LE(info->not_before_s, kNow);
  EXPECT_EQ(info->not_after_s, kNow + 3650 * kDay);
  EXPECT_EQ(info->sha256_hex.size(), 64u);
}

TEST(CertsTest, IssuesAServerCertificateThatVerifiesForEachOfItsNames) {
  auto ca = mustCa();
  auto server = mustServer(ca, {"musterd.example", "127.0.0.1", "::1"});
  auto info = inspectCert(server.cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->is_ca);
  EXPECT_EQ(info->subject_cn, "musterd.example");
  EXPECT_EQ(info->issuer_cn, "Muster CA");
  EXPECT_EQ(info->names, (std::vector<std::string>{"musterd.example", "127.0.0.1", "::1"}));
  for (const char* host : {"musterd.example", "127.0.0.1", "::1", ""}) {
    EXPECT_TRUE(verifyServerChain(server.cert_pem, ca.cert_pem, host, kNow + kDay).ok()) << host;
  }
  // With the CA riding along in the chain, as musterd presents it.
  EXPECT_TRUE(
      verifyServerChain(server.cert_pem + ca.cert_pem, ca.cert_pem, "127.0.0.1", kNow).ok());
}

TEST(CertsTest, RenewalWithTheSameKeyKeepsTheKey) {
  auto ca = mustCa();
  auto first = mustServer(ca, {"localhost"});
  auto second = issueServerCert(ca, {"localhost"}, first.key_pem, kNow + kDay, 90);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->key_pem, first.key_pem);
  EXPECT_NE(inspectCert(second->cert_pem)->serial_hex, inspectCert(first.cert_pem)->serial_hex);
}

TEST(CertsTest, ServerCertificateNeedsANameAndTheCasOwnKey) {
  auto ca = mustCa();
  EXPECT_FALSE(issueServerCert(ca, {}, "", kNow, 90).ok());
  auto other = mustCa("Other");
  KeyAndCert mixed{other.key_pem, ca.cert_pem};
  auto issued = issueServerCert(mixed, {"localhost"}, "", kNow, 90);
  ASSERT_FALSE(issued.ok());
  EXPECT_TRUE(contains(issued.status().message(), "does not belong")) << issued.status();
}

TEST(CertsTest, VerifyRefusesAnotherCaWithAnActionableMessage) {
  auto ca = mustCa();
  auto other = mustCa("Muster CA");  // same name, another key: still not the same CA
  auto server = mustServer(ca, {"127.0.0.1"});
  auto st = verifyServerChain(server.cert_pem, other.cert_pem, "127.0.0.1", kNow);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_TRUE(contains(st.message(), "not signed by the CA")) << st;
  EXPECT_TRUE(contains(st.message(), "enroll again")) << st;
}

TEST(CertsTest, VerifyRefusesAnExpiredOrNotYetValidCertificate) {
  auto ca = mustCa();
  auto server = mustServer(ca, {"127.0.0.1"});
  auto expired = verifyServerChain(server.cert_pem, ca.cert_pem, "127.0.0.1", kNow + 91 * kDay);
  ASSERT_FALSE(expired.ok());
  EXPECT_TRUE(contains(expired.message(), "has expired")) << expired;
  EXPECT_TRUE(contains(expired.message(), "clocks")) << expired;
  auto early = verifyServerChain(server.cert_pem, ca.cert_pem, "127.0.0.1", kNow - kDay);
  ASSERT_FALSE(early.ok());
  EXPECT_TRUE(contains(early.message(), "not valid yet")) << early;
  // The day before it expires it is fine.
  EXPECT_TRUE(verifyServerChain(server.cert_pem, ca.cert_pem, "127.0.0.1", kNow + 89 * kDay).ok());
}

TEST(CertsTest, VerifyRefusesADnsNameTheCertificateDoesNotCarry) {
  auto ca = mustCa();
  auto server = mustServer(ca, {"musterd.example", "10.0.0.5"});
  auto st = verifyServerChain(server.cert_pem, ca.cert_pem, "other.example", kNow);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "not for 'other.example'")) << st;
  EXPECT_TRUE(contains(st.message(), "musterd.example, 10.0.0.5")) << st;
  EXPECT_TRUE(contains(st.message(), "--advertise other.example")) << st;
  // A wildcard-looking or suffix match is no match.
  EXPECT_FALSE(verifyServerChain(server.cert_pem, ca.cert_pem, "x.musterd.example", kNow).ok());
}

TEST(CertsTest, VerifyRefusesAnIpAddressTheCertificateDoesNotCarry) {
  auto ca = mustCa();
  // The DNS name "10.0.0.6" is not the IP address 10.0.0.6.
  auto server = mustServer(ca, {"musterd.example", "10.0.0.5"});
  auto st = verifyServerChain(server.cert_pem, ca.cert_pem, "10.0.0.6", kNow);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "not for '10.0.0.6'")) << st;
  EXPECT_TRUE(contains(st.message(), "--advertise 10.0.0.6")) << st;
  EXPECT_FALSE(verifyServerChain(server.cert_pem, ca.cert_pem, "::1", kNow).ok());
}

TEST(CertsTest, VerifySaysWhenThereIsNoCertificate) {
  auto ca = mustCa();
  auto st = verifyServerChain("", ca.cert_pem, "", kNow);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "no certificate")) << st;
  EXPECT_FALSE(verifyServerChain(mustServer(ca, {"a"}).cert_pem, "garbage", "", kNow).ok());
}

TEST(CertsTest, Sha256IsStableAndIsThePinOfThatCertificateOnly) {
  auto ca = mustCa();
  auto sha = certSha256(ca.cert_pem);
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(sha->size(), 64u);
  EXPECT_EQ(sha->find_first_not_of("0123456789abcdef"), std::string::npos) << *sha;
  EXPECT_EQ(*certSha256(ca.cert_pem), *sha);
  EXPECT_EQ(inspectCert(ca.cert_pem)->sha256_hex, *sha);
  // Of the DER: the PEM's surroundings (a file's comments, CRLF line ends) do not change it.
  std::string crlf;
  for (char c : ca.cert_pem) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  EXPECT_EQ(*certSha256("# musterd's CA\n" + crlf + "\n\n"), *sha);
  // The first certificate of a chain.
  EXPECT_EQ(*certSha256(ca.cert_pem + mustServer(ca, {"a"}).cert_pem), *sha);
  EXPECT_NE(*certSha256(mustCa().cert_pem), *sha);
  EXPECT_FALSE(certSha256("not a certificate").ok());
}

TEST(CertsTest, SplitsAChainInOrder) {
  auto ca = mustCa();
  auto server = mustServer(ca, {"a"});
  auto certs = splitPemCerts(server.cert_pem + "junk between\n" + ca.cert_pem);
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_EQ(certs->size(), 2u);
  EXPECT_EQ(*certSha256((*certs)[0]), *certSha256(server.cert_pem));
  EXPECT_EQ(*certSha256((*certs)[1]), *certSha256(ca.cert_pem));
  EXPECT_FALSE(splitPemCerts("").ok());
  EXPECT_FALSE(splitPemCerts(server.cert_pem.substr(0, server.cert_pem.size() / 2)).ok());
}

TEST(CertsTest, SignsAClientCsrForTheAgentWhateverItAskedFor) {
  auto ca = mustCa();
  auto csr = createKeyAndCsr("i-am-admin");
  ASSERT_TRUE(csr.ok()) << csr.status();
  EXPECT_TRUE(*csrMatchesKey(csr->cert_pem, csr->key_pem));
  EXPECT_FALSE(*csrMatchesKey(csr->cert_pem, createKeyAndCsr("x")->key_pem));
  auto cert = signClientCsr(ca, csr->cert_pem, "web-1", kNow, 30 * 86400);
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto info = inspectCert(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->subject_cn, "web-1");
  EXPECT_EQ(info->uri, "muster://agent/web-1");
  EXPECT_EQ(info->uri, agentUri("web-1"));
  EXPECT_FALSE(info->is_ca);
  EXPECT_TRUE(verifyServerChain(*cert, ca.cert_pem, "", kNow).ok());
}

TEST(CertsTest, RefusesACsrWhoseSignatureDoesNotVerify) {
  auto ca = mustCa();
  auto cert = signClientCsr(ca, csrSignedByAnotherKey(), "web-1", kNow, 30 * 86400);
  ASSERT_FALSE(cert.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(cert.status())) << cert.status();
  EXPECT_TRUE(contains(cert.status().message(), "signature does not verify")) << cert.status();
}

TEST(CertsTest, RefusesGarbageTruncatedAndOversizedCsrs) {
  auto ca = mustCa();
  auto csr = createKeyAndCsr("a");
  ASSERT_TRUE(csr.ok());
  for (const std::string& bad :
       {std::string(), std::string("garbage"), csr->cert_pem.substr(0, csr->cert_pem.size() / 2),
        std::string(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
        ca.cert_pem, csr->cert_pem + std::string(20000, 'x')}) {
    auto cert = signClientCsr(ca, bad, "web-1", kNow, 30 * 86400);
    EXPECT_FALSE(cert.ok()) << bad.substr(0, 80);
    EXPECT_TRUE(absl::IsInvalidArgument(cert.status())) << cert.status();
  }
}

TEST(CertsTest, InspectRefusesWhatIsNotACertificate) {
  for (const char* bad :
       {"", "garbage", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"}) {
    auto info = inspectCert(bad);
    ASSERT_FALSE(info.ok()) << bad;
    EXPECT_TRUE(contains(info.status().message(), "not a PEM certificate")) << info.status();
  }
}

}  // namespace
}  // namespace muster::crypto
