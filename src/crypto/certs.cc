#include "crypto/certs.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"

namespace muster::crypto {
namespace {

template <auto Fn>
struct Free {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};
using Bio = std::unique_ptr<BIO, Free<BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Free<X509_free>>;
using Req = std::unique_ptr<X509_REQ, Free<X509_REQ_free>>;
using Store = std::unique_ptr<X509_STORE, Free<X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Free<X509_STORE_CTX_free>>;
using Stack = std::unique_ptr<STACK_OF(X509),
                              Free<[](STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }>>;

std::string sslError(std::string_view what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  return absl::StrCat(std::string(what), ": ", buf);
}

Bio memBio(std::string_view data) {
  return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

absl::StatusOr<Key> newKey() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return absl::InternalError(sslError("cannot make a P-256 key"));
  return key;
}

absl::StatusOr<Key> readKey(std::string_view pem) {
  Bio bio = memBio(pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError(sslError("not a PEM private key"));
  return key;
}

absl::StatusOr<Cert> readCert(std::string_view pem) {
  Bio bio = memBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return absl::InvalidArgumentError(sslError("not a PEM certificate"));
  return cert;
}

std::string keyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return bioString(bio.get());
}

std::string certPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return bioString(bio.get());
}

bool isIpAddress(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// A certificate with a random 128-bit serial, valid from a minute before `now_s` (clock
// skew) for `days`, subject CN `cn`, public key `key`.
absl::StatusOr<Cert> newCert(std::string_view cn, EVP_PKEY* key, int64_t now_s,
                             int64_t lifetime_s) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  std::unique_ptr<BIGNUM, Free<BN_free>> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  // Back-dated for clocks a little behind ours: a minute, or a tenth of a short lifetime.
  ASN1_TIME_set(X509_getm_notBefore(cert.get()),
                static_cast<time_t>(now_s - std::min<int64_t>(60, lifetime_s / 10)));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(now_s + lifetime_s));
  X509_NAME* name = X509_get_subject_name(cert.get());
  std::string cn_str(cn);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("Muster"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn_str.c_str()), -1, -1, 0);
  if (X509_set_pubkey(cert.get(), key) != 1) {
    return absl::InternalError(sslError("cannot set the public key"));
  }
  return cert;
}

absl::Status addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return absl::InternalError(sslError("cannot add extension " + value));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return absl::OkStatus();
}

absl::Status sign(X509* cert, X509* issuer, EVP_PKEY* issuer_key) {
  X509_set_issuer_name(cert, X509_get_subject_name(issuer));
  if (X509_sign(cert, issuer_key, EVP_sha256()) == 0) {
    return absl::InternalError(sslError("cannot sign the certificate"));
  }
  return absl::OkStatus();
}

std::string nameCn(X509_NAME* name) {
  char buf[256] = {0};
  if (X509_NAME_get_text_by_NID(name, NID_commonName, buf, sizeof buf) < 0) return "";
  return buf;
}

int64_t asn1Seconds(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string hex(const unsigned char* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

absl::StatusOr<std::pair<Cert, Key>> loadCa(const KeyAndCert& ca) {
  auto cert = readCert(ca.cert_pem);
  if (!cert.ok()) return cert.status();
  auto key = readKey(ca.key_pem);
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CA key does not belong to the CA certificate");
  }
  return std::pair<Cert, Key>(std::move(*cert), std::move(*key));
}

}  // namespace

std::string agentUri(std::string_view agent_id) {
  return absl::StrCat("muster://agent/", std::string(agent_id));
}

absl::StatusOr<KeyAndCert> createCa(std::string_view common_name, int64_t now_s, int days) {
  auto key = newKey();
  if (!key.ok()) return key.status();
  auto cert = newCert(common_name, key->get(), now_s, int64_t{days} * 86400);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (auto st = addExt(c, c, nid, value); !st.ok()) return st;
  }
  if (auto st = sign(c, c, key->get()); !st.ok()) return st;
  return KeyAndCert{keyPem(key->get()), certPem(c)};
}

