// Artifact transfers in the core: admission against expectations, slots, attempts, deadlines,
// resume and sweep, with a real SQLite store, a real filesystem artifact store and a FakeClock.
#include "server/core/artifact_service.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/clock.h"
#include "common/worker_pool.h"
#include "crypto/secrets.h"
#include "server/core/control_plane.h"
#include "store/fs/fs_artifact_store.h"
#include "store/sqlite/sqlite_store.h"
#include "tests/unit/server/fake_session.h"

namespace muster::server {
namespace {

using model::ArtifactPurpose;
using model::TransferDirection;
using testing::FakeSession;

class ArtifactServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-artsvc-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store = store::SqliteStore::open((dir_ / "muster.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    plane_ = std::make_unique<ControlPlane>(*store_, inline_, clock_, CoreConfig{});
    ASSERT_TRUE(plane_->start().ok());
    artifacts_store_ = std::make_unique<store::fs::FsArtifactStore>(
        store::fs::FsArtifactStoreOptions{.dir = (dir_ / "artifacts").string(),
                                          .quota_bytes = 1 << 20},
        clock_);
    config_.max_artifact_bytes = 1000;
    service_ =
        std::make_unique<ArtifactService>(*artifacts_store_, plane_->commands(), clock_, config_);
    plane_->commands().setResultCheck(
        [this](const std::string& id) { return service_->missingUploads(id); });
    plane_->commands().setArtifactResolver(
        [this](std::vector<model::ArtifactExpectation>& e) { return service_->resolve(e); });
    ASSERT_TRUE(service_->start().ok());
    for (const char* id : {"web-1", "web-2"}) {
      auto token = plane_->enrollment().createToken(1, 0, {}, "test");
      ASSERT_TRUE(token.ok());
      auto cred = plane_->enrollment().enroll({.token = token->secret, .agent_id = id});
      ASSERT_TRUE(cred.ok());
      auto s = std::make_shared<FakeSession>(id, std::string("s-") + id);
      ASSERT_TRUE(plane_->openStream(s, *cred).ok());
      HelloInfo hello;
      hello.agent_id = id;
      ASSERT_TRUE(plane_->onHello(s, hello).ok());
      sessions_[id] = s;
    }
  }
  void TearDown() override {
    // Results being stored call back into the plane: let them land before it goes.
    ASSERT_TRUE(store_->flush().ok());
    service_.reset();
    artifacts_store_.reset();
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A dispatched command on `host` allowing `expectations`.
  std::string command(std::vector<model::ArtifactExpectation> expectations,
                      const std::string& host = "web-1") {
    CreateRunRequest req;
    req.host_ids = {host};
    req.exec.argv = {"true"};
    req.created_by = "test";
    req.artifacts = std::move(expectations);
    auto r = plane_->commands().createRun(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->commands[0].id : "";
  }
  static model::ArtifactExpectation upload(ArtifactPurpose p = ArtifactPurpose::kLogs,
                                           std::string device = "") {
    return {.direction = TransferDirection::kUpload, .purpose = p, .device = std::move(device)};
  }
  std::shared_ptr<Transfer> open(TransferDirection d, const std::string& agent = "web-1") {
    auto t = service_->open(d, agent, [this](absl::Status why) { cancelled_.push_back(why); });
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : nullptr;
  }
  UploadHeader header(const std::string& command_id, const std::string& bytes,
                      ArtifactPurpose p = ArtifactPurpose::kLogs) {
    return {.command_id = command_id,
            .purpose = p,
            .name = "../../logs.tar.zst",
            .declared_size = bytes.size(),
            .declared_sha256 = crypto::sha256Hex(bytes)};
  }
  // A whole upload: the artifact or the first error.
  absl::StatusOr<model::Artifact> uploadAll(const std::string& command_id,
                                            const std::string& bytes) {
    auto t = open(TransferDirection::kUpload);
    auto offset = t->beginUpload(header(command_id, bytes));
    if (!offset.ok()) return offset.status();
    if (auto st = t->chunk(std::string_view(bytes).substr(*offset)); !st.ok()) return st;
    return t->finishUpload();
  }
  void finish(const std::string& command_id, model::CommandState state) {
    model::CommandResult r;
    r.command_id = command_id;
    r.state = state;
    r.exit_code = state == model::CommandState::kSucceeded ? 0 : 1;
    ASSERT_TRUE(plane_->onAgentMessage(sessions_["web-1"], ResultMsg{r}).ok());
  }

  std::filesystem::path dir_;
  common::FakeClock clock_;
  common::InlineExecutor inline_;
  ArtifactConfig config_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<store::fs::FsArtifactStore> artifacts_store_;
  std::unique_ptr<ArtifactService> service_;
  std::map<std::string, std::shared_ptr<FakeSession>> sessions_;
  std::vector<absl::Status> cancelled_;
};

TEST_F(ArtifactServiceTest, UploadMatchingAnExpectationIsStored) {
  std::string id = command({upload()});
  auto a = uploadAll(id, "log bytes");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command_id, id);
  EXPECT_EQ(a->host_id, "web-1");
  EXPECT_EQ(a->name, "logs.tar.zst");  // base name only
  EXPECT_EQ(service_->missingUploads(id), "");
  EXPECT_EQ(service_->metrics().uploads_ok.load(), 1u);
  EXPECT_EQ(service_->metrics().upload_slots_in_use.load(), 0);
}

TEST_F(ArtifactServiceTest, RefusesWithoutCommandInFlight) {
  auto t = open(TransferDirection::kUpload);
  auto st = t->beginUpload(header("01JNOSUCHCOMMAND", "x"));
  EXPECT_TRUE(absl::IsFailedPrecondition(st.status())) << st.status();
  EXPECT_NE(st.status().message().find("not in flight"), std::string::npos);
  // Another host's command looks the same.
  std::string other = command({upload()}, "web-2");
  auto t2 = open(TransferDirection::kUpload);
  auto st2 = t2->beginUpload(header(other, "x"));
  EXPECT_TRUE(absl::IsFailedPrecondition(st2.status()));
  EXPECT_NE(st2.status().message().find("not in flight"), std::string::npos);
  // And so does an ended one.
  std::string ended = command({upload()});
  finish(ended, model::CommandState::kFailed);
  auto t3 = open(TransferDirection::kUpload);
  EXPECT_TRUE(absl::IsFailedPrecondition(t3->beginUpload(header(ended, "x")).status()));
  EXPECT_EQ(
      service_->metrics().upload_failed[static_cast<size_t>(TransferRefusal::kNotInFlight)].load(),
      3u);
}

TEST_F(ArtifactServiceTest, RefusesWhatNoExpectationAllows) {
  std::string none = command({});
  auto t = open(TransferDirection::kUpload);
  auto st = t->beginUpload(header(none, "x"));
  EXPECT_TRUE(absl::IsFailedPrecondition(st.status()));
  EXPECT_NE(st.status().message().find("expects no upload"), std::string::npos) << st.status();

  std::string logs = command({upload(ArtifactPurpose::kLogs, "sda")});
  t = open(TransferDirection::kUpload);
  st = t->beginUpload(header(logs, "x", ArtifactPurpose::kBundle));
  EXPECT_NE(st.status().message().find("purpose logs, not bundle"), std::string::npos)
      << st.status();
  t = open(TransferDirection::kUpload);
  UploadHeader h = header(logs, "x");
  h.device = "sdb";
  st = t->beginUpload(h);
  EXPECT_TRUE(absl::IsFailedPrecondition(st.status()));
  EXPECT_NE(st.status().message().find("device 'sda', not 'sdb'"), std::string::npos)
      << st.status();
  h.device = "sda";
  t = open(TransferDirection::kUpload);
  EXPECT_TRUE(t->beginUpload(h).ok());
}

TEST_F(ArtifactServiceTest, SecondConcurrentUploadIsAlreadyExists) {
  std::string id = command({upload()});
  auto first = open(TransferDirection::kUpload);
  ASSERT_TRUE(first->beginUpload(header(id, "abc")).ok());
  auto second = open(TransferDirection::kUpload);
  auto st = second->beginUpload(header(id, "abc"));
  EXPECT_TRUE(absl::IsAlreadyExists(st.status())) << st.status();
}

TEST_F(ArtifactServiceTest, AttemptCapAndReinstatedExpectation) {
  std::string id = command({upload()});
  for (int i = 0; i < config_.max_attempts; ++i) {
    auto t = open(TransferDirection::kUpload);
    ASSERT_TRUE(t->beginUpload(header(id, "abc")).ok()) << "attempt " << i;
    t->abort(absl::UnavailableError("link dropped"));  // reinstated for the next attempt
  }
  auto t = open(TransferDirection::kUpload);
  auto st = t->beginUpload(header(id, "abc"));
  EXPECT_TRUE(absl::IsResourceExhausted(st.status())) << st.status();
  EXPECT_NE(st.status().message().find("attempts"), std::string::npos);
}

TEST_F(ArtifactServiceTest, SlotsPerAgentAndReleasedOnce) {
  auto a = open(TransferDirection::kUpload);
  auto b = open(TransferDirection::kUpload);
  auto c = service_->open(TransferDirection::kUpload, "web-1", nullptr);
  EXPECT_TRUE(absl::IsResourceExhausted(c.status())) << c.status();
  // Other agents and the other direction have their own.
  EXPECT_TRUE(service_->open(TransferDirection::kUpload, "web-2", nullptr).ok());
  EXPECT_TRUE(service_->open(TransferDirection::kDownload, "web-1", nullptr).ok());
  a->abort(absl::CancelledError("x"));
  a->abort(absl::CancelledError("again"));  // once
  a.reset();
  EXPECT_EQ(service_->metrics().upload_slots_in_use.load(), 1);  // b's
  auto e = service_->open(TransferDirection::kUpload, "web-1", nullptr);
  EXPECT_TRUE(e.ok());
  auto d = service_->open(TransferDirection::kUpload, "web-1", nullptr);
  EXPECT_TRUE(absl::IsResourceExhausted(d.status()));  // b and e hold both
}

TEST_F(ArtifactServiceTest, RetryAfterLostReplyIsDrainedAndAnsweredWithTheStoredRef) {
  std::string id = command({upload()});
  auto first = uploadAll(id, "the bundle");
  ASSERT_TRUE(first.ok());
  auto again = uploadAll(id, "the bundle");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(artifacts_store_->stats().artifacts, 1u);
  EXPECT_EQ(service_->metrics().retries_answered.load(), 1u);
  // A different file cannot take its place.
  auto other = uploadAll(id, "another bundle");
  EXPECT_TRUE(absl::IsFailedPrecondition(other.status())) << other.status();
}

TEST_F(ArtifactServiceTest, SizeAndHashAreVerified) {
  std::string id = command({upload()});
  auto t = open(TransferDirection::kUpload);
  ASSERT_TRUE(t->beginUpload(header(id, "abc")).ok());
  ASSERT_TRUE(t->chunk("abd").ok());
  auto st = t->finishUpload();
  EXPECT_TRUE(absl::IsInvalidArgument(st.status()));
  EXPECT_NE(st.status().message().find("sha256 mismatch"), std::string::npos);
  // Over the artifact limit, at admission.
  t = open(TransferDirection::kUpload);
  UploadHeader big = header(id, "abc");
  big.declared_size = 1001;
  auto refused = t->beginUpload(big);
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_NE(refused.status().message().find("over the limit"), std::string::npos);
  // A chunk over the chunk size.
  t = open(TransferDirection::kUpload);
  ASSERT_TRUE(t->beginUpload(header(id, "abc")).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(t->chunk(std::string(config_.max_chunk_bytes + 1, 'x'))));
}

TEST_F(ArtifactServiceTest, QuotaRefusedAtAdmission) {
  std::string id = command({upload()});
  config_.max_artifact_bytes = 4 << 20;
  service_ =
      std::make_unique<ArtifactService>(*artifacts_store_, plane_->commands(), clock_, config_);
  auto t = open(TransferDirection::kUpload);
  UploadHeader h = header(id, "x");
  h.declared_size = 2 << 20;  // the quota is 1 MiB
  auto st = t->beginUpload(h);
  EXPECT_TRUE(absl::IsResourceExhausted(st.status())) << st.status();
  EXPECT_EQ(service_->metrics().upload_failed[static_cast<size_t>(TransferRefusal::kQuota)].load(),
            1u);
}

TEST_F(ArtifactServiceTest, SuccessWithoutTheExpectedUploadIsStoredAsFailed) {
  std::string id = command({upload()});
  finish(id, model::CommandState::kSucceeded);
  ASSERT_TRUE(store_->flush().ok());
  auto c = store_->getCommand(id);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->state, model::CommandState::kFailed);
  EXPECT_NE((*c)->error.find("upload never completed"), std::string::npos) << (*c)->error;
}

TEST_F(ArtifactServiceTest, DeadlinesCancelAndFreeTheSlot) {
  std::string id = command({upload()});
  auto quiet = open(TransferDirection::kUpload);  // never sends its header
  clock_.advanceMs(config_.header_timeout_ms + 1);
  service_->tick();
  ASSERT_EQ(cancelled_.size(), 1u);
  EXPECT_TRUE(absl::IsDeadlineExceeded(cancelled_[0]));
  quiet->abort(cancelled_[0]);  // what the adapter does when its call ends
  EXPECT_EQ(service_->metrics().upload_slots_in_use.load(), 0);

  auto stalled = open(TransferDirection::kUpload);
  ASSERT_TRUE(stalled->beginUpload(header(id, "abcdef")).ok());
  ASSERT_TRUE(stalled->chunk("abc").ok());
  clock_.advanceMs(config_.progress_timeout_ms - 1);
  service_->tick();
  EXPECT_EQ(cancelled_.size(), 1u);
  clock_.advanceMs(2);
  service_->tick();
  ASSERT_EQ(cancelled_.size(), 2u);
  EXPECT_NE(cancelled_[1].message().find("no progress"), std::string::npos);
  stalled->abort(cancelled_[1]);
  // The staged half stays: the next attempt resumes it.
  auto resumed = open(TransferDirection::kUpload);
  UploadHeader h = header(id, "abcdef");
  h.resume_offset = 6;
  auto offset = resumed->beginUpload(h);
  ASSERT_TRUE(offset.ok()) << offset.status();
  EXPECT_EQ(*offset, 3u);
  ASSERT_TRUE(resumed->chunk("def").ok());
  auto a = resumed->finishUpload();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(service_->metrics().resumed_uploads.load(), 1u);
}

TEST_F(ArtifactServiceTest, CommandEndCancelsItsTransfers) {
  std::string id = command({upload()});
  auto t = open(TransferDirection::kUpload);
  ASSERT_TRUE(t->beginUpload(header(id, "abcdef")).ok());
  ASSERT_TRUE(t->chunk("abc").ok());
  finish(id, model::CommandState::kFailed);
  service_->tick();
  ASSERT_EQ(cancelled_.size(), 1u);
  EXPECT_TRUE(absl::IsAborted(cancelled_[0])) << cancelled_[0];
  EXPECT_TRUE(absl::IsAborted(t->chunk("def")));
}

TEST_F(ArtifactServiceTest, DownloadIsAdmittedResumedAndRetryable) {
  std::string up = command({upload(ArtifactPurpose::kFile)});
  auto t = open(TransferDirection::kUpload);
  ASSERT_TRUE(t->beginUpload(header(up, "firmware!", ArtifactPurpose::kFile)).ok());
  ASSERT_TRUE(t->chunk("firmware!").ok());
  auto stored = t->finishUpload();
  ASSERT_TRUE(stored.ok());
  std::string id = command({{.direction = TransferDirection::kDownload,
                             .purpose = ArtifactPurpose::kFile,
                             .artifact_id = stored->id}});
  for (uint64_t offset : {uint64_t{0}, uint64_t{4}}) {
    auto d = open(TransferDirection::kDownload);
    auto ref = d->beginDownload({.command_id = id, .artifact_id = stored->id, .offset = offset});
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(ref->sha256, stored->sha256);
    std::string got, part;
    do {
      ASSERT_TRUE(d->nextChunk(&part).ok());
      got += part;
    } while (!part.empty());
    EXPECT_EQ(got, std::string("firmware!").substr(offset));
    d->finishDownload();  // free again: a lost trailer can be retried
  }
  // Another artifact id, or a download of an upload-only command: refused.
  auto d = open(TransferDirection::kDownload);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      d->beginDownload({.command_id = id, .artifact_id = "01JX"}).status()));
  d = open(TransferDirection::kDownload);
  EXPECT_TRUE(absl::IsOutOfRange(
      d->beginDownload({.command_id = id, .artifact_id = stored->id, .offset = 99}).status()));
}

