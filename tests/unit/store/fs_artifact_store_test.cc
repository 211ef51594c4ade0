// The filesystem artifact store: staging, verification, content addressing, resume, sweep.
#include "store/fs/fs_artifact_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/clock.h"
#include "crypto/secrets.h"

namespace muster::store::fs {
namespace {

namespace stdfs = std::filesystem;

class FsArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = stdfs::temp_directory_path() /
           ("muster-artifacts-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    stdfs::remove_all(dir_);
    reopen();
  }
  void TearDown() override {
    store_.reset();
    stdfs::remove_all(dir_);
  }
  void reopen(std::vector<std::string> resumable = {}, uint64_t quota = 1 << 30) {
    store_ = std::make_unique<FsArtifactStore>(
        FsArtifactStoreOptions{.dir = dir_.string(), .quota_bytes = quota}, clock_);
    ASSERT_TRUE(store_->open(resumable).ok());
  }
  // Stages and commits `bytes` in chunks of `chunk`.
  absl::StatusOr<model::Artifact> put(const std::string& key, const std::string& bytes,
                                      size_t chunk = 7, const std::string& name = "f.txt") {
    auto up = store_->stage(
        {.key = key, .declared_size = bytes.size(), .declared_sha256 = crypto::sha256Hex(bytes)});
    if (!up.ok()) return up.status();
    for (size_t i = 0; i < bytes.size(); i += chunk) {
      if (auto st = (*up)->append(std::string_view(bytes).substr(i, chunk)); !st.ok()) return st;
    }
    model::Artifact meta;
    meta.name = name;
    meta.purpose = model::ArtifactPurpose::kLogs;
    meta.host_id = "web-1";
    meta.command_id = "01JCMD";
    return (*up)->commit(meta);
  }
  std::string readAll(const std::string& id) {
    auto r = store_->openRead(id);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    std::string all, part;
    while (true) {
      EXPECT_TRUE((*r)->read(all.size(), 5, &part).ok());
      if (part.empty()) break;
      all += part;
    }
    return all;
  }
  size_t filesIn(const std::string& sub) {
    size_t n = 0;
    for (const auto& e : stdfs::recursive_directory_iterator(dir_ / sub)) {
      if (e.is_regular_file()) ++n;
    }
    return n;
  }

  stdfs::path dir_;
  common::FakeClock clock_;
  std::unique_ptr<FsArtifactStore> store_;
};

TEST_F(FsArtifactStoreTest, CommitStoresVerifiedBytesWithSidecar) {
  auto a = put("k1", "hello artifact world");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size, 20u);
  EXPECT_EQ(a->sha256, crypto::sha256Hex("hello artifact world"));
  EXPECT_EQ(a->name, "f.txt");
  EXPECT_EQ(readAll(a->id), "hello artifact world");
  EXPECT_EQ(filesIn("staging"), 0u);
  // The sidecar survives a restart, and opening needs no rehash.
  reopen();
  auto again = store_->get(a->id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sha256, a->sha256);
  EXPECT_EQ(again->host_id, "web-1");
  EXPECT_EQ(readAll(a->id), "hello artifact world");
}

TEST_F(FsArtifactStoreTest, StagingFileIsPrivate) {
  auto up =
      store_->stage({.key = "k", .declared_size = 3, .declared_sha256 = crypto::sha256Hex("abc")});
  ASSERT_TRUE(up.ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "staging" / "k.part").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(FsArtifactStoreTest, MismatchesAreRefusedAndStagingRemoved) {
  std::string bytes = "0123456789";
  {  // wrong hash
    auto up =
        store_->stage({.key = "h", .declared_size = 10, .declared_sha256 = crypto::sha256Hex("x")});
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->append(bytes).ok());
    auto st = (*up)->commit({});
    EXPECT_TRUE(absl::IsInvalidArgument(st.status())) << st.status();
    EXPECT_NE(st.status().message().find("sha256 mismatch"), std::string::npos);
  }
  {  // fewer bytes
    auto up = store_->stage(
        {.key = "f", .declared_size = 11, .declared_sha256 = crypto::sha256Hex(bytes)});
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->append(bytes).ok());
    auto st = (*up)->commit({});
    EXPECT_TRUE(absl::IsInvalidArgument(st.status()));
    EXPECT_NE(st.status().message().find("fewer bytes"), std::string::npos);
  }
  {  // more bytes
    auto up = store_->stage(
        {.key = "m", .declared_size = 9, .declared_sha256 = crypto::sha256Hex(bytes)});
    ASSERT_TRUE(up.ok());
    auto st = (*up)->append(bytes);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    (*up)->discard();
  }
  EXPECT_EQ(filesIn("staging"), 0u);
  EXPECT_EQ(store_->stats().artifacts, 0u);
}

