// End-to-end: real musterd and real muster-agent processes on 127.0.0.1, real SQLite.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

std::string field(const boost::json::value& v, const char* key) {
  if (!v.is_object()) return "";
  auto* p = v.as_object().if_contains(key);
  if (!p) return "";
  if (p->is_string()) return std::string(p->as_string());
  if (p->is_int64()) return std::to_string(p->as_int64());
  if (p->is_null()) return "null";
  return boost::json::serialize(*p);
}

std::vector<std::string> commandIds(const boost::json::value& run) {
  std::vector<std::string> ids;
  for (const auto& c : run.at("commands").as_array()) ids.push_back(field(c, "id"));
  return ids;
}

bool isTerminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "timed_out" ||
         state == "cancelled" || state == "expired";
}

class FleetTest : public ::testing::Test {
 protected:
  void startServer(std::vector<std::string> extra = {}) {
    server_ = std::make_unique<Musterd>(dir_, std::move(extra));
    token_ = server_->enrollToken();
  }
  AgentProc& startAgent(const std::string& id, std::vector<std::string> extra = {}) {
    agents_.push_back(std::make_unique<AgentProc>(dir_, *server_, id, token_, std::move(extra)));
    return *agents_.back();
  }
  void expectOnline(const std::string& id) {
    ASSERT_TRUE(waitFor([&] { return server_->hostStatus(id) == "online"; }))
        << id << " never came online; agent log:\n"
        << agentLog(id);
  }
  std::string agentLog(const std::string& id) {
    for (auto& a : agents_) {
      if (a->id() == id) return a->process().err();
    }
    return "";
  }
  std::string waitTerminal(const std::string& command_id,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    std::string state;
    waitFor(
        [&] {
          state = server_->commandState(command_id);
          return isTerminal(state);
        },
        timeout);
    return state;
  }

  TempDir dir_;
  std::unique_ptr<Musterd> server_;
  std::string token_;
  std::vector<std::unique_ptr<AgentProc>> agents_;
};

TEST_F(FleetTest, AgentEnrollsAndIsListedOnlineWithFacts) {
  startServer();
  startAgent("host-a", {"--label", "env=test"});
  expectOnline("host-a");
  auto host = server_->host("host-a");
  EXPECT_NE(field(host.at("facts"), "hostname"), "");
  EXPECT_EQ(field(host.at("labels"), "env"), "test");
  // The credential is on disk with mode 0600; the token is not needed any more.
  auto perms = std::filesystem::status(agents_[0]->stateDir() + "/credential").permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST_F(FleetTest, RunsOnThreeHostsWithOutputAndExitCodes) {
  startServer();
  for (auto id : {"h1", "h2", "h3"}) startAgent(id);
  for (auto id : {"h1", "h2", "h3"}) expectOnline(id);
  auto run =
      server_->run({"h1", "h2", "h3"},
                   "echo hello from $(cat /proc/sys/kernel/hostname); echo oops >&2; exit 3");
  auto ids = commandIds(run);
  ASSERT_EQ(ids.size(), 3u);
  for (const auto& id : ids) {
    EXPECT_EQ(waitTerminal(id), "failed");
    auto c = server_->command(id);
    EXPECT_EQ(field(c, "exit_code"), "3");
    EXPECT_EQ(server_->output(id, "stdout").rfind("hello from ", 0), 0u);
    EXPECT_EQ(server_->output(id, "stderr"), "oops\n");
  }
  auto ok = commandIds(server_->run({"h2"}, "printf '%s' done"));
  EXPECT_EQ(waitTerminal(ok[0]), "succeeded");
  EXPECT_EQ(server_->output(ok[0]), "done");
}

TEST_F(FleetTest, CancelKillsTheRunningCommand) {
  startServer();
  startAgent("h1");
  expectOnline("h1");
  std::string marker = dir_.sub("cancel-marker");
  auto ids = commandIds(server_->run({"h1"}, "echo started; sleep 30; touch " + marker));
  ASSERT_TRUE(waitFor([&] { return server_->commandState(ids[0]) == "running"; }));
  auto r = server_->post("/api/v1/commands/" + ids[0] + "/cancel", "{}");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(waitTerminal(ids[0], std::chrono::seconds(20)), "cancelled");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST_F(FleetTest, TimeoutKillsTheCommandAndReportsTimedOut) {
  startServer();
  startAgent("h1");
  expectOnline("h1");
  auto ids = commandIds(server_->run({"h1"}, "echo before; sleep 30", "1s"));
  EXPECT_EQ(waitTerminal(ids[0], std::chrono::seconds(20)), "timed_out");
  EXPECT_EQ(server_->output(ids[0]), "before\n");
}

TEST_F(FleetTest, CommandForOfflineHostIsDeliveredWhenItReturns) {
  startServer();
  auto& agent = startAgent("h1");
  expectOnline("h1");
  agent.stop();
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("h1") == "offline"; }));
  auto ids = commandIds(server_->run({"h1"}, "echo late"));
  EXPECT_EQ(server_->commandState(ids[0]), "queued");
  agent.start();
  EXPECT_EQ(waitTerminal(ids[0]), "succeeded");
  EXPECT_EQ(server_->output(ids[0]), "late\n");
}

