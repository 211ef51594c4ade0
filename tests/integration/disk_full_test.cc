// musterd on a real full filesystem: commands that finish while the data dir's disk is full
// are stored once space returns, with output equal to what the process wrote, and reads keep
// being served meanwhile. The data dir is a small tmpfs mounted for the test (needs root;
// skipped, saying so, elsewhere).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

std::string field(const boost::json::value& v, const char* key) {
  if (!v.is_object()) return "";
  auto* p = v.as_object().if_contains(key);
  return p && p->is_string() ? std::string(p->as_string()) : "";
}

// Fills the filesystem of `dir` to the last byte with `path` (a file that can be deleted).
void fillDisk(const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  std::string block(64 * 1024, 'x');
  while (f.write(block.data(), static_cast<std::streamsize>(block.size()))) {
  }
  f.close();
  std::ofstream tail(path + ".tail", std::ios::binary);
  while (tail.put('x')) {
    tail.flush();
    if (!tail) break;
  }
}

uint64_t freeBytes(const std::string& dir) {
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.sub("server");
    std::filesystem::create_directories(data_);
    if (geteuid() != 0 || mount("tmpfs", data_.c_str(), "tmpfs", 0, "size=16m,mode=0700") != 0) {
      GTEST_SKIP() << "needs root to mount a small tmpfs as the data dir: " << std::strerror(errno);
    }
    mounted_ = true;
  }
  void TearDown() override {
    agent_.reset();
    server_.reset();
    if (mounted_) umount2(data_.c_str(), MNT_DETACH);
  }

  TempDir dir_;
  std::string data_;
  bool mounted_ = false;
  std::unique_ptr<Musterd> server_;
  std::unique_ptr<AgentProc> agent_;
};

TEST_F(DiskFullTest, CommandsFinishingWhileTheDiskIsFullAreStoredWithAllTheirOutput) {
  server_ = std::make_unique<Musterd>(dir_);
  agent_ = std::make_unique<AgentProc>(dir_, *server_, "full-1", server_->enrollToken());
  agent_->start();
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("full-1") == "online"; }))
      << agent_->process().err();
  // A command stored before the disk fills, to read while it is full.
  auto before = server_->run({"full-1"}, "echo stored-before");
  std::string before_id = field(before.at("commands").as_array()[0], "id");
  ASSERT_TRUE(waitFor([&] { return server_->commandState(before_id) == "succeeded"; }));

  // Runs are stored before the disk fills; their commands start only once the disk is full
  // (they wait for a file the test creates outside the data dir), so their output and
  // results arrive while nothing can be written.
  std::string go = dir_.sub("go");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = server_->run({"full-1"}, "while [ ! -e " + go + " ]; do sleep 0.05; done; seq 1 " +
                                          std::to_string(200000 + i) + "; echo done-" +
                                          std::to_string(i) + " >&2");
    ids.push_back(field(r.at("commands").as_array()[0], "id"));
  }
  ASSERT_TRUE(waitFor([&] {
    for (const auto& id : ids) {
      if (server_->commandState(id) != "running" && server_->commandState(id) != "dispatched")
        return false;
    }
    return true;
  }));
  std::string filler = data_ + "/filler";
  fillDisk(filler);
  ASSERT_LT(freeBytes(data_), 64u * 1024);
  { std::ofstream(go) << "go"; }
  // The agent finished them all (its outbox holds the results) while the disk was full.
  auto finished = [&] {
    size_t n = 0, pos = 0;
    std::string log = agent_->process().err();
    while ((pos = log.find("finished: COMMAND_OUTCOME_SUCCEEDED", pos)) != std::string::npos) {
      ++n;
      ++pos;
    }
    return n;
  };
  ASSERT_TRUE(waitFor([&] { return finished() >= 1 + ids.size(); }, std::chrono::seconds(30)))
      << agent_->process().err();
  // Reads are served while the disk is full.
  EXPECT_EQ(server_->get("/api/v1/commands/" + before_id).status, 200);
  EXPECT_EQ(server_->output(before_id), "stored-before\n");
  EXPECT_EQ(server_->get("/api/v1/hosts").status, 200);
  // The writes really failed (output past what the WAL already holds needs new blocks),
  // and no result was acked meanwhile.
  ASSERT_TRUE(waitFor([&] {
    return server_->process().err().find("cannot store output of command") != std::string::npos;
  })) << server_->process().err();
  for (const auto& id : ids) EXPECT_NE(server_->commandState(id), "succeeded") << id;
  // Let the writes fail for a while (the agent retries), then give the space back.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  std::filesystem::remove(filler);
  std::filesystem::remove(filler + ".tail");
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(waitFor([&] { return server_->commandState(ids[i]) == "succeeded"; },
                        std::chrono::seconds(60)))
        << ids[i] << " is " << server_->commandState(ids[i]) << "\nagent:\n"
        << agent_->process().err() << "\nmusterd:\n"
        << server_->process().err();
    std::string expected;
    for (int n = 1; n <= 200000 + static_cast<int>(i); ++n) expected += std::to_string(n) + "\n";
    EXPECT_EQ(server_->output(ids[i]), expected) << ids[i];
    EXPECT_EQ(server_->output(ids[i], "stderr"), "done-" + std::to_string(i) + "\n");
  }
  EXPECT_TRUE(server_->process().running());
}

}  // namespace
}  // namespace muster::itest
