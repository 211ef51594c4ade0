// Unit tests of crypto::ServerIdentity on a FakeClock: musterd's own CA and server
// certificate in DATA/tls (created once, reused, renewed when due or when the names change)
// and the operator's --tls-* files (checked against each other, reloaded when they change).
#include "crypto/server_identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "common/fs.h"

namespace muster::crypto {
namespace {

constexpr int64_t kDayMs = 86'400'000;

// absl::string_view (Debian's Abseil) and std::string_view alike.
template <typename Text>
bool contains(const Text& text, std::string_view needle) {
  return std::string_view(text.data(), text.size()).find(needle) != std::string_view::npos;
}

int modeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

std::string serialOf(const TlsMaterial& m) {
  auto info = inspectCert(m.chain_pem);
  return info.ok() ? info->serial_hex : "";
}

class ServerIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    root_ = std::filesystem::temp_directory_path() /
            ("muster-identity-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  std::string path(const std::string& name) const { return (root_ / name).string(); }

  ServerIdentity::Options own(std::vector<std::string> names = {"localhost", "127.0.0.1"}) {
    ServerIdentity::Options o;
    o.dir = path("tls");
    o.names = std::move(names);
    return o;
  }

  std::unique_ptr<ServerIdentity> mustOpen(const ServerIdentity::Options& o) {
    auto id = ServerIdentity::open(o, clock_);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? std::move(*id) : nullptr;
  }

  void write(const std::string& name, const std::string& data) {
    ASSERT_TRUE(common::writeFileAtomic(path(name), data, 0600).ok());
  }

  // Operator files: a CA and a server certificate it signed, as --tls-* take them.
  ServerIdentity::Options given(const KeyAndCert& ca, const KeyAndCert& server) {
    write("op.crt", server.cert_pem);
    write("op.key", server.key_pem);
    write("op-ca.crt", ca.cert_pem);
    ServerIdentity::Options o;
    o.dir = path("tls");
    o.cert_file = path("op.crt");
    o.key_file = path("op.key");
    o.ca_file = path("op-ca.crt");
    return o;
  }

  int64_t nowS() const { return clock_.nowMs() / 1000; }

  std::filesystem::path root_;
  common::FakeClock clock_;
};

TEST_F(ServerIdentityTest, FirstOpenCreatesTheCaAndCertificateWithPrivateKeys) {
  auto id = mustOpen(own());
  ASSERT_TRUE(id);
  for (const char* f : {"ca.key", "ca.crt", "server.key", "server.crt"}) {
    EXPECT_TRUE(common::fileExists(path("tls/") + f)) << f;
  }
  EXPECT_EQ(modeOf(path("tls")), 0700);
  EXPECT_EQ(modeOf(path("tls/ca.key")), 0600);
  EXPECT_EQ(modeOf(path("tls/server.key")), 0600);
  auto m = id->current();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->generation, 1u);
  EXPECT_TRUE(id->canSignClients());
  EXPECT_EQ(m->ca_sha256, *certSha256(*common::readFile(path("tls/ca.crt"))));
  EXPECT_EQ(m->ca_pem, *common::readFile(path("tls/ca.crt")));
  // The chain carries the CA, so that an agent holding only the pin can find it.
  auto chain = splitPemCerts(m->chain_pem);
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ(*certSha256((*chain)[1]), m->ca_sha256);
  EXPECT_TRUE(verifyServerChain(m->chain_pem, m->ca_pem, "127.0.0.1", nowS()).ok());
  EXPECT_TRUE(verifyServerChain(m->chain_pem, m->ca_pem, "localhost", nowS()).ok());
  EXPECT_EQ(m->not_after_s, inspectCert(m->chain_pem)->not_after_s);
}

TEST_F(ServerIdentityTest, TheSessionTicketKeyIsKeptPrivateAndSurvivesAReopen) {
  const std::string key_file = path("tls/session-ticket.key");
  std::string first;
  {
    auto id = mustOpen(own());
    ASSERT_NE(id, nullptr);
    first = id->sessionTicketKey();
  }
  ASSERT_EQ(first.size(), static_cast<size_t>(ServerIdentity::kTicketKeyBytes));
  EXPECT_EQ(modeOf(key_file), 0600);
  EXPECT_EQ(common::readFile(key_file).value_or(""), first);
  auto again = mustOpen(own());
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->sessionTicketKey(), first) << "a restart keeps the key: agents resume";
}