TEST_F(FleetTest, AgentKilledMidCommandReportsItFailedAfterRestart) {
  startServer();
  auto& agent = startAgent("h1");
  expectOnline("h1");
  std::string marker = dir_.sub("k9-marker");
  auto ids = commandIds(server_->run({"h1"}, "echo x >> " + marker + "; sleep 3"));
  // Running means accepted; wait until the shell really did its first step.
  ASSERT_TRUE(waitFor([&] { return readFileOr(marker) == "x\n"; }));
  ASSERT_TRUE(waitFor([&] { return server_->commandState(ids[0]) == "running"; }));
  agent.kill9();
  agent.start();
  EXPECT_EQ(waitTerminal(ids[0]), "failed");
  EXPECT_EQ(field(server_->command(ids[0]), "error"),
            "agent restarted while the command was running");
  // Redelivery after the restart did not run it again.
  EXPECT_EQ(readFileOr(marker), "x\n");
}

TEST_F(FleetTest, OutputOfACommandThatEndedWhileTheServerWasDownIsStoredWhole) {
  startServer();
  startAgent("h1");
  expectOnline("h1");
  auto ids = commandIds(server_->run({"h1"}, "echo begin; sleep 1; echo end"));
  // "begin" is stored live; then the server dies and the command ends without it.
  ASSERT_TRUE(waitFor([&] { return server_->output(ids[0]) == "begin\n"; }));
  server_->kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  server_->start();
  // The agent replays the whole output from disk as one chunk at offset 0.
  EXPECT_EQ(waitTerminal(ids[0]), "succeeded");
  EXPECT_EQ(server_->output(ids[0]), "begin\nend\n");
}

TEST_F(FleetTest, ServerKilledMidCommandLosesNothingAndRunsNothingTwice) {
  startServer();
  for (auto id : {"h1", "h2"}) startAgent(id);
  for (auto id : {"h1", "h2"}) expectOnline(id);
  std::string marker = dir_.sub("s9-marker");
  auto slow = commandIds(server_->run(
      {"h1", "h2"}, "echo begin; sleep 2; echo $(hostname)-run >> " + marker + "; echo end"));
  ASSERT_TRUE(waitFor([&] {
    for (const auto& id : slow) {
      if (server_->commandState(id) != "running") return false;
    }
    return true;
  }));
  server_->kill9();
  server_->start();
  // Queued while agents reconnect, then run once.
  auto late = commandIds(server_->run({"h1"}, "echo after-restart"));
  for (const auto& id : slow) {
    EXPECT_EQ(waitTerminal(id), "succeeded") << id;
    EXPECT_EQ(server_->output(id), "begin\nend\n");
  }
  EXPECT_EQ(waitTerminal(late[0]), "succeeded");
  auto lines = readFileOr(marker);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2) << lines;
}

TEST_F(FleetTest, HostGoesOfflineWhenItStopsHeartbeating) {
  startServer({"--heartbeat-interval", "500ms"});
  auto& agent = startAgent("h1");
  expectOnline("h1");
  agent.process().signal(SIGSTOP);  // the TCP stream stays open, heartbeats stop
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      waitFor([&] { return server_->hostStatus("h1") == "offline"; }, std::chrono::seconds(10)));
  auto took = std::chrono::steady_clock::now() - start;
  // 3 missed heartbeats (1.5 s) plus the sweep period; generous bound for a loaded machine.
  EXPECT_LT(took, std::chrono::seconds(5));
  agent.process().signal(SIGCONT);
  expectOnline("h1");
}