TEST_F(FsArtifactStoreTest, SameContentIsStoredOnce) {
  auto a = put("k1", std::string(1000, 'x'));
  auto b = put("k2", std::string(1000, 'x'), 100, "other.bin");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(filesIn("blobs"), 1u);
  auto s = store_->stats();
  EXPECT_EQ(s.artifacts, 2u);
  EXPECT_EQ(s.stored_bytes, 1000u);
  EXPECT_EQ(s.logical_bytes, 2000u);
  EXPECT_EQ(s.dedup_saved_bytes, 1000u);
  // The content goes with the last artifact that refers to it.
  ASSERT_TRUE(store_->remove(a->id).ok());
  EXPECT_EQ(readAll(b->id), std::string(1000, 'x'));
  ASSERT_TRUE(store_->remove(b->id).ok());
  EXPECT_EQ(filesIn("blobs"), 0u);
  EXPECT_TRUE(absl::IsNotFound(store_->remove(b->id)));
}

TEST_F(FsArtifactStoreTest, ResumeContinuesStagedBytes) {
  std::string bytes = "resumable upload of some bytes";
  std::string sha = crypto::sha256Hex(bytes);
  {
    auto up = store_->stage({.key = "r", .declared_size = bytes.size(), .declared_sha256 = sha});
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->append(bytes.substr(0, 12)).ok());
    // Destroyed without commit: an interrupted transfer; the staged bytes stay.
  }
  // A restart keeps the staging of a resumable key and empties the rest.
  std::ofstream(dir_ / "staging" / "stray.part") << "junk";
  reopen({"r"});
  EXPECT_FALSE(stdfs::exists(dir_ / "staging" / "stray.part"));
  // Asking for more than is staged continues where the staged bytes end.
  auto up = store_->stage({.key = "r",
                           .declared_size = bytes.size(),
                           .declared_sha256 = sha,
                           .resume_offset = bytes.size()});
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ((*up)->offset(), 12u);
  ASSERT_TRUE((*up)->append(bytes.substr(12)).ok());
  auto a = (*up)->commit({});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(readAll(a->id), bytes);
}

TEST_F(FsArtifactStoreTest, ResumeAtASmallerOffsetDropsTheRest) {
  std::string bytes = "abcdefghijklmnop";
  std::string sha = crypto::sha256Hex(bytes);
  {
    auto up = store_->stage({.key = "r", .declared_size = bytes.size(), .declared_sha256 = sha});
    ASSERT_TRUE((*up)->append("abcdefXXXX").ok());  // the tail is garbage
  }
  auto up = store_->stage(
      {.key = "r", .declared_size = bytes.size(), .declared_sha256 = sha, .resume_offset = 6});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ((*up)->offset(), 6u);
  ASSERT_TRUE((*up)->append(bytes.substr(6)).ok());
  auto a = (*up)->commit({});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(readAll(a->id), bytes);
}

TEST_F(FsArtifactStoreTest, OneWriterPerStagingKey) {
  auto first =
      store_->stage({.key = "k", .declared_size = 1, .declared_sha256 = crypto::sha256Hex("a")});
  ASSERT_TRUE(first.ok());
  auto second =
      store_->stage({.key = "k", .declared_size = 1, .declared_sha256 = crypto::sha256Hex("a")});
  EXPECT_TRUE(absl::IsAlreadyExists(second.status()));
  first->reset();
  EXPECT_TRUE(
      store_->stage({.key = "k", .declared_size = 1, .declared_sha256 = crypto::sha256Hex("a")})
          .ok());
}

TEST_F(FsArtifactStoreTest, QuotaIsCheckedAtStagingAndReleased) {
  reopen({}, 100);
  auto big =
      store_->stage({.key = "a", .declared_size = 101, .declared_sha256 = crypto::sha256Hex("a")});
  EXPECT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
  EXPECT_NE(big.status().message().find("quota"), std::string::npos);
  auto sixty =
      store_->stage({.key = "b", .declared_size = 60, .declared_sha256 = crypto::sha256Hex("b")});
  ASSERT_TRUE(sixty.ok());
  // 60 reserved: another 60 does not fit until the first is gone.
  EXPECT_TRUE(absl::IsResourceExhausted(
      store_->stage({.key = "c", .declared_size = 60, .declared_sha256 = crypto::sha256Hex("c")})
          .status()));
  sixty->reset();
  EXPECT_EQ(store_->stats().reserved_bytes, 0u);
  EXPECT_TRUE(
      store_->stage({.key = "c", .declared_size = 60, .declared_sha256 = crypto::sha256Hex("c")})
          .ok());
}

