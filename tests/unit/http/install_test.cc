// The installer's script and one-liner: what they name musterd by, whatever the caller's Host
// header says (it ends up in a shell script run as root).
#include "server/http/install.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace muster::server::http {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

class AgentInstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ =
        (std::filesystem::temp_directory_path() / ("muster-install-" + std::to_string(::getpid())))
            .string();
    std::ofstream(binary_) << "not really an agent";
    install_.binary_path = binary_;
    install_.agent_port = 7443;
    install_.http_port = 7080;
    install_.public_name = "musterd.example";
  }
  void TearDown() override { std::filesystem::remove(binary_); }
  std::string binary_;
  AgentInstall install_;  // plaintext: no identity needed here
};

TEST_F(AgentInstallTest, NamesMusterdAsTheCallerReachedItUnlessThatWasLoopback) {
  EXPECT_TRUE(contains(install_.command("10.0.0.5:7080", "mst_enroll_x"),
                       "'http://10.0.0.5:7080/install/agent.sh'"));
  // Loopback (or a tunnel to it) is no name for other hosts: musterd's own, and its port.
  for (const char* header : {"127.0.0.1:17080", "localhost:7080", "[::1]:9", ""}) {
    EXPECT_TRUE(contains(install_.command(header, "t"), "'http://musterd.example:7080/")) << header;
  }
  // No port: the scheme's default, as the client used it.
  EXPECT_TRUE(contains(install_.command("musterd.example", "t"), "//musterd.example:80/"));
  EXPECT_TRUE(contains(install_.command("[2001:db8::1]:7080", "t"), "//[2001:db8::1]:7080/"));
  EXPECT_TRUE(contains(install_.command("10.0.0.5:7080", "tok", "web-1"),
                       "MUSTER_ENROLL_TOKEN='tok' MUSTER_AGENT_ID='web-1' sh"));
}

TEST_F(AgentInstallTest, AHostileHostHeaderNeverReachesTheScript) {
  for (const char* header : {"x';rm -rf /;'", "a b", "$(reboot)", "evil`id`:80", "h\n:1"}) {
    auto script = install_.script(header);
    ASSERT_TRUE(script.ok()) << script.status();
    EXPECT_TRUE(contains(*script, "base='http://musterd.example:7080'")) << header;
    EXPECT_FALSE(contains(*script, "rm -rf")) << header;
    EXPECT_FALSE(contains(*script, "reboot")) << header;
    EXPECT_FALSE(contains(install_.command(header, "t"), "`")) << header;
  }
}

TEST_F(AgentInstallTest, TheScriptCarriesTheBinarysSizeAndHashAndFollowsItsChanges) {
  auto first = install_.fingerprint();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->size, 19u);
  auto script = install_.script("10.0.0.5:7080");
  ASSERT_TRUE(script.ok());
  EXPECT_TRUE(contains(*script, "size='19'"));
  EXPECT_TRUE(contains(*script, "sha256='" + first->sha256 + "'"));
  EXPECT_TRUE(contains(*script, "--insecure-plaintext")) << "a plaintext musterd's agents";
  std::ofstream(binary_) << "a new build of the agent, longer";
  std::filesystem::last_write_time(
      binary_, std::filesystem::file_time_type::clock::now() + std::chrono::seconds(5));
  auto second = install_.fingerprint();
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->sha256, first->sha256);
  std::filesystem::remove(binary_);
  EXPECT_TRUE(absl::IsNotFound(install_.fingerprint().status()));
  EXPECT_TRUE(absl::IsNotFound(install_.script("h").status()));
}

}  // namespace
}  // namespace muster::server::http