TEST_F(ArtifactServiceTest, DownloadOfAMissingArtifactIsRefusedAtCreation) {
  CreateRunRequest req;
  req.host_ids = {"web-1"};
  req.exec.argv = {"true"};
  req.artifacts = {{.direction = TransferDirection::kDownload,
                    .purpose = ArtifactPurpose::kPackage,
                    .artifact_id = "01JNOPE"}};
  auto r = plane_->commands().createRun(req);
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  req.artifacts = {{.direction = TransferDirection::kUpload}};
  EXPECT_TRUE(absl::IsInvalidArgument(plane_->commands().createRun(req).status()));
}

TEST_F(ArtifactServiceTest, SecondIdenticalExpectationTakesTheNextFile) {
  std::string id = command({upload(), upload()});
  auto first = uploadAll(id, "first file");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NE(service_->missingUploads(id), "");
  auto second = uploadAll(id, "second file");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->id, second->id);
  EXPECT_EQ(service_->missingUploads(id), "");
  // A retry of either is still answered with its ref.
  auto again = uploadAll(id, "first file");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, first->id);
}

TEST_F(ArtifactServiceTest, CompletedUploadsSurviveARestart) {
  std::string id = command({upload()});
  auto stored = uploadAll(id, "before the restart");
  ASSERT_TRUE(stored.ok());
  // A new service over the same stores, as after a musterd restart.
  service_ =
      std::make_unique<ArtifactService>(*artifacts_store_, plane_->commands(), clock_, config_);
  ASSERT_TRUE(service_->start().ok());
  EXPECT_EQ(service_->missingUploads(id), "");
  auto retry = uploadAll(id, "before the restart");  // the reply was lost in the crash
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->id, stored->id);
  EXPECT_EQ(artifacts_store_->stats().artifacts, 1u);
}

TEST_F(ArtifactServiceTest, SweepSparesArtifactsOfOpenCommands) {
  std::string up = command({upload()});
  auto stored = uploadAll(up, "needed later");
  ASSERT_TRUE(stored.ok());
  finish(up, model::CommandState::kSucceeded);
  std::string user = command({{.direction = TransferDirection::kDownload,
                               .purpose = ArtifactPurpose::kLogs,
                               .artifact_id = stored->id}});
  clock_.advanceMs(config_.retention_ms + 1);
  auto n = service_->sweepBatch(clock_.nowMs() - config_.retention_ms, 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);  // an open command will download it
  finish(user, model::CommandState::kSucceeded);
  n = service_->sweepBatch(clock_.nowMs() - config_.retention_ms, 100);
  EXPECT_EQ(*n, 1);
}

}  // namespace
}  // namespace muster::server