absl::StatusOr<KeyAndCert> issueServerCert(const KeyAndCert& ca,
                                           const std::vector<std::string>& names,
                                           std::string_view key_pem, int64_t now_s, int days) {
  if (names.empty()) return absl::InvalidArgumentError("a server certificate needs a name");
  auto loaded = loadCa(ca);
  if (!loaded.ok()) return loaded.status();
  auto& [ca_cert, ca_key] = *loaded;
  absl::StatusOr<Key> key = key_pem.empty() ? newKey() : readKey(key_pem);
  if (!key.ok()) return key.status();
  auto cert = newCert(names.front(), key->get(), now_s, int64_t{days} * 86400);
  if (!cert.ok()) return cert.status();
  std::string san;
  for (const auto& name : names) {
    absl::StrAppend(&san, san.empty() ? "" : ",", isIpAddress(name) ? "IP:" : "DNS:", name);
  }
  X509* c = cert->get();
  for (auto [nid, value] : {std::pair{NID_basic_constraints, std::string("critical,CA:FALSE")},
                            std::pair{NID_key_usage, std::string("critical,digitalSignature")},
                            std::pair{NID_ext_key_usage, std::string("serverAuth")},
                            std::pair{NID_authority_key_identifier, std::string("keyid")},
                            std::pair{NID_subject_alt_name, san}}) {
    if (auto st = addExt(c, ca_cert.get(), nid, value); !st.ok()) return st;
  }
  if (auto st = sign(c, ca_cert.get(), ca_key.get()); !st.ok()) return st;
  return KeyAndCert{keyPem(key->get()), certPem(c)};
}

absl::StatusOr<KeyAndCert> createKeyAndCsr(std::string_view common_name) {
  auto key = newKey();
  if (!key.ok()) return key.status();
  Req req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  std::string cn(common_name);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key->get());
  if (X509_REQ_sign(req.get(), key->get(), EVP_sha256()) == 0) {
    return absl::InternalError(sslError("cannot sign the CSR"));
  }
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  return KeyAndCert{keyPem(key->get()), bioString(bio.get())};
}

absl::StatusOr<std::string> signClientCsr(const KeyAndCert& ca, std::string_view csr_pem,
                                          std::string_view agent_id, int64_t now_s,
                                          int64_t lifetime_s) {
  if (csr_pem.size() > 16384) return absl::InvalidArgumentError("CSR larger than 16 KiB");
  Bio bio = memBio(csr_pem);
  Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return absl::InvalidArgumentError(sslError("not a PEM certificate request"));
  Key pub(X509_REQ_get_pubkey(req.get()));
  if (!pub) return absl::InvalidArgumentError(sslError("the CSR has no usable public key"));
  if (EVP_PKEY_get_base_id(pub.get()) != EVP_PKEY_EC &&
      EVP_PKEY_get_base_id(pub.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("the CSR's key must be ECDSA or Ed25519");
  }
  if (X509_REQ_verify(req.get(), pub.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CSR's signature does not verify");
  }
  auto loaded = loadCa(ca);
  if (!loaded.ok()) return loaded.status();
  auto& [ca_cert, ca_key] = *loaded;
  auto cert = newCert(agent_id, pub.get(), now_s, lifetime_s);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  for (auto [nid, value] : {std::pair{NID_basic_constraints, std::string("critical,CA:FALSE")},
                            std::pair{NID_key_usage, std::string("critical,digitalSignature")},
                            std::pair{NID_ext_key_usage, std::string("clientAuth")},
                            std::pair{NID_authority_key_identifier, std::string("keyid")},
                            std::pair{NID_subject_alt_name, "URI:" + agentUri(agent_id)}}) {
    if (auto st = addExt(c, ca_cert.get(), nid, value); !st.ok()) return st;
  }
  if (auto st = sign(c, ca_cert.get(), ca_key.get()); !st.ok()) return st;
  return certPem(c);
}

absl::StatusOr<bool> csrMatchesKey(std::string_view csr_pem, std::string_view key_pem) {
  Bio bio = memBio(csr_pem);
  Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return absl::InvalidArgumentError(sslError("not a PEM certificate request"));
  auto key = readKey(key_pem);
  if (!key.ok()) return key.status();
  Key pub(X509_REQ_get_pubkey(req.get()));
  return pub && EVP_PKEY_eq(pub.get(), key->get()) == 1;
}

absl::StatusOr<bool> certMatchesKey(std::string_view cert_pem, std::string_view key_pem) {
  auto cert = readCert(cert_pem);
  if (!cert.ok()) return cert.status();
  auto key = readKey(key_pem);
  if (!key.ok()) return key.status();
  bool match = X509_check_private_key(cert->get(), key->get()) == 1;
  ERR_clear_error();
  return match;
}

absl::StatusOr<CertInfo> inspectCert(std::string_view pem) {
  auto cert = readCert(pem);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  CertInfo info;
  info.subject_cn = nameCn(X509_get_subject_name(c));
  info.issuer_cn = nameCn(X509_get_issuer_name(c));
  info.not_before_s = asn1Seconds(X509_get0_notBefore(c));
  info.not_after_s = asn1Seconds(X509_get0_notAfter(c));
  info.is_ca = X509_check_ca(c) != 0;
  std::unique_ptr<BIGNUM, Free<BN_free>> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), nullptr));
  if (bn) {
    char* h = BN_bn2hex(bn.get());
    info.serial_hex = h;
    OPENSSL_free(h);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(c, EVP_sha256(), md, &n);
  info.sha256_hex = hex(md, n);
  // SHA-256 of the DER SubjectPublicKeyInfo, base64: curl's --pinnedpubkey sha256//...
  // (X509_pubkey_digest would hash the key's bits only, not the whole structure.)
  unsigned char* spki = nullptr;
  int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(c), &spki);
  if (spki_len > 0 &&
      EVP_Digest(spki, static_cast<size_t>(spki_len), md, &n, EVP_sha256(), nullptr) == 1) {
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    int len = EVP_EncodeBlock(b64, md, static_cast<int>(n));
    info.spki_sha256_base64.assign(reinterpret_cast<char*>(b64), static_cast<size_t>(len));
  }
  OPENSSL_free(spki);
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(c, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type == GEN_DNS || gn->type == GEN_URI) {
      const ASN1_IA5STRING* s =
          gn->type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
      std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                        static_cast<size_t>(ASN1_STRING_length(s)));
      if (gn->type == GEN_DNS) {
        info.names.push_back(value);
      } else {
        info.uri = value;
      }
    } else if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = gn->d.iPAddress;
      char buf[INET6_ADDRSTRLEN] = {0};
      int len = ASN1_STRING_length(ip);
      if (len == 4 || len == 16) {
        inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), buf, sizeof buf);
        info.names.push_back(buf);
      }
    }
  }
  GENERAL_NAMES_free(sans);
  return info;
}