TEST_F(FsArtifactStoreTest, StagedBytesLeftToResumeCountAgainstTheQuota) {
  reopen({}, 100);
  {
    auto up =
        store_->stage({.key = "r", .declared_size = 80, .declared_sha256 = crypto::sha256Hex("x")});
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->append(std::string(70, 'x')).ok());
  }  // interrupted: 70 bytes stay staged
  EXPECT_EQ(store_->stats().reserved_bytes, 70u);
  EXPECT_TRUE(absl::IsResourceExhausted(
      store_
          ->stage({.key = "other", .declared_size = 40, .declared_sha256 = crypto::sha256Hex("y")})
          .status()));
  // Resuming takes them into its own reservation; dropping frees them.
  store_->dropStaging("r");
  EXPECT_EQ(store_->stats().reserved_bytes, 0u);
  EXPECT_TRUE(
      store_
          ->stage({.key = "other", .declared_size = 40, .declared_sha256 = crypto::sha256Hex("y")})
          .ok());
}

TEST_F(FsArtifactStoreTest, DeclaringStoredContentStillReservesItsSize) {
  reopen({}, 100);
  auto a = put("a", std::string(60, 'q'));
  ASSERT_TRUE(a.ok());
  // The same hash declared again: the bytes are not known to match until commit.
  auto up = store_->stage({.key = "b", .declared_size = 60, .declared_sha256 = a->sha256});
  EXPECT_TRUE(absl::IsResourceExhausted(up.status())) << up.status();
}

TEST_F(FsArtifactStoreTest, DroppingAStagingBeingWrittenRemovesItWhenReleased) {
  {
    auto up = store_->stage(
        {.key = "busy", .declared_size = 9, .declared_sha256 = crypto::sha256Hex("x")});
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->append("abc").ok());
    store_->dropStaging("busy");  // its command ended mid-transfer
    EXPECT_TRUE(stdfs::exists(dir_ / "staging" / "busy.part"));
  }
  EXPECT_FALSE(stdfs::exists(dir_ / "staging" / "busy.part"));
  EXPECT_EQ(store_->stats().reserved_bytes, 0u);
}

TEST_F(FsArtifactStoreTest, BadKeysAndHashesAreRefused) {
  for (const std::string& key :
       std::vector<std::string>{"", "../x", ".hidden", "a/b", std::string(200, 'k')}) {
    auto st =
        store_->stage({.key = key, .declared_size = 1, .declared_sha256 = crypto::sha256Hex("a")});
    EXPECT_TRUE(absl::IsInvalidArgument(st.status())) << key;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(
      store_->stage({.key = "k", .declared_size = 1, .declared_sha256 = "ABC"}).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->get("../../etc/passwd").status()));
  EXPECT_FALSE(store_->openRead("../../etc/passwd").ok());
}

