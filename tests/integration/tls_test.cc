// TLS on the agent link and the REST API, end to end with real musterd, agents and CLI: on by
// default, plaintext only when both ends say so, the enrollment token's CA pin (wrong,
// malformed, a CA that changed), certificate names, what a capture of the wire shows, and
// certificates swapped under live links.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "agent/tls_probe.h"
#include "common/fs.h"
#include "crypto/certs.h"
#include "crypto/enroll_token.h"
#include "testing/http_call.h"
#include "tests/integration/harness.h"
#include "tests/integration/recording_proxy.h"

namespace muster::itest {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

std::string str(const boost::json::value& v, const char* key) {
  if (!v.is_object()) return "";
  auto* p = v.as_object().if_contains(key);
  return p && p->is_string() ? std::string(p->as_string()) : "";
}

std::string pinOf(const std::string& token) {
  auto parsed = crypto::parseEnrollToken(token);
  return parsed.ok() ? parsed->ca_sha256 : "";
}

std::string secretOf(const std::string& token) {
  auto parsed = crypto::parseEnrollToken(token);
  return parsed.ok() ? parsed->secret : "";
}

std::string sha256Of(const std::string& pem) {
  auto sha = crypto::certSha256(pem);
  return sha.ok() ? *sha : "unreadable";
}

std::string uniqueMarker(const std::string& prefix) {
  std::random_device rd;
  return prefix + std::to_string(rd()) + std::to_string(rd());
}

// The serial of the certificate `target` presents in a new handshake ("" if none).
std::string servedSerial(const std::string& target) {
  auto chain = agent::fetchServerChain(target, 5'000);
  if (!chain.ok()) return "";
  auto info = crypto::inspectCert(*chain);
  return info.ok() ? info->serial_hex : "";
}

int count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// Waits for `p` to exit and checks that it gave up by itself, with a failure status (not
// still retrying at the deadline, not killed).
void expectGaveUp(Process& p) {
  int code = p.wait(30s);
  EXPECT_NE(code, -1) << "still running after 30 s: the refusal must be final\n" << p.err();
  EXPECT_GT(code, 0) << p.err();
  EXPECT_LT(code, 128) << p.err();
}

// muster-agent with exactly these flags (AgentProc adds --enroll-token and, against a
// plaintext musterd, --insecure-plaintext).
std::unique_ptr<Process> startAgent(const TempDir& dir, const std::string& server,
                                    const std::string& state_dir, const std::string& id,
                                    std::vector<std::string> extra) {
  static int runs = 0;
  std::vector<std::string> argv = {AGENT_BIN, "--server", server,          "--state-dir", state_dir,
                                   "--id",    id,         "--backoff-cap", "1s"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<Process>(argv, dir.sub("agent-" + id + "-" + std::to_string(runs++)));
}

TEST(TlsTest, IsOnByDefaultForAgentsAndTheRestApi) {
  TempDir dir;
  Musterd server(dir);
  ASSERT_FALSE(server.plaintext());
  ASSERT_EQ(server.httpBase().rfind("https://", 0), 0u);
  std::string token = server.enrollToken();
  ASSERT_EQ(token.rfind("mst_enroll_", 0), 0u) << token;
  const std::string pin = pinOf(token);
  ASSERT_EQ(pin.size(), 64u) << "the token carries no CA pin: " << token;
  EXPECT_EQ(pin, sha256Of(server.caPem()));

  AgentProc agent(dir, server, "tls-1", token);
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("tls-1") == "online"; }))
      << agent.process().err();
  // The agent keeps the CA it pinned, and nothing else.
  std::string kept = readFileOr(agent.stateDir() + "/ca.crt");
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(sha256Of(kept), pin);
  EXPECT_TRUE(contains(agent.process().err(), "trusting musterd's CA sha256 " + pin))
      << agent.process().err();