TEST_F(ServerIdentityTest, AnOldOrDamagedSessionTicketKeyIsReplaced) {
  const std::string key_file = path("tls/session-ticket.key");
  std::string first = mustOpen(own())->sessionTicketKey();
  // Older than the tickets' lifetime: a new key (the file's own age, not the test clock).
  std::filesystem::last_write_time(
      key_file, std::filesystem::file_time_type::clock::now() -
                    std::chrono::hours(24 * (ServerIdentity::kTicketKeyDays + 1)));
  std::string second = mustOpen(own())->sessionTicketKey();
  EXPECT_NE(second, first);
  EXPECT_EQ(second.size(), static_cast<size_t>(ServerIdentity::kTicketKeyBytes));
  EXPECT_EQ(common::readFile(key_file).value_or(""), second);
  // A file of the wrong size (truncated, edited) is not used as a key.
  ASSERT_TRUE(common::writeFileAtomic(key_file, "short", 0600).ok());
  std::string third = mustOpen(own())->sessionTicketKey();
  EXPECT_EQ(third.size(), static_cast<size_t>(ServerIdentity::kTicketKeyBytes));
  EXPECT_NE(third, second);
  // Readable by others: no longer a secret, replaced (and the new one is 0600).
  ASSERT_EQ(::chmod(key_file.c_str(), 0644), 0);
  std::string fourth = mustOpen(own())->sessionTicketKey();
  EXPECT_NE(fourth, third);
  EXPECT_EQ(modeOf(key_file), 0600);
  // Dated in the future (a restored backup, a clock set back): its age says nothing.
  std::filesystem::last_write_time(
      key_file, std::filesystem::file_time_type::clock::now() + std::chrono::hours(24 * 30));
  EXPECT_NE(mustOpen(own())->sessionTicketKey(), fourth);
}

TEST_F(ServerIdentityTest, ReopenReusesTheCaAndTheCertificate) {
  auto first = mustOpen(own());
  ASSERT_TRUE(first);
  auto before = first->current();
  first.reset();
  clock_.advanceMs(kDayMs);
  auto second = mustOpen(own());
  ASSERT_TRUE(second);
  auto after = second->current();
  EXPECT_EQ(after->ca_sha256, before->ca_sha256);
  EXPECT_EQ(after->chain_pem, before->chain_pem);
  EXPECT_EQ(after->key_pem, before->key_pem);
  auto refreshed = second->refresh();
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_FALSE(*refreshed);
  EXPECT_EQ(second->current()->generation, after->generation);
}

TEST_F(ServerIdentityTest, RenewsTheCertificateWhenDueWithTheSameCaAndKey) {
  auto id = mustOpen(own());
  ASSERT_TRUE(id);
  auto before = id->current();
  // 90-day certificates renewed with 30 days left: not yet at day 59, due at day 61.
  clock_.advanceMs(59 * kDayMs);
  ASSERT_FALSE(*id->refresh());
  clock_.advanceMs(2 * kDayMs);
  auto renewed = id->refresh();
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_TRUE(*renewed);
  auto after = id->current();
  EXPECT_GT(after->generation, before->generation);
  EXPECT_EQ(after->ca_sha256, before->ca_sha256);
  EXPECT_EQ(after->key_pem, before->key_pem);
  EXPECT_NE(serialOf(*after), serialOf(*before));
  EXPECT_GT(after->not_after_s, before->not_after_s);
  EXPECT_TRUE(verifyServerChain(after->chain_pem, after->ca_pem, "127.0.0.1", nowS()).ok());
  // The snapshot taken before stays whole for whoever holds it (connections already up).
  EXPECT_TRUE(verifyServerChain(before->chain_pem, before->ca_pem, "", nowS()).ok());
  // What was renewed is on disk: a restart does not renew again.
  EXPECT_EQ(*common::readFile(path("tls/server.crt")) + after->ca_pem, after->chain_pem);
  id.reset();
  auto reopened = mustOpen(own());
  EXPECT_EQ(serialOf(*reopened->current()), serialOf(*after));
  EXPECT_FALSE(*reopened->refresh());
}