TEST_F(FsArtifactStoreTest, SweepRemovesOldUnpinnedAndSpared) {
  auto old1 = put("a", "one");
  auto old2 = put("b", "two");
  auto pinned = put("c", "three");
  ASSERT_TRUE(old1.ok() && old2.ok() && pinned.ok());
  ASSERT_TRUE(store_->setPinned(pinned->id, true).ok());
  clock_.advanceMs(10'000);
  auto fresh = put("d", "four");
  ASSERT_TRUE(fresh.ok());
  auto n = store_->sweep(clock_.nowMs() - 5'000, 100,
                         [&](const model::Artifact& a) { return a.id == old2->id; });
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);  // old1 only: old2 is needed, pinned is pinned, fresh is new
  EXPECT_TRUE(absl::IsNotFound(store_->get(old1->id).status()));
  EXPECT_TRUE(store_->get(old2->id).ok());
  EXPECT_TRUE(store_->get(fresh->id).ok());
  // The pin survives a restart; unpinned, it goes.
  reopen();
  ASSERT_TRUE(store_->get(pinned->id)->pinned);
  ASSERT_TRUE(store_->setPinned(pinned->id, false).ok());
  n = store_->sweep(clock_.nowMs() - 5'000, 100, nullptr);
  EXPECT_EQ(*n, 2);
}

TEST_F(FsArtifactStoreTest, SweepReachesPastManyKeptArtifacts) {
  std::vector<std::string> kept;
  for (int i = 0; i < 6; ++i) {
    auto a = put("k" + std::to_string(i), "kept " + std::to_string(i));
    ASSERT_TRUE(a.ok());
    kept.push_back(a->id);
  }
  auto old = put("old", "old and unneeded");
  ASSERT_TRUE(old.ok());
  clock_.advanceMs(10'000);
  // The oldest six are needed by open commands; the seventh must still go, one per batch.
  auto n = store_->sweep(clock_.nowMs(), 1, [&](const model::Artifact& a) {
    return std::find(kept.begin(), kept.end(), a.id) != kept.end();
  });
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_TRUE(absl::IsNotFound(store_->get(old->id).status()));
  EXPECT_EQ(store_->stats().artifacts, 6u);
}

TEST_F(FsArtifactStoreTest, ListFiltersNewestFirstWithCursor) {
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(put("k" + std::to_string(i), "b" + std::to_string(i)).ok());
  auto all = store_->list({.limit = 10});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  EXPECT_GT((*all)[0].id, (*all)[4].id);
  auto page = store_->list({.before_id = (*all)[1].id, .limit = 2});
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id, (*all)[2].id);
  EXPECT_EQ(store_->list({.host_id = "nobody"})->size(), 0u);
}

TEST_F(FsArtifactStoreTest, CrashLeftoversAreCleanedAtOpen) {
  auto a = put("a", "kept");
  ASSERT_TRUE(a.ok());
  // Content whose sidecar was never written, and a sidecar whose content is gone.
  stdfs::create_directories(dir_ / "blobs" / "ab");
  std::ofstream(dir_ / "blobs" / "ab" / std::string(64, 'a')) << "orphan";
  model::Artifact ghost = *a;
  ghost.id = "01GHOST";
  ghost.sha256 = std::string(64, 'b');
  std::ofstream(dir_ / "meta" / "01GHOST.meta") << FsArtifactStore::encodeMeta(ghost);
  reopen();
  EXPECT_FALSE(stdfs::exists(dir_ / "blobs" / "ab" / std::string(64, 'a')));
  EXPECT_TRUE(absl::IsNotFound(store_->get("01GHOST").status()));
  EXPECT_EQ(readAll(a->id), "kept");
}

TEST_F(FsArtifactStoreTest, SidecarRoundTripsAndRejectsDamage) {
  model::Artifact a{.id = "01J",
                    .name = "we=ird\nname%",
                    .size = 5,
                    .sha256 = std::string(64, 'c'),
                    .purpose = model::ArtifactPurpose::kBundle,
                    .host_id = "h",
                    .command_id = "c",
                    .created_by = "x",
                    .created_at_ms = 7,
                    .pinned = true,
                    .expectation = 3};
  auto back = FsArtifactStore::decodeMeta(FsArtifactStore::encodeMeta(a));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->name, a.name);
  EXPECT_TRUE(back->pinned);
  EXPECT_EQ(back->expectation, 3);
  EXPECT_EQ(back->purpose, model::ArtifactPurpose::kBundle);
  for (std::string bad : {"", "version=2\n", "version=1\nid=x\n", "version=1\nid=x\nsize=q\n",
                          "version=1\nid=x\nsize=1\nsha256=zz\n", "garbage", "name=%4"}) {
    EXPECT_FALSE(FsArtifactStore::decodeMeta(bad).ok()) << bad;
  }
}

TEST(ArtifactNameTest, SanitisedToABaseName) {
  EXPECT_EQ(model::sanitizeArtifactName("/var/log/syslog"), "syslog");
  EXPECT_EQ(model::sanitizeArtifactName("..\\..\\win.ini"), "win.ini");
  EXPECT_EQ(model::sanitizeArtifactName("../"), "artifact");
  EXPECT_EQ(model::sanitizeArtifactName(".."), "artifact");
  EXPECT_EQ(model::sanitizeArtifactName(""), "artifact");
  EXPECT_EQ(model::sanitizeArtifactName("meta.json"), "artifact");
  EXPECT_EQ(model::sanitizeArtifactName("a\nb\x01"), "ab");
  EXPECT_EQ(model::sanitizeArtifactName(".bashrc"), ".bashrc");
}

}  // namespace
}  // namespace muster::store::fs
