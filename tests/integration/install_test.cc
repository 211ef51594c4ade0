// The one-line installer end to end: `muster token create --enroll` prints it, and the line
// (curl pinned to musterd's server key, the script musterd serves, the binary it serves
// checked by size and SHA-256) installs a real muster-agent that enrolls and runs a command.
// A wrong key pin stops it before anything is fetched.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "common/fs.h"
#include "crypto/secrets.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// The line as a root shell on the host runs it; here without sudo (we are root already, and
// sudo may not be installed), installing under `root` and running the agent in the
// foreground so the test owns its process.
std::unique_ptr<Process> runLine(const TempDir& dir, const std::string& line,
                                 const std::string& root, const std::string& name) {
  std::string cmd = line;
  size_t sudo = cmd.find("| sudo ");
  if (sudo != std::string::npos) cmd.replace(sudo, 7, "| env ");
  return std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/env", "MUSTER_PREFIX=" + root + "/usr",
                               "MUSTER_STATE_DIR=" + root + "/state", "MUSTER_FOREGROUND=1", "sh",
                               "-c", cmd},
      dir.sub(name));
}

TEST(InstallTest, TheOneLinerInstallsAndEnrollsAnAgent) {
  TempDir dir;
  // Hosts reach this musterd as 127.0.0.1 (what its certificate names).
  Musterd server(dir, {"--agent-binary", AGENT_BIN, "--advertise", "127.0.0.1"});

  // The CLI prints the line beside the token.
  Process cli({MUSTER_CLI_BIN, "--server", server.httpBase(), "--ca", server.caFile(), "--token",
               server.adminToken(), "token", "create", "--enroll", "--uses", "1", "--host",
               "inst-1", "--install"},
              dir.sub("cli"));
  ASSERT_EQ(cli.wait(), 0) << cli.err();
  const std::string token = cli.out().substr(0, cli.out().find('\n'));
  const std::string err = cli.err();
  size_t at = err.find("curl -fsS");
  ASSERT_NE(at, std::string::npos) << err;
  const std::string line = err.substr(at, err.find('\n', at) - at);
  EXPECT_TRUE(contains(line, "--pinnedpubkey 'sha256//")) << line;
  EXPECT_TRUE(contains(line, "https://127.0.0.1:" + std::to_string(server.httpPort()))) << line;
  EXPECT_TRUE(contains(line, "MUSTER_ENROLL_TOKEN='" + token + "'")) << line;
  EXPECT_TRUE(contains(line, "MUSTER_AGENT_ID='inst-1'")) << line;

  // A wrong key pin: curl refuses before anything is fetched or installed.
  std::string forged = line;
  size_t pin = forged.find("sha256//") + 8;
  forged.replace(pin, 4, forged.substr(pin, 4) == "AAAA" ? "BBBB" : "AAAA");
  const std::string bad_root = dir.sub("bad-host");
  auto refused = runLine(dir, forged, bad_root, "install-forged");
  refused->wait(60s);  // sh's status: it read nothing, so 0; curl said why on stderr
  EXPECT_TRUE(contains(refused->err(), "pinned public key")) << refused->err();
  EXPECT_FALSE(common::fileExists(bad_root + "/usr/bin/muster-agent"));
  EXPECT_FALSE(common::fileExists(bad_root + "/state/enroll.token"));

  // The line as printed: installed, enrolled, online, running commands.
  const std::string root = dir.sub("host");
  auto agent = runLine(dir, line, root, "install");
  ASSERT_TRUE(waitFor([&] { return server.hostStatus("inst-1") == "online"; }, 60s))
      << agent->err();
  const std::string installed = readFileOr(root + "/usr/bin/muster-agent");
  EXPECT_EQ(crypto::sha256Hex(installed), crypto::sha256Hex(readFileOr(AGENT_BIN)));
  struct stat st {};
  ASSERT_EQ(::stat((root + "/state/enroll.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the token file is a secret";
  auto run = server.run({"inst-1"}, "echo installed-ok");
  const std::string id(run.at("commands").at(0).at("id").as_string());
  ASSERT_TRUE(waitFor([&] { return server.commandState(id) == "succeeded"; })) << agent->err();
  EXPECT_EQ(server.output(id), "installed-ok\n");
  agent->signal(SIGTERM);
  agent->wait();

  // What the line fetched, fetched by hand: the binary with its SHA-256 in a header.
  auto binary = server.get("/install/muster-agent");
  EXPECT_EQ(binary.status, 200);
  EXPECT_EQ(binary.body.size(), installed.size());
  auto script = server.get("/install/agent.sh");
  EXPECT_EQ(script.status, 200);
  EXPECT_TRUE(contains(script.body, crypto::sha256Hex(installed))) << script.body;
}

TEST(InstallTest, WithoutABinaryTheTokenSaysNoInstallerAndTheRoutesSayHow) {
  TempDir dir;
  const std::string binary = dir.sub("muster-agent-gone");
  { std::ofstream(binary) << "soon gone"; }
  Musterd server(dir, {"--agent-binary", binary});
  std::remove(binary.c_str());  // removed after the start (a missing one is refused at start)
  auto r = server.post("/api/v1/tokens", R"({"kind":"enroll","uses":1,"ttl":"1h"})");
  ASSERT_EQ(r.status, 201) << r.body;
  boost::json::value body = r.json();
  ASSERT_TRUE(body.is_object()) << r.body;
  EXPECT_TRUE(body.as_object().at("install_command").is_null()) << r.body;
  auto script = server.get("/install/agent.sh");
  EXPECT_EQ(script.status, 404);
  EXPECT_TRUE(contains(script.body, "--agent-binary")) << script.body;
}

}  // namespace
}  // namespace muster::itest