TEST_F(FleetTest, AgentStopsGracefullyAndReportsKilledCommands) {
  startServer();
  auto& agent = startAgent("h1", {"--shutdown-grace", "500ms"});
  expectOnline("h1");
  auto ids = commandIds(server_->run({"h1"}, "sleep 60"));
  ASSERT_TRUE(waitFor([&] { return server_->commandState(ids[0]) == "running"; }));
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_EQ(waitTerminal(ids[0]), "failed");
  EXPECT_EQ(field(server_->command(ids[0]), "error"),
            "agent stopped while the command was running");
}

TEST_F(FleetTest, UnknownCredentialIsRefusedAndTheAgentBacksOff) {
  startServer();
  auto& agent = startAgent("h1");
  expectOnline("h1");
  agent.stop();
  // Tamper with the credential: the server must refuse it with a clear reason.
  std::string cred_path = agent.stateDir() + "/credential";
  std::ofstream(cred_path, std::ios::trunc) << "h1\nmst_agent_wrong\n";
  agent.start();
  ASSERT_TRUE(waitFor([&] {
    return agent.process().err().find("server refused this agent") != std::string::npos;
  }));
  EXPECT_EQ(server_->hostStatus("h1"), "offline");
  EXPECT_NE(server_->process().err().find("agent 'h1' is not enrolled or its credential is wrong"),
            std::string::npos);
}

TEST_F(FleetTest, BadFlagsExitWithUsageError) {
  Process bad_server({MUSTERD_BIN, "--no-such-flag"}, dir_.sub("bad-musterd"));
  EXPECT_EQ(bad_server.wait(), 2);
  EXPECT_NE(bad_server.err().find("--no-such-flag"), std::string::npos);
  Process bad_agent({AGENT_BIN, "--label", "novalue"}, dir_.sub("bad-agent"));
  EXPECT_EQ(bad_agent.wait(), 2);
}

TEST_F(FleetTest, ConfigFileSetsEveryFlagAndUnknownKeysAreRefused) {
  int http_port = freePort();
  std::string config = dir_.sub("musterd.toml");
  std::ofstream(config) << "data-dir = \"" << dir_.sub("cfg-data") << "\"\n"
                        << "http-listen = \"127.0.0.1:" << http_port << "\"\n"
                        << "grpc-listen = \"127.0.0.1:" << freePort() << "\"\n";
  Process server({MUSTERD_BIN, "--config", config}, dir_.sub("cfg-musterd"));
  EXPECT_TRUE(waitFor([&] {
    return server.out().find("http=" + std::to_string(http_port)) != std::string::npos;
  })) << server.err();
  EXPECT_TRUE(std::filesystem::exists(dir_.sub("cfg-data") + "/admin.token"));
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);

  std::string bad = dir_.sub("bad.toml");
  std::ofstream(bad) << "no_such_key = 1\n";
  Process refused({MUSTERD_BIN, "--config", bad}, dir_.sub("cfg-bad"));
  EXPECT_EQ(refused.wait(), 2);
}

TEST_F(FleetTest, JsonLogsAreOneValidObjectPerLine) {
  startServer({"--log-format", "json"});
  startAgent("h1", {"--label", "quote=\"x\""});
  expectOnline("h1");
  auto ids = commandIds(server_->run({"h1"}, "echo hi"));
  EXPECT_EQ(waitTerminal(ids[0]), "succeeded");
  server_->stop();
  std::istringstream lines(server_->process().err());
  std::string line;
  int parsed = 0;
  while (std::getline(lines, line)) {
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    EXPECT_FALSE(ec) << line;
    if (!ec) {
      EXPECT_TRUE(v.as_object().contains("msg")) << line;
      ++parsed;
    }
  }
  EXPECT_GT(parsed, 2);
}

TEST_F(FleetTest, GarbageOnTheAgentPortDoesNotHurtTheServer) {
  startServer();
  startAgent("h1");
  expectOnline("h1");
  // Raw bytes that are not HTTP/2, a truncated HTTP/2 preface, and a huge frame header.
  int port = std::stoi(server_->grpcTarget().substr(server_->grpcTarget().rfind(':') + 1));
  sendRaw(port, std::string(4096, '\xff'));
  sendRaw(port, std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24));
  sendRaw(port,
          std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x01", 33));
  EXPECT_TRUE(server_->process().running());
  auto ids = commandIds(server_->run({"h1"}, "echo still fine"));
  EXPECT_EQ(waitTerminal(ids[0]), "succeeded");
}

}  // namespace
}  // namespace muster::itest