absl::StatusOr<std::vector<std::string>> splitPemCerts(std::string_view pem) {
  Bio bio = memBio(pem);
  std::vector<std::string> out;
  while (true) {
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    out.push_back(certPem(cert.get()));
  }
  ERR_clear_error();
  if (out.empty()) return absl::InvalidArgumentError("no PEM certificate found");
  return out;
}

absl::StatusOr<std::string> certSha256(std::string_view pem) {
  auto info = inspectCert(pem);
  if (!info.ok()) return info.status();
  return info->sha256_hex;
}

absl::Status verifyServerChain(std::string_view chain_pem, std::string_view ca_pem,
                               std::string_view host, int64_t now_s) {
  auto certs = splitPemCerts(chain_pem);
  if (!certs.ok()) return absl::InvalidArgumentError("the server sent no certificate");
  auto leaf = readCert(certs->front());
  auto ca = readCert(ca_pem);
  if (!leaf.ok()) return leaf.status();
  if (!ca.ok()) return ca.status();
  Store store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca->get());
  Stack untrusted(sk_X509_new_null());
  for (size_t i = 1; i < certs->size(); ++i) {
    auto c = readCert((*certs)[i]);
    if (c.ok()) sk_X509_push(untrusted.get(), c->release());
  }
  StoreCtx ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf->get(), untrusted.get());
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(now_s));
  std::string h(host);
  if (!h.empty()) {
    if (isIpAddress(h)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, h.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, h.c_str(), h.size());
    }
  }
  if (X509_verify_cert(ctx.get()) == 1) return absl::OkStatus();
  int err = X509_STORE_CTX_get_error(ctx.get());
  ERR_clear_error();
  auto info = inspectCert(certs->front());
  std::string names;
  if (info.ok()) {
    for (const auto& n : info->names) absl::StrAppend(&names, names.empty() ? "" : ", ", n);
  }
  switch (err) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return absl::FailedPreconditionError(absl::StrCat(
          "the server's certificate is not for '", h, "' (it names ", names,
          "): connect with one of those names, or start musterd with --advertise ", h));
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return absl::FailedPreconditionError(
          "the server's certificate has expired: check the clocks of both machines and "
          "musterd's certificate renewal");
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return absl::FailedPreconditionError(
          "the server's certificate is not valid yet: check this machine's clock");
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("the server's certificate is not signed by the CA this agent trusts (",
                       X509_verify_cert_error_string(err),
                       "): if musterd's CA was replaced, enroll again with a new token; otherwise "
                       "something between here and musterd is presenting its own certificate"));
  }
}

}  // namespace muster::crypto