TEST_F(ServerIdentityTest, ChangedNamesReissueTheCertificate) {
  auto first = mustOpen(own({"localhost", "127.0.0.1"}));
  ASSERT_TRUE(first);
  std::string ca_sha = first->current()->ca_sha256;
  std::string serial = serialOf(*first->current());
  first.reset();
  auto second = mustOpen(own({"musterd.example"}));
  ASSERT_TRUE(second);
  auto m = second->current();
  EXPECT_EQ(m->ca_sha256, ca_sha);
  EXPECT_NE(serialOf(*m), serial);
  EXPECT_EQ(inspectCert(m->chain_pem)->names, std::vector<std::string>{"musterd.example"});
  EXPECT_FALSE(verifyServerChain(m->chain_pem, m->ca_pem, "127.0.0.1", nowS()).ok());
}

TEST_F(ServerIdentityTest, TheSameNamesInAnotherOrderKeepTheCertificate) {
  auto first = mustOpen(own({"localhost", "127.0.0.1"}));
  ASSERT_TRUE(first);
  std::string serial = serialOf(*first->current());
  first.reset();
  auto second = mustOpen(own({"127.0.0.1", "localhost"}));
  ASSERT_TRUE(second);
  EXPECT_EQ(serialOf(*second->current()), serial);
}

TEST_F(ServerIdentityTest, ACertificateOnDiskFromAnotherCaIsReplaced) {
  auto first = mustOpen(own());
  ASSERT_TRUE(first);
  first.reset();
  auto stranger = createCa("Muster CA", nowS(), 10);
  auto foreign = issueServerCert(*stranger, {"localhost", "127.0.0.1"}, "", nowS(), 90);
  write("tls/server.crt", foreign->cert_pem);
  write("tls/server.key", foreign->key_pem);
  auto second = mustOpen(own());
  ASSERT_TRUE(second);
  auto m = second->current();
  EXPECT_TRUE(verifyServerChain(m->chain_pem, m->ca_pem, "127.0.0.1", nowS()).ok());
  EXPECT_NE(serialOf(*m), inspectCert(foreign->cert_pem)->serial_hex);
}

TEST_F(ServerIdentityTest, OperatorFilesAreUsedAsGiven) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto id = mustOpen(given(*ca, *server));
  ASSERT_TRUE(id);
  auto m = id->current();
  EXPECT_EQ(m->ca_sha256, *certSha256(ca->cert_pem));
  EXPECT_EQ(serialOf(*m), inspectCert(server->cert_pem)->serial_hex);
  EXPECT_FALSE(id->canSignClients());
  EXPECT_FALSE(common::fileExists(path("tls/ca.key")));  // musterd makes nothing of its own
  EXPECT_FALSE(*id->refresh());
}

TEST_F(ServerIdentityTest, OperatorFilesAreReloadedWhenTheyChange) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto id = mustOpen(given(*ca, *server));
  ASSERT_TRUE(id);
  auto before = id->current();
  auto next = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  write("op.crt", next->cert_pem);
  write("op.key", next->key_pem);
  auto reloaded = id->refresh();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_TRUE(*reloaded);
  EXPECT_GT(id->current()->generation, before->generation);
  EXPECT_EQ(serialOf(*id->current()), inspectCert(next->cert_pem)->serial_hex);
  EXPECT_FALSE(*id->refresh());
}