  // Both ports present a chain that carries the pinned CA and verifies for 127.0.0.1.
  for (const std::string& target :
       {server.grpcTarget(), "127.0.0.1:" + std::to_string(server.httpPort())}) {
    auto chain = agent::fetchServerChain(target, 5'000);
    ASSERT_TRUE(chain.ok()) << target << ": " << chain.status();
    auto certs = crypto::splitPemCerts(*chain);
    ASSERT_TRUE(certs.ok());
    EXPECT_TRUE(std::any_of(certs->begin(), certs->end(), [&](const std::string& c) {
      return sha256Of(c) == pin;
    })) << target;
    EXPECT_TRUE(
        crypto::verifyServerChain(*chain, server.caPem(), "127.0.0.1", std::time(nullptr)).ok())
        << target;
  }

  // Plain HTTP on the REST port is answered, in plain HTTP, with what to do.
  auto plain = testkit::httpCall(
      "GET", "http://127.0.0.1:" + std::to_string(server.httpPort()) + "/api/v1/hosts",
      server.adminToken(), nullptr, 10);
  EXPECT_EQ(plain.status, 400) << plain.body;
  auto body = HttpResponse{plain.status, plain.body}.json();
  ASSERT_TRUE(body.is_object()) << plain.body;
  EXPECT_EQ(str(body.at("error"), "code"), "tls_required") << plain.body;
  EXPECT_TRUE(contains(plain.body, "https://")) << plain.body;
}

TEST(TlsTest, PlaintextAgentAgainstATlsMusterdNeverComesOnline) {
  TempDir dir;
  Musterd server(dir);
  std::string token = server.enrollToken();
  auto agent = startAgent(dir, server.grpcTarget(), dir.sub("state-plain"), "plain-1",
                          {"--enroll-token", token, "--insecure-plaintext"});
  // It keeps retrying (the server may yet be restarted in plaintext), saying why each time.
  ASSERT_TRUE(waitFor([&] { return count(agent->err(), "cannot reach") >= 2; }, 30s))
      << agent->err();
  // gRPC only says "Socket closed": the agent probes the port and says what is wrong.
  EXPECT_TRUE(waitFor([&] {
    return contains(agent->err(), server.grpcTarget() +
                                      " speaks TLS (musterd's default), but "
                                      "this agent runs with "
                                      "--insecure-plaintext");
  })) << agent->err();
  EXPECT_TRUE(agent->running());
  EXPECT_TRUE(server.host("plain-1").is_null());
  EXPECT_FALSE(common::fileExists(dir.sub("state-plain") + "/credential"));
}

TEST(TlsTest, TlsAgentAgainstAPlaintextMusterdIsRefusedNamingTheFlag) {
  TempDir dir;
  Musterd server(dir, {"--insecure-plaintext"});
  std::string unpinned = server.enrollToken();
  EXPECT_TRUE(pinOf(unpinned).empty()) << unpinned;

  // A token with a pin (from a TLS musterd): the probe finds no TLS on the port.
  auto pinned = startAgent(dir, server.grpcTarget(), dir.sub("state-a"), "tls-a",
                           {"--enroll-token", secretOf(unpinned) + "." + std::string(64, 'a')});
  expectGaveUp(*pinned);
  EXPECT_TRUE(contains(pinned->err(), "does not speak TLS")) << pinned->err();
  EXPECT_TRUE(contains(pinned->err(), "--insecure-plaintext")) << pinned->err();

  // The unpinned token a plaintext musterd hands out: no CA to trust, and the flag named.
  auto unpinned_agent = startAgent(dir, server.grpcTarget(), dir.sub("state-b"), "tls-b",
                                   {"--enroll-token", unpinned});
  expectGaveUp(*unpinned_agent);
  EXPECT_TRUE(contains(unpinned_agent->err(), "no CA to verify musterd with"))
      << unpinned_agent->err();
  EXPECT_TRUE(contains(unpinned_agent->err(), "--insecure-plaintext")) << unpinned_agent->err();
  EXPECT_TRUE(server.host("tls-a").is_null());
  EXPECT_TRUE(server.host("tls-b").is_null());

  // With the flag on both ends, it works.
  AgentProc plain(dir, server, "plain-ok", unpinned);
  EXPECT_TRUE(waitFor([&] { return server.hostStatus("plain-ok") == "online"; }))
      << plain.process().err();
}

#ifdef MUSTER_CLI_BIN
TEST(TlsTest, CliRefusesHttpWithoutTheFlag) {
  TempDir dir;
  Musterd tls_server(dir);
  TempDir plain_dir;
  Musterd plain_server(plain_dir, {"--insecure-plaintext"});
  int runs = 0;
  auto cli = [&](const Musterd& server, std::vector<std::string> flags, int* code) {
    std::vector<std::string> argv = {MUSTER_CLI_BIN, "--token", server.adminToken()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back("hosts");
    Process p(argv, dir.sub("cli-" + std::to_string(runs++)));
    *code = p.wait(60s);
    return p.err() + p.out();
  };
  const std::string plain_url = plain_server.httpBase();
  int code = -1;
  std::string said = cli(plain_server, {"--server", plain_url}, &code);
  EXPECT_NE(code, 0) << said;
  EXPECT_TRUE(contains(said, "is plaintext")) << said;
  EXPECT_TRUE(contains(said, "--insecure-plaintext")) << said;

  said = cli(plain_server, {"--server", plain_url, "--insecure-plaintext"}, &code);
  EXPECT_EQ(code, 0) << said;

  // http:// to musterd's HTTPS port, even with the flag: told to use https://.
  said = cli(tls_server,
             {"--server", "http://127.0.0.1:" + std::to_string(tls_server.httpPort()),
              "--insecure-plaintext"},
             &code);
  EXPECT_NE(code, 0) << said;
  EXPECT_TRUE(contains(said, "https://")) << said;

  said = cli(tls_server, {"--server", tls_server.httpBase(), "--ca", tls_server.caFile()}, &code);
  EXPECT_EQ(code, 0) << said;
}
#endif

TEST(TlsTest, WrongPinIsRefusedForGoodAndNothingEnrolls) {
  TempDir dir;
  Musterd server(dir);
  std::string token = server.enrollToken();
  const std::string wrong_pin(64, 'e');
  ASSERT_NE(pinOf(token), wrong_pin);
  auto agent = startAgent(dir, server.grpcTarget(), dir.sub("state-wrong"), "wrong-pin",
                          {"--enroll-token", secretOf(token) + "." + wrong_pin});
  expectGaveUp(*agent);
  EXPECT_TRUE(
      contains(agent->err(), "does not present the CA the enrollment token pins (" + wrong_pin))
      << agent->err();
  EXPECT_TRUE(contains(agent->err(), pinOf(token))) << "the CA it does present";
  EXPECT_TRUE(server.host("wrong-pin").is_null());
  auto hosts = server.get("/api/v1/hosts");
  ASSERT_EQ(hosts.status, 200) << hosts.body;
  EXPECT_FALSE(contains(hosts.body, "wrong-pin")) << hosts.body;
  EXPECT_FALSE(common::fileExists(dir.sub("state-wrong") + "/ca.crt"));
  EXPECT_FALSE(common::fileExists(dir.sub("state-wrong") + "/credential"));

  // A pin one digit short: refused before anything is sent, saying what is wrong.
  auto malformed = startAgent(dir, server.grpcTarget(), dir.sub("state-short"), "short-pin",
                              {"--enroll-token", token.substr(0, token.size() - 1)});
  expectGaveUp(*malformed);
  EXPECT_TRUE(contains(malformed->err(), "must be 64 hex digits")) << malformed->err();
  EXPECT_FALSE(contains(malformed->err(), secretOf(token))) << "the secret is not logged";
  EXPECT_TRUE(server.host("short-pin").is_null());
}

TEST(TlsTest, ACaChangeIsRefusedWithADiagnosis) {
  TempDir dir;
  Musterd server(dir);
  std::string token = server.enrollToken();
  const std::string state = dir.sub("state-ca");
  {
    auto first = startAgent(dir, server.grpcTarget(), state, "ca-1", {"--enroll-token", token});
    ASSERT_TRUE(waitFor([&] { return server.hostStatus("ca-1") == "online"; })) << first->err();
    first->signal(SIGTERM);
    ASSERT_EQ(first->wait(), 0);
  }
  const std::string ca_path = state + "/ca.crt";
  const std::string real_ca = readFileOr(ca_path);
  ASSERT_EQ(sha256Of(real_ca), pinOf(token));

  // Another musterd's enrollment token for this agent, which trusts the first one's CA.
  TempDir other_dir;
  Musterd other(other_dir);
  std::string other_token = other.enrollToken();
  ASSERT_NE(pinOf(other_token), pinOf(token));
  auto refused =
      startAgent(dir, server.grpcTarget(), state, "ca-1", {"--enroll-token", other_token});
  expectGaveUp(*refused);
  EXPECT_TRUE(contains(refused->err(), "musterd's CA changed")) << refused->err();
  EXPECT_TRUE(contains(refused->err(), pinOf(other_token))) << refused->err();
  EXPECT_TRUE(contains(refused->err(), "remove " + ca_path)) << refused->err();
  EXPECT_EQ(readFileOr(ca_path), real_ca) << "the trusted CA was replaced";

  // The stored CA replaced behind the agent's back: the link fails, and the agent says why.
  auto stranger = crypto::createCa("Muster CA", std::time(nullptr), 30);
  ASSERT_TRUE(stranger.ok());
  ASSERT_TRUE(common::writeFileAtomic(ca_path, stranger->cert_pem).ok());
  auto restarted = startAgent(dir, server.grpcTarget(), state, "ca-1", {});
  EXPECT_TRUE(waitFor([&] { return contains(restarted->err(), "not signed by the CA"); }, 30s))
      << restarted->err();
  EXPECT_TRUE(contains(restarted->err(), "enroll again with a new token")) << restarted->err();
  EXPECT_NE(server.hostStatus("ca-1"), "online");
  EXPECT_TRUE(restarted->running()) << "a failed link is retried";
}

TEST(TlsTest, ANameTheCertificateDoesNotCarryIsRefusedNamingTheFlag) {
  TempDir dir;
  // The harness reaches musterd at 127.0.0.1, which this certificate does not name: run it
  // bare and wait for its agent port to speak TLS.
  const int grpc_port = freePort(), http_port = freePort();
  const std::string grpc_target = "127.0.0.1:" + std::to_string(grpc_port);
  Process musterd({MUSTERD_BIN, "--data-dir", dir.sub("server"), "--http-listen",
                   "127.0.0.1:" + std::to_string(http_port), "--grpc-listen", grpc_target,
                   "--advertise", "only-this-name.invalid"},
                  dir.sub("musterd"));
  ASSERT_TRUE(waitFor([&] { return !musterd.running() || !servedSerial(grpc_target).empty(); }));
  ASSERT_TRUE(musterd.running()) << musterd.err();
  auto chain = agent::fetchServerChain(grpc_target, 5'000);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(crypto::inspectCert(*chain)->names, std::vector<std::string>{"only-this-name.invalid"});

  // The pin is the CA's own (what a token from this musterd carries): only the name is wrong.
  const std::string pin = sha256Of(readFileOr(dir.sub("server") + "/tls/ca.crt"));
  auto agent = startAgent(dir, grpc_target, dir.sub("state-name"), "name-1",
                          {"--enroll-token", "mst_enroll_anysecret." + pin});
  expectGaveUp(*agent);
  EXPECT_TRUE(contains(agent->err(), "is not for '127.0.0.1'")) << agent->err();
  EXPECT_TRUE(contains(agent->err(), "only-this-name.invalid")) << agent->err();
  EXPECT_TRUE(contains(agent->err(), "--advertise 127.0.0.1")) << agent->err();
  EXPECT_FALSE(common::fileExists(dir.sub("state-name") + "/ca.crt"));
  musterd.signal(SIGTERM);
  EXPECT_EQ(musterd.wait(), 0);
}

// What a machine between the agent and musterd, and between an API client and musterd, saw
// of one enrollment and one command with a secret.
struct Capture {
  std::string agent_link;                                    // both directions
  std::string rest;                                          // both directions
  std::vector<std::pair<std::string, std::string>> secrets;  // what, value
  std::string output;  // the command's stdout, as the API returned it
};

Capture captureACommand(bool plaintext) {
  TempDir dir;
  Musterd server(dir, plaintext ? std::vector<std::string>{"--insecure-plaintext"}
                                : std::vector<std::string>{});
  RecordingProxy link_proxy(std::stoi(server.grpcTarget().substr(10)));
  RecordingProxy rest_proxy(server.httpPort());
  const std::string base =
      (plaintext ? "http://" : "https://") + rest_proxy.target();  // the cert names 127.0.0.1
  auto call = [&](const std::string& method, const std::string& path, const std::string* body) {
    return testkit::httpCall(method, base + path, server.adminToken(), body, 30, server.caFile());
  };
  const std::string token_body = R"({"kind":"enroll","uses":1,"ttl":"1h"})";
  auto created = call("POST", "/api/v1/tokens", &token_body);
  EXPECT_EQ(created.status, 201) << created.body;
  const std::string token = str(HttpResponse{0, created.body}.json(), "token");

  const std::string state = dir.sub("state-cap");
  std::vector<std::string> flags = {"--enroll-token", token};
  if (plaintext) flags.push_back("--insecure-plaintext");
  auto agent = startAgent(dir, link_proxy.target(), state, "cap-1", flags);
  EXPECT_TRUE(waitFor([&] {
    auto host = call("GET", "/api/v1/hosts/cap-1", nullptr);
    return str(HttpResponse{0, host.body}.json(), "status") == "online";
  })) << agent->err();

  const std::string argv_marker = uniqueMarker("ARGVMARK");
  const std::string out_marker = uniqueMarker("OUTMARK");
  const std::string secret_value = uniqueMarker("SECRETVALUE");
  // The output marker is printed from two halves, so it is nowhere in the command line; the
  // secret is checked by length, so it is nowhere in the output.
  const std::string half = out_marker.substr(0, 4);
  const std::string script = "echo " + argv_marker + " >/dev/null; printf '%s%s\\n' " + half + " " +
                             out_marker.substr(4) + "; test ${#MUSTER_T_SECRET} -eq " +
                             std::to_string(secret_value.size());
  boost::json::object run;
  run["hosts"] = boost::json::array{"cap-1"};
  run["argv"] = boost::json::array{"sh", "-c", script};
  run["secret_env"] = boost::json::object{{"MUSTER_T_SECRET", secret_value}};
  const std::string run_body = boost::json::serialize(run);
  auto started = call("POST", "/api/v1/commands", &run_body);
  EXPECT_EQ(started.status, 201) << started.body;
  auto started_json = HttpResponse{0, started.body}.json();
  std::string command_id;
  if (started_json.is_object() && started_json.as_object().contains("commands")) {
    command_id = str(started_json.at("commands").as_array().at(0), "id");
  }
  EXPECT_TRUE(waitFor([&] {
    auto c = call("GET", "/api/v1/commands/" + command_id, nullptr);
    return str(HttpResponse{0, c.body}.json(), "state") == "succeeded";
  })) << agent->err();
  Capture capture;
  auto output = call("GET", "/api/v1/commands/" + command_id + "/output", nullptr);
  capture.output = str(HttpResponse{0, output.body}.json(), "stdout");

  std::string credential = readFileOr(state + "/credential");
  credential = credential.substr(credential.find('\n') + 1);
  while (!credential.empty() && credential.back() == '\n') credential.pop_back();
  EXPECT_EQ(credential.rfind("mst_agent_", 0), 0u) << credential;
  agent->signal(SIGTERM);
  agent->wait();
  capture.agent_link = link_proxy.toServer() + link_proxy.toClient();
  capture.rest = rest_proxy.toServer() + rest_proxy.toClient();
  capture.secrets = {{"the agent credential", credential},
                     {"the enrollment token's secret", secretOf(token)},
                     {"the command line marker", argv_marker},
                     {"the output marker", out_marker},
                     {"the secret_env value", secret_value}};
  EXPECT_TRUE(contains(capture.output, out_marker)) << "the command did not run as planned";
  return capture;
}

TEST(TlsTest, ACaptureOfTheWireShowsNoSecrets) {
  Capture tls = captureACommand(false);
  ASSERT_GT(tls.agent_link.size(), 1000u);
  ASSERT_GT(tls.rest.size(), 1000u);
  EXPECT_EQ(tls.agent_link[0], '\x16') << "the link does not start with a TLS handshake";
  EXPECT_EQ(tls.rest[0], '\x16') << "the API does not start with a TLS handshake";
  for (const auto& [what, value] : tls.secrets) {
    ASSERT_GE(value.size(), 16u) << what;
    EXPECT_FALSE(contains(tls.agent_link, value)) << what << " crossed the agent link in clear";
  }
  // The API carried the enrollment token's secret (in its reply), the command line, the
  // secret and the output: none in clear either.
  for (const auto& [what, value] : tls.secrets) {
    if (what == "the agent credential") continue;  // never on the REST port
    EXPECT_FALSE(contains(tls.rest, value)) << what << " crossed the REST port in clear";
  }
}

TEST(TlsTest, ACaptureOfAPlaintextPairShowsTheSecrets) {
  // The check above can fail: without TLS the same capture holds every one of them.
  Capture plain = captureACommand(true);
  for (const auto& [what, value] : plain.secrets) {
    EXPECT_TRUE(contains(plain.agent_link, value)) << what << " not seen on a plaintext link";
    if (what == "the agent credential") continue;
    EXPECT_TRUE(contains(plain.rest, value)) << what << " not seen on a plaintext REST port";
  }
}

TEST(TlsTest, SwappedCertificateFilesServeNewHandshakesWithoutDroppingLinks) {
  TempDir dir;
  const int64_t now = std::time(nullptr);
  auto ca = crypto::createCa("Operator CA", now, 365);
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::vector<std::string> names = {"127.0.0.1", "localhost"};
  auto first = crypto::issueServerCert(*ca, names, "", now, 30);
  ASSERT_TRUE(first.ok()) << first.status();
  // --tls-ca at DATA/tls/ca.crt, where the harness looks for the CA to verify musterd with.
  const std::string tls_dir = dir.sub("server") + "/tls";
  ASSERT_TRUE(common::makeDirs(tls_dir, 0700).ok());
  const std::string cert_file = dir.sub("op.crt"), key_file = dir.sub("op.key"),
                    ca_file = tls_dir + "/ca.crt";
  ASSERT_TRUE(common::writeFileAtomic(ca_file, ca->cert_pem).ok());
  ASSERT_TRUE(common::writeFileAtomic(cert_file, first->cert_pem).ok());
  ASSERT_TRUE(common::writeFileAtomic(key_file, first->key_pem, 0600).ok());
  Musterd server(dir, {"--tls-cert", cert_file, "--tls-key", key_file, "--tls-ca", ca_file,
                       "--tls-refresh-interval", "1s"});
  const std::string rest_target = "127.0.0.1:" + std::to_string(server.httpPort());
  const std::string first_serial = crypto::inspectCert(first->cert_pem)->serial_hex;
  ASSERT_EQ(servedSerial(server.grpcTarget()), first_serial);
  ASSERT_EQ(servedSerial(rest_target), first_serial);

  std::string token = server.enrollToken();
  EXPECT_EQ(pinOf(token), sha256Of(ca->cert_pem));
  AgentProc agent(dir, server, "swap-1", token);
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("swap-1") == "online"; }))
      << agent.process().err();
  auto before = server.run({"swap-1"}, "echo before");
  std::string before_id = str(before.at("commands").as_array().at(0), "id");
  ASSERT_TRUE(waitFor([&] { return server.commandState(before_id) == "succeeded"; }));

