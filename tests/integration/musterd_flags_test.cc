// musterd refuses listen addresses that do not resolve and limits outside their range; it
// serves TLS on any address and plaintext only with --insecure-plaintext.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

class MusterdFlagsTest : public ::testing::Test {
 protected:
  // Runs musterd with `args` on loopback ports of its own; returns its exit status.
  int runRefused(std::vector<std::string> args, std::string* err) {
    std::vector<std::string> argv = {MUSTERD_BIN, "--data-dir", dir_.sub("data")};
    bool http = false, grpc = false;
    for (const auto& a : args) {
      http = http || a == "--http-listen";
      grpc = grpc || a == "--grpc-listen";
    }
    if (!http) argv.insert(argv.end(), {"--http-listen", "127.0.0.1:0"});
    if (!grpc) argv.insert(argv.end(), {"--grpc-listen", "127.0.0.1:0"});
    argv.insert(argv.end(), args.begin(), args.end());
    return runToExit(argv, err);
  }
  // Runs `argv` until it exits (killed after 20 s); returns its exit status.
  int runToExit(const std::vector<std::string>& argv, std::string* err) {
    Process p(argv, dir_.sub("run-" + std::to_string(runs_++)));
    int status = p.wait(std::chrono::seconds(20));
    if (status == -1) {
      p.signal(SIGKILL);
      p.wait();
    }
    *err = p.err();
    return status;
  }

  TempDir dir_;
  int runs_ = 0;
};

TEST_F(MusterdFlagsTest, ListenAddressesThatDoNotResolveAreRefused) {
  std::vector<std::pair<std::string, std::string>> cases = {
      {"--http-listen", "localhost.attacker.invalid:0"},
      {"--grpc-listen", "127.0.0.1.invalid:0"},
  };
  for (const auto& [flag, listen] : cases) {
    std::string err;
    EXPECT_EQ(runRefused({flag, listen}, &err), 2) << flag << ": " << err;
    EXPECT_NE(err.find(std::string(flag) + " " + listen), std::string::npos) << flag << ": " << err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.sub("data"))) << "refused before creating anything";
}

// TLS is the default on every address; plaintext needs --insecure-plaintext, and says so.
TEST_F(MusterdFlagsTest, EveryInterfaceIsServedWithTlsAndPlaintextOnlyOnPurpose) {
  for (bool plaintext : {false, true}) {
    std::vector<std::string> argv = {MUSTERD_BIN,     "--data-dir", dir_.sub(plaintext ? "p" : "t"),
                                     "--http-listen", "0.0.0.0:0",  "--grpc-listen",
                                     "0.0.0.0:0"};
    if (plaintext) argv.push_back("--insecure-plaintext");
    Process p(argv, dir_.sub(plaintext ? "musterd-plain" : "musterd-tls"));
    ASSERT_TRUE(waitFor([&] {
      return !p.running() || p.out().find("musterd listening") != std::string::npos;
    })) << p.err();
    ASSERT_TRUE(p.running()) << p.err();
    std::string err = p.err();
    if (plaintext) {
      EXPECT_NE(err.find("WITHOUT TLS"), std::string::npos) << err;
      EXPECT_FALSE(std::filesystem::exists(dir_.sub("p") + "/tls/ca.crt"));
    } else {
      EXPECT_NE(err.find("(TLS)"), std::string::npos) << err;
      EXPECT_NE(err.find("https://"), std::string::npos) << err;
      EXPECT_TRUE(std::filesystem::exists(dir_.sub("t") + "/tls/ca.crt"));
    }
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(), 0) << p.err();
  }
}

TEST_F(MusterdFlagsTest, DurationsAndLimitsOutOfRangeAreRefused) {
  std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--heartbeat-interval", "9999999999999h"}, "--heartbeat-interval"},
      {{"--heartbeat-interval", "50ms"}, "--heartbeat-interval"},
      {{"--default-expiry", "400d"}, "--default-expiry"},
      {{"--http-header-timeout", "0s"}, "--http-header-timeout"},
      {{"--http-idle-timeout", "999999999999d"}, "--http-idle-timeout"},
      {{"--http-body-timeout", "soon"}, "--http-body-timeout"},
      {{"--http-max-connections", "10", "--http-max-followers", "20"}, "--http-max-followers"},
      {{"--http-max-connections", "0"}, "--http-max-connections"},
      {{"--http-follower-buffer-bytes", "100"}, "--http-follower-buffer-bytes"},
      {{"--events-retention", "1h"}, "--events-retention"},  // swept hourly: at least 1d
      {{"--events-retention", "-5d"}, "--events-retention"},
      {{"--events-retention", "never"}, "--events-retention"},
  };
  for (const auto& [args, says] : cases) {
    std::string err;
    EXPECT_EQ(runRefused(args, &err), 2) << args[0] << " " << args[1] << ": " << err;
    EXPECT_NE(err.find(says), std::string::npos) << args[0] << " " << args[1] << ": " << err;
  }
}

TEST_F(MusterdFlagsTest, AgentDurationsAndSizesOutOfRangeAreRefused) {
  std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--shutdown-grace", "9999999999999h"}, "--shutdown-grace"},
      {{"--shutdown-grace", "2h"}, "--shutdown-grace"},
      {{"--backoff-cap", "10ms"}, "--backoff-cap"},
      {{"--backoff-cap", "400d"}, "--backoff-cap"},
      {{"--max-output-bytes", "99999999999999999999999"}, "--max-output-bytes"},
      {{"--max-output-bytes", "12"}, "--max-output-bytes"},
  };
  for (const auto& [args, says] : cases) {
    std::vector<std::string> argv = {AGENT_BIN, "--server", "127.0.0.1:1", "--state-dir",
                                     dir_.sub("agent-" + std::to_string(runs_))};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string err;
    EXPECT_EQ(runToExit(argv, &err), 2) << args[0] << " " << args[1] << ": " << err;
    EXPECT_NE(err.find(says), std::string::npos) << args[0] << " " << args[1] << ": " << err;
  }
}

}  // namespace
}  // namespace muster::itest
