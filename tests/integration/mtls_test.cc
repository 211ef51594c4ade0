// mTLS on the agent link, end to end with a real musterd: client certificates issued at
// enrollment for the agent's own key, checked on every stream (the agent's own, current,
// unexpired, not revoked or replaced), required with --require-client-certs, and renewed by a
// real muster-agent over the link before they expire.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <condition_variable>
#include <ctime>
#include <future>
#include <mutex>

#include "agent/link_client.h"
#include "crypto/certs.h"
#include "testing/http_call.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

std::string sha256Of(const std::string& pem) {
  auto sha = crypto::certSha256(pem);
  return sha.ok() ? *sha : "unreadable";
}

struct Enrolled {
  std::string credential;
  std::string key_pem, cert_pem;  // cert empty: none issued
};

// Enrolls `id` as an agent would: a fresh key, its CSR in the request (none if `with_csr` is
// false), over verified TLS.
absl::StatusOr<Enrolled> enrollRaw(const Musterd& server, const std::string& token,
                                   const std::string& id, bool with_csr = true) {
  auto key = crypto::createKeyAndCsr(id);
  if (!key.ok()) return key.status();
  agent::ChannelOptions options;
  options.target = server.grpcTarget();
  options.own_connection = true;
  options.security.ca_pem = server.caPem();
  muster::v1::EnrollRequest request;
  request.set_token(token);
  request.set_agent_id(id);
  if (with_csr) request.set_csr_pem(key->cert_pem);
  auto response = agent::enroll(agent::makeChannel(options), request, 10'000);
  if (!response.ok()) return response.status();
  return Enrolled{response->credential(), key->key_pem, response->client_cert_pem()};
}

// Opens a stream as `id` presenting `key_pem`/`cert_pem` (none if empty) and says Hello: OK
// once Welcome arrives, else the status the stream (or the handshake) ended with.
absl::Status tryStream(const Musterd& server, const std::string& id, const std::string& credential,
                       const std::string& key_pem, const std::string& cert_pem) {
  agent::ChannelOptions options;
  options.target = server.grpcTarget();
  options.own_connection = true;
  options.security.ca_pem = server.caPem();
  options.security.client_key_pem = key_pem;
  options.security.client_cert_pem = cert_pem;
  auto channel = agent::makeChannel(options);
  auto outcome = std::make_shared<std::promise<absl::Status>>();
  auto done = std::make_shared<std::once_flag>();
  agent::LinkStream::Handlers handlers;
  handlers.on_message = [outcome, done](const muster::v1::ServerMessage& m) {
    if (m.has_welcome()) std::call_once(*done, [&] { outcome->set_value(absl::OkStatus()); });
  };
  handlers.on_closed = [outcome, done](const absl::Status& st) {
    std::call_once(*done, [&] {
      outcome->set_value(st.ok() ? absl::UnknownError("closed without a Welcome") : st);
    });
  };
  auto future = outcome->get_future();
  auto stream = agent::openStream(channel, id, credential, handlers);
  muster::v1::AgentMessage hello;
  hello.mutable_hello()->set_agent_id(id);
  hello.mutable_hello()->set_version("mtls-test");
  stream->send(hello);
  if (future.wait_for(20s) != std::future_status::ready) {
    stream->close();
    return absl::DeadlineExceededError("neither Welcome nor an end within 20 s");
  }
  absl::Status st = future.get();
  stream->close();
  return st;
}

std::string hostToken(Musterd& server, const std::string& id) {
  auto r = server.post("/api/v1/tokens",
                       R"({"kind":"enroll","uses":1,"ttl":"1h","host":")" + id + R"("})");
  if (r.status != 201) return "";
  boost::json::value body = r.json();
  auto* token = body.as_object().if_contains("token");
  return token && token->is_string() ? std::string(token->as_string()) : "";
}

std::string clientCertSha(const boost::json::value& host) {
  if (!host.is_object()) return "";
  auto* cert = host.as_object().if_contains("client_cert");
  if (cert == nullptr || !cert->is_object()) return "";
  auto* sha = cert->as_object().if_contains("sha256");
  return sha && sha->is_string() ? std::string(sha->as_string()) : "";
}

TEST(MtlsTest, RequiredClientCertificatesLetInOnlyEachAgentsOwn) {
  TempDir dir;
  Musterd server(dir, {"--require-client-certs"});
  const std::string token = server.enrollToken();
  auto a = enrollRaw(server, token, "mtls-a");
  auto b = enrollRaw(server, token, "mtls-b");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_FALSE(a->cert_pem.empty()) << "no client certificate issued for the CSR";

  // What musterd signed: for the agent's own key, naming the agent, by musterd's CA.
  auto info = crypto::inspectCert(a->cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->subject_cn, "mtls-a");
  EXPECT_EQ(info->uri, crypto::agentUri("mtls-a"));
  EXPECT_EQ(info->issuer_cn, crypto::inspectCert(server.caPem())->subject_cn);
  EXPECT_TRUE(*crypto::certMatchesKey(a->cert_pem, a->key_pem));
  const int64_t lifetime_days = (info->not_after_s - std::time(nullptr)) / 86400;
  EXPECT_GE(lifetime_days, 29);  // the default: 30 days
  EXPECT_LE(lifetime_days, 30);
  EXPECT_EQ(clientCertSha(server.host("mtls-a")), sha256Of(a->cert_pem));

  // The agent's own certificate: in.
  EXPECT_TRUE(tryStream(server, "mtls-a", a->credential, a->key_pem, a->cert_pem).ok());
  // No certificate: refused, saying what is required.
  absl::Status none = tryStream(server, "mtls-a", a->credential, "", "");
  EXPECT_TRUE(absl::IsUnauthenticated(none)) << none;
  EXPECT_TRUE(contains(std::string(none.message()), "--require-client-certs")) << none;
  // Another agent's certificate (valid, from the same CA) with this agent's credential.
  absl::Status other = tryStream(server, "mtls-a", a->credential, b->key_pem, b->cert_pem);
  EXPECT_TRUE(absl::IsUnauthenticated(other)) << other;
  EXPECT_TRUE(contains(std::string(other.message()), "mtls-b")) << other;
  // A certificate for mtls-a from a CA that is not musterd's: the handshake fails.
  auto foreign_ca = crypto::createCa("not musterd", std::time(nullptr), 10);
  ASSERT_TRUE(foreign_ca.ok());
  auto csr = crypto::createKeyAndCsr("mtls-a");
  auto foreign =
      crypto::signClientCsr(*foreign_ca, csr->cert_pem, "mtls-a", std::time(nullptr), 86400);
  ASSERT_TRUE(foreign.ok());
  absl::Status forged = tryStream(server, "mtls-a", a->credential, csr->key_pem, *foreign);
  EXPECT_FALSE(forged.ok());
  // An expired certificate for mtls-a signed by musterd's own CA: the handshake fails too.
  crypto::KeyAndCert ca{readFileOr(server.dataDir() + "/tls/ca.key"), server.caPem()};
  auto expired =
      crypto::signClientCsr(ca, csr->cert_pem, "mtls-a", std::time(nullptr) - 7200, 3600);
  ASSERT_TRUE(expired.ok()) << expired.status();
  absl::Status stale = tryStream(server, "mtls-a", a->credential, csr->key_pem, *expired);
  EXPECT_FALSE(stale.ok());
  // Even a valid one signed by musterd's CA is refused unless musterd issued it to the host.
  auto unissued = crypto::signClientCsr(ca, csr->cert_pem, "mtls-a", std::time(nullptr), 86400);
  ASSERT_TRUE(unissued.ok());
  absl::Status stray = tryStream(server, "mtls-a", a->credential, csr->key_pem, *unissued);
  EXPECT_TRUE(absl::IsUnauthenticated(stray)) << stray;
  // And still in with its own afterwards.
  EXPECT_TRUE(tryStream(server, "mtls-a", a->credential, a->key_pem, a->cert_pem).ok());

  // Enrollment without a CSR cannot meet the requirement: refused before a use is spent.
  auto bare = enrollRaw(server, token, "mtls-c", /*with_csr=*/false);
  EXPECT_TRUE(absl::IsFailedPrecondition(bare.status())) << bare.status();
  EXPECT_TRUE(contains(std::string(bare.status().message()), "--require-client-certs"));

  // Every certificate issued is in the audit log.
  auto events = server.get("/api/v1/events?kind=link.certificate_issued");
  ASSERT_EQ(events.status, 200) << events.body;
  EXPECT_TRUE(contains(events.body, "mtls-a")) << events.body;
  EXPECT_TRUE(contains(events.body, "mtls-b")) << events.body;
}

TEST(MtlsTest, ReenrollingReplacesTheCertificateAndRevokingRefusesIt) {
  TempDir dir;
  Musterd server(dir);  // client certificates optional
  const std::string token = server.enrollToken();
  auto first = enrollRaw(server, token, "mtls-r");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->cert_pem.empty());
  // Optional: in without one, and in with its own.
  EXPECT_TRUE(tryStream(server, "mtls-r", first->credential, "", "").ok());
  EXPECT_TRUE(tryStream(server, "mtls-r", first->credential, first->key_pem, first->cert_pem).ok());

  // The machine is re-imaged: a token for the host enrolls it again with a new key.
  const std::string rebind = hostToken(server, "mtls-r");
  ASSERT_FALSE(rebind.empty());
  auto second = enrollRaw(server, rebind, "mtls-r");
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_NE(sha256Of(second->cert_pem), sha256Of(first->cert_pem));
  EXPECT_EQ(clientCertSha(server.host("mtls-r")), sha256Of(second->cert_pem));
  // The old certificate is refused, even with the new credential (a presented certificate
  // must be the host's current one, whether or not certificates are required).
  absl::Status old =
      tryStream(server, "mtls-r", second->credential, first->key_pem, first->cert_pem);
  EXPECT_TRUE(absl::IsUnauthenticated(old)) << old;
  EXPECT_TRUE(
      tryStream(server, "mtls-r", second->credential, second->key_pem, second->cert_pem).ok());

  // Revoked: its certificate is refused with the rest of it.
  auto revoked = testkit::httpCall("DELETE", server.httpBase() + "/api/v1/hosts/mtls-r",
                                   server.adminToken(), nullptr, 30, server.caFile());
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  absl::Status after =
      tryStream(server, "mtls-r", second->credential, second->key_pem, second->cert_pem);
  EXPECT_TRUE(absl::IsPermissionDenied(after)) << after;
  EXPECT_EQ(clientCertSha(server.host("mtls-r")), sha256Of(second->cert_pem))
      << "a revoked host keeps its certificate on the server's list";
}