  // A new certificate with a new key, copied over the old files (the key first, as an
  // operator would, so a refresh may see the new key with the old certificate for a moment).
  auto second = crypto::issueServerCert(*ca, names, "", now, 30);
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string second_serial = crypto::inspectCert(second->cert_pem)->serial_hex;
  ASSERT_NE(second_serial, first_serial);
  ASSERT_TRUE(common::writeFileAtomic(key_file, second->key_pem, 0600).ok());
  ASSERT_TRUE(common::writeFileAtomic(cert_file, second->cert_pem).ok());
  EXPECT_TRUE(waitFor([&] { return servedSerial(server.grpcTarget()) == second_serial; }))
      << server.process().err();
  EXPECT_TRUE(waitFor([&] { return servedSerial(rest_target) == second_serial; }))
      << server.process().err();

  // The link that was up stays up: no reconnect, and it still runs commands.
  auto after = server.run({"swap-1"}, "echo after");
  std::string after_id = str(after.at("commands").as_array().at(0), "id");
  ASSERT_TRUE(waitFor([&] { return server.commandState(after_id) == "succeeded"; }));
  EXPECT_EQ(server.output(after_id), "after\n");
  EXPECT_EQ(count(agent.process().err(), "connected to "), 1) << agent.process().err();
  EXPECT_EQ(server.hostStatus("swap-1"), "online");
  // A new agent's handshake gets the new certificate and trusts it through the same CA.
  AgentProc late(dir, server, "swap-2", token);
  EXPECT_TRUE(waitFor([&] { return server.hostStatus("swap-2") == "online"; }))
      << late.process().err();
}

