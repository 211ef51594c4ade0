#include "crypto/server_identity.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "crypto/secrets.h"

namespace muster::crypto {
namespace {

absl::StatusOr<std::string> readNamed(const std::string& flag, const std::string& path) {
  auto data = common::readFile(path);
  if (!data.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", data.status().message()));
  }
  return data;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerIdentity>> ServerIdentity::open(const Options& options,
                                                                     const common::Clock& clock) {
  std::unique_ptr<ServerIdentity> id(new ServerIdentity(options, clock));
  bool given = !options.cert_file.empty() || !options.key_file.empty();
  if (given && (options.cert_file.empty() || options.key_file.empty() || options.ca_file.empty())) {
    return absl::InvalidArgumentError(
        "--tls-cert, --tls-key and --tls-ca go together (the CA is what agents pin)");
  }
  absl::Status st = given ? id->loadGiven() : id->loadOwn();
  if (!st.ok()) return st;
  if (st = id->loadTicketKey(); !st.ok()) return st;
  return id;
}

absl::Status ServerIdentity::loadTicketKey() {
  if (options_.dir.empty()) {  // nowhere to keep it: this process's tickets only
    ticket_key_ = randomBytes(kTicketKeyBytes);
    return absl::OkStatus();
  }
  if (auto st = common::makeDirs(options_.dir, 0700); !st.ok()) return st;
  const std::string path = options_.dir + "/session-ticket.key";
  // Whoever holds this key can make tickets the server accepts and read what resumed
  // sessions derive from them: kept like a private key (0600, owner only). A file that is
  // more open, dated in the future (a restored backup, a clock set back) or older than the
  // tickets' lifetime is replaced.
  std::error_code ec;
  auto written = std::filesystem::last_write_time(path, ec);
  auto age = std::filesystem::file_time_type::clock::now() - written;
  struct stat st {};
  bool private_file = ::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) == 0;
  bool fresh = !ec && private_file && age >= std::chrono::hours(-1) &&
               age < std::chrono::hours(24 * kTicketKeyDays);
  if (!ec && !private_file) {
    spdlog::warn("{} is readable by others: replacing the TLS session ticket key", path);
  }
  if (fresh) {
    auto data = common::readFile(path);
    if (data.ok() && data->size() == static_cast<size_t>(kTicketKeyBytes)) {
      ticket_key_ = *std::move(data);
      return absl::OkStatus();
    }
  }
  ticket_key_ = randomBytes(kTicketKeyBytes);
  if (auto st = common::writeFileAtomic(path, ticket_key_, 0600); !st.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot keep the TLS session ticket key in ", path, ": ", st.message()));
  }
  return absl::OkStatus();
}

std::shared_ptr<const TlsMaterial> ServerIdentity::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

absl::Status ServerIdentity::install(std::string key_pem, std::string cert_pem) {
  auto info = inspectCert(cert_pem);
  if (!info.ok()) return info.status();
  auto ca_info = inspectCert(ca_.cert_pem);
  if (!ca_info.ok()) return ca_info.status();
  auto material = std::make_shared<TlsMaterial>();
  material->key_pem = std::move(key_pem);
  material->chain_pem = cert_pem;
  if (!cert_pem.empty() && cert_pem.back() != '\n') material->chain_pem += "\n";
  // The CA rides along so that an agent holding only its pin can fetch it.
  if (cert_pem.find(ca_.cert_pem) == std::string::npos) material->chain_pem += ca_.cert_pem;
  material->ca_pem = ca_.cert_pem;
  material->ca_sha256 = ca_info->sha256_hex;
  material->not_after_s = info->not_after_s;
  material->key_pin = info->spki_sha256_base64;
  std::lock_guard lock(mu_);
  material->generation = ++generation_;
  current_ = std::move(material);
  return absl::OkStatus();
}

absl::Status ServerIdentity::loadOwn() {
  const std::string& dir = options_.dir;
  if (auto st = common::makeDirs(dir, 0700); !st.ok()) return st;
  const std::string ca_key = dir + "/ca.key", ca_crt = dir + "/ca.crt";
  if (!common::fileExists(ca_key) || !common::fileExists(ca_crt)) {
    auto ca = createCa("Muster CA", nowS(), options_.ca_days);
    if (!ca.ok()) return ca.status();
    // Key first: a crash between the two leaves no certificate without its key.
    if (auto st = common::writeFileAtomic(ca_key, ca->key_pem, 0600); !st.ok()) return st;
    if (auto st = common::writeFileAtomic(ca_crt, ca->cert_pem, 0644); !st.ok()) return st;
    spdlog::info("created a CA for the agent link in {} (agents pin its SHA-256)", dir);
  }
  auto key = common::readFile(ca_key);
  auto crt = common::readFile(ca_crt);
  if (!key.ok()) return key.status();
  if (!crt.ok()) return crt.status();
  ca_ = {*key, *crt};
  auto refreshed = refresh();  // issues the server certificate if there is none or it is due
  return refreshed.ok() ? absl::OkStatus() : refreshed.status();
}

absl::Status ServerIdentity::loadGiven() {
  auto cert = readNamed("--tls-cert", options_.cert_file);
  auto key = readNamed("--tls-key", options_.key_file);
  auto ca = readNamed("--tls-ca", options_.ca_file);
  for (const auto* r : {&cert, &key, &ca}) {
    if (!r->ok()) return r->status();
  }
  std::string ca_key;
  if (!options_.ca_key_file.empty()) {
    auto k = readNamed("--tls-ca-key", options_.ca_key_file);
    if (!k.ok()) return k.status();
    ca_key = *k;
  }
  std::string fingerprint = sha256Hex(*cert + *key + *ca + ca_key);
  if (fingerprint == given_fingerprint_) return absl::OkStatus();
  auto roots = splitPemCerts(*ca);
  if (!roots.ok())
    return absl::InvalidArgumentError(absl::StrCat("--tls-ca: ", roots.status().message()));
  if (auto st = verifyServerChain(*cert, roots->front(), "", nowS()); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert is not usable with --tls-ca: ", st.message()));
  }
  // A pair caught between two copies (the new certificate, the old key) would fail every
  // handshake: refuse it and keep serving what was loaded before.
  auto matches = certMatchesKey(*cert, *key);
  if (!matches.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-key: ", matches.status().message()));
  }
  if (!*matches) {
    return absl::InvalidArgumentError(
        "--tls-key is not the key of --tls-cert: give the key the certificate was issued for "
        "(musterd keeps the previous pair until both match)");
  }
  KeyAndCert previous = ca_;
  ca_ = {ca_key, roots->front()};
  if (!ca_key.empty()) {
    // The key must be the CA's: try to sign a throwaway certificate with it.
    auto probe = createKeyAndCsr("probe");
    if (!probe.ok() || !signClient(probe->cert_pem, "probe", 60).ok()) {
      ca_ = previous;
      return absl::InvalidArgumentError("--tls-ca-key is not the key of --tls-ca");
    }
  }
  if (auto st = install(*key, *cert); !st.ok()) {
    ca_ = previous;
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", st.message()));
  }
  given_fingerprint_ = fingerprint;
  return absl::OkStatus();
}

absl::StatusOr<std::string> ServerIdentity::signClient(std::string_view csr_pem,
                                                       std::string_view agent_id,
                                                       int64_t lifetime_s) const {
  if (!canSignClients()) {
    return absl::FailedPreconditionError(
        "musterd has no CA key to sign client certificates (give --tls-ca-key)");
  }
  return signClientCsr(ca_, csr_pem, agent_id, nowS(), lifetime_s);
}

absl::StatusOr<bool> ServerIdentity::refresh() {
  if (!options_.cert_file.empty()) {
    uint64_t before = current() ? current()->generation : 0;
    if (auto st = loadGiven(); !st.ok()) return st;
    return current()->generation != before;
  }
  const std::string key_path = options_.dir + "/server.key",
                    crt_path = options_.dir + "/server.crt";
  std::string key_pem, cert_pem;
  if (common::fileExists(key_path) && common::fileExists(crt_path)) {
    auto key = common::readFile(key_path);
    auto crt = common::readFile(crt_path);
    if (key.ok() && crt.ok()) {
      key_pem = *key;
      cert_pem = *crt;
    }
  }
  bool due = true;
  std::string why = "none yet";
  if (!cert_pem.empty()) {
    auto info = inspectCert(cert_pem);
    if (info.ok()) {
      std::vector<std::string> want = options_.names, have = info->names;
      std::sort(want.begin(), want.end());
      std::sort(have.begin(), have.end());
      bool same_ca = verifyServerChain(cert_pem, ca_.cert_pem, "", nowS()).ok();
      if (!same_ca) {
        why = "not signed by this CA";
      } else if (want != have) {
        why = "its names changed";
      } else if (info->not_after_s - nowS() < int64_t{options_.renew_before_days} * 86400) {
        why = "it expires soon";
      } else {
        due = false;
      }
    }
  }
  if (!due) {
    if (!current() || current()->chain_pem.find(cert_pem) == std::string::npos) {
      if (auto st = install(key_pem, cert_pem); !st.ok()) return st;
      return true;
    }
    return false;
  }
  auto issued = issueServerCert(ca_, options_.names, key_pem, nowS(), options_.server_cert_days);
  if (!issued.ok()) return issued.status();
  if (auto st = common::writeFileAtomic(key_path, issued->key_pem, 0600); !st.ok()) return st;
  if (auto st = common::writeFileAtomic(crt_path, issued->cert_pem, 0644); !st.ok()) return st;
  spdlog::info("issued the agent link's server certificate ({}) for {}, valid {} days", why,
               absl::StrJoin(options_.names, ", "), options_.server_cert_days);
  if (auto st = install(issued->key_pem, issued->cert_pem); !st.ok()) return st;
  return true;
}

}  // namespace muster::crypto