TEST_F(ServerIdentityTest, BrokenOperatorFilesOnReloadKeepTheCurrentCertificate) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto id = mustOpen(given(*ca, *server));
  ASSERT_TRUE(id);
  auto before = id->current();
  write("op.crt", server->cert_pem.substr(0, 100));  // a copy caught half-way
  auto reloaded = id->refresh();
  EXPECT_FALSE(reloaded.ok());
  EXPECT_TRUE(contains(reloaded.status().message(), "--tls-cert")) << reloaded.status();
  EXPECT_EQ(id->current()->generation, before->generation);
  EXPECT_EQ(id->current()->chain_pem, before->chain_pem);
}

TEST_F(ServerIdentityTest, RefusesACertificateTheGivenCaDidNotSign) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto other = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*other, {"musterd.corp"}, "", nowS(), 30);
  auto id = ServerIdentity::open(given(*ca, *server), clock_);
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(id.status())) << id.status();
  EXPECT_TRUE(contains(id.status().message(), "--tls-cert is not usable with --tls-ca"))
      << id.status();
  EXPECT_TRUE(contains(id.status().message(), "not signed by the CA")) << id.status();
}

TEST_F(ServerIdentityTest, RefusesAKeyThatIsNotTheCertificates) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto unrelated = createKeyAndCsr("x");
  auto options = given(*ca, *server);
  write("op.key", unrelated->key_pem);
  auto id = ServerIdentity::open(options, clock_);
  ASSERT_FALSE(id.ok()) << "a --tls-key that is not --tls-cert's key was accepted";
  EXPECT_TRUE(contains(id.status().message(), "--tls-key")) << id.status();
}

TEST_F(ServerIdentityTest, AReloadBetweenTheCertificateAndItsKeyWaitsForBoth) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto id = mustOpen(given(*ca, *server));
  ASSERT_TRUE(id);
  auto before = id->current();
  auto next = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  write("op.crt", next->cert_pem);  // the key is copied next
  auto half = id->refresh();
  ASSERT_FALSE(half.ok()) << "a certificate with the previous key was installed";
  EXPECT_TRUE(contains(half.status().message(), "--tls-key is not the key of --tls-cert"))
      << half.status();
  EXPECT_EQ(id->current()->chain_pem, before->chain_pem);
  write("op.key", next->key_pem);
  auto whole = id->refresh();
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_TRUE(*whole);
  EXPECT_EQ(serialOf(*id->current()), inspectCert(next->cert_pem)->serial_hex);
  EXPECT_EQ(id->current()->key_pem, next->key_pem);
}

TEST_F(ServerIdentityTest, RefusesAnExpiredOperatorCertificate) {
  auto ca = createCa("Corp CA", nowS() - 400 * 86'400, 3650);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS() - 400 * 86'400, 30);
  auto id = ServerIdentity::open(given(*ca, *server), clock_);
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(contains(id.status().message(), "expired")) << id.status();
}

TEST_F(ServerIdentityTest, RefusesACaKeyThatIsNotTheCas) {
  auto ca = createCa("Corp CA", nowS(), 365);
  auto other = createCa("Corp CA", nowS(), 365);
  auto server = issueServerCert(*ca, {"musterd.corp"}, "", nowS(), 30);
  auto options = given(*ca, *server);
  write("op-ca.key", other->key_pem);
  options.ca_key_file = path("op-ca.key");
  auto id = ServerIdentity::open(options, clock_);
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(contains(id.status().message(), "--tls-ca-key is not the key of --tls-ca"))
      << id.status();
  write("op-ca.key", ca->key_pem);
  auto ok = ServerIdentity::open(options, clock_);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE((*ok)->canSignClients());
}

TEST_F(ServerIdentityTest, RefusesIncompleteOrMissingOperatorFiles) {
  ServerIdentity::Options o;
  o.dir = path("tls");
  o.cert_file = path("op.crt");
  auto id = ServerIdentity::open(o, clock_);
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(contains(id.status().message(), "go together")) << id.status();
  o.key_file = path("op.key");
  o.ca_file = path("op-ca.crt");
  id = ServerIdentity::open(o, clock_);
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(contains(id.status().message(), "--tls-cert " + path("op.crt"))) << id.status();
}

}  // namespace
}  // namespace muster::crypto