// musterd's count of agent streams by TLS handshake ("resumed" or "full"); -1 if absent.
long tlsStreams(const Musterd& server, const std::string& handshake) {
  const std::string name = "muster_agent_tls_streams_total{handshake=\"" + handshake + "\"} ";
  std::string metrics = server.get("/metrics").body;
  size_t at = metrics.find("\n" + name);
  return at == std::string::npos ? -1 : std::stol(metrics.substr(at + 1 + name.size()));
}

TEST(TlsTest, AgentsResumeTheirTlsSessionAfterMusterdRestarts) {
  TempDir dir;
  Musterd server(dir);
  AgentProc agent(dir, server, "resume-1", server.enrollToken());
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("resume-1") == "online"; }))
      << agent.process().err();
  EXPECT_EQ(tlsStreams(server, "full"), 1);
  EXPECT_EQ(tlsStreams(server, "resumed"), 0);
  const std::string key_file = server.dataDir() + "/tls/session-ticket.key";
  ASSERT_EQ(readFileOr(key_file).size(), 80u);

  // Restarted with the same ticket key: the agent's ticket still opens its session, so the
  // reconnect is an abbreviated handshake (no certificate sent, signed or verified).
  server.kill9();
  server.start();
  EXPECT_TRUE(waitFor([&] { return tlsStreams(server, "resumed") == 1; }, 30s))
      << agent.process().err();
  EXPECT_EQ(tlsStreams(server, "full"), 0);

  // Without the key (a new one is made), the old ticket opens nothing: a full handshake.
  server.kill9();
  ASSERT_EQ(::unlink(key_file.c_str()), 0);
  server.start();
  EXPECT_TRUE(waitFor([&] { return tlsStreams(server, "full") == 1; }, 30s))
      << agent.process().err();
  EXPECT_EQ(tlsStreams(server, "resumed"), 0);
  // The link works either way.
  auto ran = server.run({"resume-1"}, "echo resumed");
  std::string id = str(ran.at("commands").as_array().at(0), "id");
  EXPECT_TRUE(waitFor([&] { return server.commandState(id) == "succeeded"; }));
  EXPECT_EQ(server.output(id), "resumed\n");
}

}  // namespace
}  // namespace muster::itest