TEST(MtlsTest, AnAgentRenewsItsCertificateOverTheLinkBeforeItExpires) {
  TempDir dir;
  // 12 s certificates: the agent renews with 4 s left, checking at every 1 s heartbeat.
  Musterd server(dir, {"--require-client-certs", "--client-cert-lifetime", "12s",
                       "--heartbeat-interval", "1s"});
  AgentProc agent(dir, server, "mtls-renew", server.enrollToken());
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("mtls-renew") == "online"; }))
      << agent.process().err();
  const std::string pem_path = agent.stateDir() + "/client.pem";
  const std::string first = readFileOr(pem_path);
  ASSERT_TRUE(contains(first, "BEGIN CERTIFICATE")) << agent.process().err();
  struct stat st {};
  ASSERT_EQ(::stat(pem_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the key is the agent's secret";
  const std::string first_cert = first.substr(first.find("-----BEGIN CERTIFICATE-----"));
  EXPECT_EQ(clientCertSha(server.host("mtls-renew")), sha256Of(first_cert));

  // Renewed over the link: a new key and certificate, the link never dropped.
  ASSERT_TRUE(waitFor([&] { return readFileOr(pem_path) != first; }, 30s)) << agent.process().err();
  const std::string second = readFileOr(pem_path);
  const std::string second_cert = second.substr(second.find("-----BEGIN CERTIFICATE-----"));
  EXPECT_NE(second.substr(0, second.find("-----BEGIN CERTIFICATE-----")),
            first.substr(0, first.find("-----BEGIN CERTIFICATE-----")))
      << "the renewal made a new key";
  EXPECT_EQ(clientCertSha(server.host("mtls-renew")), sha256Of(second_cert));
  EXPECT_EQ(server.hostStatus("mtls-renew"), "online");
  EXPECT_FALSE(contains(agent.process().err(), " closed (")) << "renewing must not drop the link\n"
                                                             << agent.process().err();

  // The first certificate stays accepted until a connection presents the renewed one: the
  // agent reconnects with it, and from then on the first is refused.
  agent.stop();
  agent.start();
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("mtls-renew") == "online"; }))
      << agent.process().err();
  std::string credential = readFileOr(agent.stateDir() + "/credential");  // "ID\nSECRET\n"
  credential = credential.substr(credential.find('\n') + 1);
  credential = credential.substr(0, credential.find('\n'));
  const std::string first_key = first.substr(0, first.find("-----BEGIN CERTIFICATE-----"));
  absl::Status old = tryStream(server, "mtls-renew", credential, first_key, first_cert);
  EXPECT_FALSE(old.ok()) << "the replaced certificate still got in";
  auto run = server.run({"mtls-renew"}, "echo renewed-ok");
  const std::string id(run.at("commands").at(0).at("id").as_string());
  ASSERT_TRUE(waitFor([&] { return server.commandState(id) == "succeeded"; }))
      << agent.process().err();
  EXPECT_EQ(server.output(id), "renewed-ok\n");
  auto events = server.get("/api/v1/events?kind=link.certificate_issued&host=mtls-renew");
  ASSERT_EQ(events.status, 200) << events.body;
  size_t issued = 0;
  for (size_t at = events.body.find("link.certificate_issued"); at != std::string::npos;
       at = events.body.find("link.certificate_issued", at + 1)) {
    ++issued;
  }
  EXPECT_GE(issued, 2u) << events.body;
}

}  // namespace
}  // namespace muster::itest
