// Core command lifecycle with a real SQLite store in a temp dir, a FakeClock and fake sessions.
#include "server/core/control_plane.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/worker_pool.h"
#include "store/sqlite/sqlite_store.h"
#include "tests/unit/server/fake_session.h"

namespace muster::server {
namespace {
using model::CommandState;
using testing::FakeSession;

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-core-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    openPlane();
  }
  void TearDown() override {
    plane_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void openPlane() {
    plane_.reset();
    store_.reset();
    auto store = store::SqliteStore::open((dir_ / "muster.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    config_.heartbeat_interval_ms = 1000;
    plane_ = std::make_unique<ControlPlane>(*store_, inline_, clock_, config_);
    ASSERT_TRUE(plane_->start().ok());
  }
  // `bound_to`: a token made for that host (re-enrolling an enrolled id needs one).
  std::string enroll(const std::string& id, const std::string& bound_to = "") {
    auto token =
        plane_->enrollment().createToken(1, bound_to.empty() ? 0 : 3'600'000, {}, "test", bound_to);
    EXPECT_TRUE(token.ok());
    auto cred = plane_->enrollment().enroll({.token = token->secret, .agent_id = id});
    EXPECT_TRUE(cred.ok()) << cred.status();
    creds_[id] = *cred;
    return *cred;
  }
  // A stream that authenticated with the host's credential and has not said Hello yet.
  std::shared_ptr<FakeSession> open(const std::string& id, const std::string& sid = "s1") {
    auto s = std::make_shared<FakeSession>(id, sid);
    EXPECT_TRUE(plane_->openStream(s, creds_[id]).ok());
    return s;
  }
  std::shared_ptr<FakeSession> connect(const std::string& id, const std::string& sid = "s1") {
    auto s = open(id, sid);
    HelloInfo hello;
    hello.agent_id = id;
    hello.version = "test";
    EXPECT_TRUE(plane_->onHello(s, hello).ok());
    return s;
  }
  CreateRunResult run(const std::string& host, const std::string& key = "") {
    CreateRunRequest req;
    req.host_ids = {host};
    req.exec.argv = {"true"};
    req.idempotency_key = key;
    req.created_by = "test";
    auto r = plane_->commands().createRun(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }
  model::Command stored(const std::string& id) {
    EXPECT_TRUE(store_->flush().ok());
    auto c = store_->getCommand(id);
    EXPECT_TRUE(c.ok() && c->has_value());
    return **c;
  }
  model::CommandResult exited(const std::string& id, int code) {
    model::CommandResult r;
    r.command_id = id;
    r.state = code == 0 ? CommandState::kSucceeded : CommandState::kFailed;
    r.exit_code = code;
    return r;
  }

  std::filesystem::path dir_;
  common::FakeClock clock_;
  common::InlineExecutor inline_;
  CoreConfig config_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<ControlPlane> plane_;
  std::map<std::string, std::string> creds_;  // agent id -> its latest credential
};

TEST_F(ControlPlaneTest, EnrolledAgentAuthenticatesAndWrongSecretIsRefused) {
  std::string cred = enroll("web-1");
  EXPECT_TRUE(plane_->authenticate("web-1", cred).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->authenticate("web-1", cred + "x")));
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->authenticate("nobody", cred)));
  EXPECT_TRUE(absl::IsInvalidArgument(plane_->authenticate("bad id!", cred)));
}

TEST_F(ControlPlaneTest, SingleUseEnrollTokenCannotBeReused) {
  auto token = plane_->enrollment().createToken(1, 0, {}, "test");
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(plane_->enrollment().enroll({.token = token->secret, .agent_id = "a"}).ok());
  auto again = plane_->enrollment().enroll({.token = token->secret, .agent_id = "b"});
  EXPECT_TRUE(absl::IsPermissionDenied(again.status())) << again.status();
  auto wrong = plane_->enrollment().enroll({.token = "mst_enroll_nope", .agent_id = "b"});
  EXPECT_TRUE(absl::IsUnauthenticated(wrong.status()));
}

TEST_F(ControlPlaneTest, CommandForOfflineHostIsDeliveredWhenItConnects) {
  enroll("web-1");
  auto r = run("web-1");
  ASSERT_EQ(r.commands.size(), 1u);
  EXPECT_EQ(r.commands[0].state, CommandState::kQueued);
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kQueued);

  auto s = connect("web-1");
  ASSERT_EQ(s->sent<WelcomeMsg>().size(), 1u);
  auto dispatched = s->sent<DispatchMsg>();
  ASSERT_EQ(dispatched.size(), 1u);
  EXPECT_EQ(dispatched[0].command.id, r.commands[0].id);
  // The dispatch mark is stored by the tick after the mark delay.
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kQueued);
  clock_.advanceMs(config_.dispatch_mark_delay_ms);
  plane_->onHeartbeat(s, {});
  plane_->tick();
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kDispatched);
  EXPECT_GT(stored(r.commands[0].id).dispatched_at_ms, 0);
}

// Heartbeats are in the registry at once and reach the store in one batch per flush
// interval (one transaction for the whole fleet, not one with an fsync per heartbeat), and
// at shutdown.
TEST_F(ControlPlaneTest, HeartbeatsAreStoredInOneBatchPerFlushInterval) {
  std::vector<std::shared_ptr<FakeSession>> sessions;
  for (const char* id : {"web-1", "web-2", "web-3"}) {
    enroll(id);
    sessions.push_back(connect(id));
  }
  auto storedLoad = [&](const std::string& id) {
    EXPECT_TRUE(store_->flush().ok());
    auto hosts = store_->loadHosts();
    EXPECT_TRUE(hosts.ok());
    for (const auto& h : *hosts) {
      if (h.id == id) return h.metrics.load1;
    }
    return -1.0;
  };
  model::Metrics m;
  m.load1 = 1;
  plane_->onHeartbeat(sessions[1], m);
  plane_->tick();  // nothing flushed for a while: stored at once, and the interval starts
  EXPECT_EQ(storedLoad("web-2"), 1.0);
  m.load1 = 2.5;
  for (auto& s : sessions) plane_->onHeartbeat(s, m);
  EXPECT_EQ(plane_->hosts().get("web-2")->metrics.load1, 2.5);  // the API sees it at once
  const uint64_t transactions = store_->stats().transactions;
  plane_->tick();  // within the interval: not stored yet
  EXPECT_EQ(storedLoad("web-2"), 1.0);
  EXPECT_EQ(storedLoad("web-1"), 0.0);
  clock_.advanceMs(config_.heartbeat_flush_ms);
  plane_->tick();
  EXPECT_EQ(storedLoad("web-1"), 2.5);
  EXPECT_EQ(storedLoad("web-3"), 2.5);
  EXPECT_EQ(store_->stats().transactions, transactions + 1);
  // A heartbeat after the last flush is stored at shutdown.
  m.load1 = 7;
  plane_->onHeartbeat(sessions[0], m);
  plane_->flush();
  EXPECT_EQ(storedLoad("web-1"), 7.0);
}

TEST_F(ControlPlaneTest, QuickResultStoresTheDispatchTimeWithoutASeparateMark) {
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  plane_->commands().onResult(s, exited(r.commands[0].id, 0));
  ASSERT_TRUE(store_->flush().ok());
  uint64_t mutations = store_->stats().mutations;
  clock_.advanceMs(config_.dispatch_mark_delay_ms);
  plane_->tick();
  model::Command c = stored(r.commands[0].id);
  EXPECT_EQ(c.state, CommandState::kSucceeded);
  EXPECT_GT(c.dispatched_at_ms, 0);
  EXPECT_EQ(store_->stats().mutations, mutations);  // no mark was written
}

TEST_F(ControlPlaneTest, ResultIsStoredBeforeItIsAcknowledged) {
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  std::string id = r.commands[0].id;
  plane_->commands().onAccepted(s, id);
  plane_->commands().onOutput(s, {id, model::OutputStream::kStdout, 0, "hello\n"});
  plane_->commands().onResult(s, exited(id, 3));
  ASSERT_TRUE(store_->flush().ok());
  auto acks = s->sent<ResultAckMsg>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_FALSE(acks[0].rejected);
  auto c = stored(id);
  EXPECT_EQ(c.state, CommandState::kFailed);
  EXPECT_EQ(c.exit_code, 3);
  auto out = store_->readOutput(id, model::OutputStream::kStdout, 0, 1 << 20);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].data, "hello\n");
  // A resend of the same result (after a reconnect) is acknowledged again, not stored twice.
  plane_->commands().onResult(s, exited(id, 3));
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(s->sent<ResultAckMsg>().size(), 2u);
}

TEST_F(ControlPlaneTest, ResultForAnotherAgentsCommandClosesTheStream) {
  enroll("web-1");
  enroll("web-2");
  auto s1 = connect("web-1", "s1");
  auto s2 = connect("web-2", "s2");
  auto r = run("web-1");
  plane_->commands().onResult(s2, exited(r.commands[0].id, 0));
  ASSERT_TRUE(s2->closed());
  EXPECT_TRUE(absl::IsPermissionDenied(*s2->closeStatus()));
  clock_.advanceMs(config_.dispatch_mark_delay_ms);
  plane_->onHeartbeat(s1, {});
  plane_->tick();
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kDispatched);
}

TEST_F(ControlPlaneTest, ResultForUnknownCommandIsRejectedSoTheAgentDropsIt) {
  enroll("web-1");
  auto s = connect("web-1");
  plane_->commands().onResult(s, exited("01UNKNOWN", 0));
  auto acks = s->sent<ResultAckMsg>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_TRUE(acks[0].rejected);
  EXPECT_FALSE(s->closed());
}

TEST_F(ControlPlaneTest, QueuedCommandExpires) {
  enroll("web-1");
  auto r = run("web-1");
  clock_.advanceMs(config_.default_expiry_ms + 1);
  plane_->tick();
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kExpired);
}

TEST_F(ControlPlaneTest, ServerTimesOutSilentCommandAndLateAgentResultWins) {
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  std::string id = r.commands[0].id;
  plane_->commands().onAccepted(s, id);
  clock_.advanceMs(config_.default_timeout_ms + config_.default_kill_grace_ms +
                   config_.server_timeout_grace_ms + 1);
  plane_->tick();
  EXPECT_EQ(stored(id).state, CommandState::kTimedOut);
  plane_->commands().onResult(s, exited(id, 0));
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(stored(id).state, CommandState::kSucceeded);
}

TEST_F(ControlPlaneTest, SilentStreamIsClosedAndHostMarkedOffline) {
  enroll("web-1");
  auto s = connect("web-1");
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOnline);
  clock_.advanceMs(2500);
  plane_->onHeartbeat(s, {});
  clock_.advanceMs(2500);
  plane_->tick();
  EXPECT_FALSE(s->closed());  // heard 2.5 s ago, bound is 3 s
  clock_.advanceMs(600);
  plane_->tick();
  EXPECT_TRUE(s->closed());
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOffline);
}

TEST_F(ControlPlaneTest, SecondStreamReplacesTheFirst) {
  enroll("web-1");
  auto s1 = connect("web-1", "s1");
  auto s2 = connect("web-1", "s2");
  EXPECT_TRUE(s1->closed());
  EXPECT_TRUE(absl::IsAborted(*s1->closeStatus()));
  EXPECT_FALSE(s2->closed());
  // The old stream ending later must not mark the host offline.
  plane_->onDisconnect(*s1, absl::CancelledError("gone"));
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOnline);
  plane_->onDisconnect(*s2, absl::CancelledError("gone"));
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOffline);
}

TEST_F(ControlPlaneTest, IdempotencyKeyReplaysAndConflicts) {
  enroll("web-1");
  auto first = run("web-1", "deploy-42");
  auto again = run("web-1", "deploy-42");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.run_id, first.run_id);
  ASSERT_EQ(again.commands.size(), 1u);
  EXPECT_EQ(again.commands[0].id, first.commands[0].id);
  CreateRunRequest other;
  other.host_ids = {"web-1"};
  other.exec.argv = {"false"};
  other.idempotency_key = "deploy-42";
  auto conflict = plane_->commands().createRun(other);
  EXPECT_TRUE(absl::IsAlreadyExists(conflict.status())) << conflict.status();
}

TEST_F(ControlPlaneTest, CancelQueuedEndsItAndCancelRunningAsksTheAgent) {
  enroll("web-1");
  auto queued = run("web-1");
  auto c = plane_->commands().cancel(queued.commands[0].id, "operator");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(stored(queued.commands[0].id).state, CommandState::kCancelled);

  auto s = connect("web-1");
  auto running = run("web-1");
  plane_->commands().onAccepted(s, running.commands[0].id);
  ASSERT_TRUE(plane_->commands().cancel(running.commands[0].id, "operator").ok());
  ASSERT_EQ(s->sent<CancelMsg>().size(), 1u);
  EXPECT_TRUE(stored(running.commands[0].id).cancel_requested);
  auto twice = plane_->commands().cancel(queued.commands[0].id, "operator");
  EXPECT_TRUE(absl::IsFailedPrecondition(twice.status()));
}

TEST_F(ControlPlaneTest, RestartKeepsOpenCommandsAndRedeliversThem) {
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  plane_->commands().onAccepted(s, r.commands[0].id);
  ASSERT_TRUE(store_->flush().ok());
  openPlane();  // a new process on the same database
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOffline);
  EXPECT_EQ(plane_->commands().openCount(), 1u);
  auto s2 = connect("web-1", "s2");
  ASSERT_EQ(s2->sent<DispatchMsg>().size(), 1u);
  EXPECT_EQ(s2->sent<DispatchMsg>()[0].command.id, r.commands[0].id);
}

TEST_F(ControlPlaneTest, HelloForAnotherIdIsRefused) {
  enroll("web-1");
  auto s = std::make_shared<FakeSession>("web-1", "s1");
  HelloInfo hello;
  hello.agent_id = "web-2";
  EXPECT_TRUE(absl::IsInvalidArgument(plane_->onHello(s, hello)));
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, SelectorTargetsMatchingHostsOnlineOrOffline) {
  enroll("web-1");
  enroll("web-2");
  enroll("db-1");
  ASSERT_TRUE(plane_->hosts().setLabels("web-1", {{"role", "web"}, {"env", "prod"}}, {}).ok());
  ASSERT_TRUE(plane_->hosts().setLabels("web-2", {{"role", "web"}, {"canary", "1"}}, {}).ok());
  ASSERT_TRUE(plane_->hosts().setLabels("db-1", {{"role", "db"}}, {}).ok());
  connect("web-1");
  CreateRunRequest req;
  req.selector = "role in (web,db),!canary";
  req.exec.argv = {"true"};
  auto r = plane_->commands().createRun(req);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> hosts;
  for (const auto& c : r->commands) hosts.push_back(c.host_id);
  EXPECT_EQ(hosts, (std::vector<std::string>{"db-1", "web-1"}));

  req.selector = "role in (web";
  auto bad = plane_->commands().createRun(req);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_TRUE(bad.status().GetPayload(kInvalidSelectorPayload).has_value());
  req.selector = "role=cache";
  auto none = plane_->commands().createRun(req);
  EXPECT_TRUE(none.status().GetPayload(kInvalidSelectorPayload).has_value());
  req.host_ids = {"web-1"};
  req.selector = "role=web";
  EXPECT_TRUE(absl::IsInvalidArgument(plane_->commands().createRun(req).status()));
}

TEST_F(ControlPlaneTest, LabelsAreDurableAndValidated) {
  enroll("web-1");
  auto h = plane_->hosts().setLabels("web-1", {{"role", "web"}, {"tier", "1"}}, {});
  ASSERT_TRUE(h.ok());
  h = plane_->hosts().setLabels("web-1", {}, {"tier"});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->labels, (model::StringMap{{"role", "web"}}));
  EXPECT_TRUE(
      absl::IsInvalidArgument(plane_->hosts().setLabels("web-1", {{"bad key", "x"}}, {}).status()));
  EXPECT_TRUE(absl::IsNotFound(plane_->hosts().setLabels("nope", {}, {}).status()));
  openPlane();
  EXPECT_EQ(plane_->hosts().get("web-1")->labels, (model::StringMap{{"role", "web"}}));
}

TEST_F(ControlPlaneTest, DecommissionRevokesCredentialEndsStreamAndCancelsCommands) {
  std::string cred = enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  auto host = plane_->decommission("web-1");
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->status, model::HostStatus::kRevoked);
  ASSERT_TRUE(s->closed());
  EXPECT_TRUE(absl::IsPermissionDenied(*s->closeStatus()));
  EXPECT_TRUE(absl::IsPermissionDenied(plane_->authenticate("web-1", cred)));
  EXPECT_EQ(stored(r.commands[0].id).state, CommandState::kCancelled);
  openPlane();
  EXPECT_TRUE(absl::IsPermissionDenied(plane_->authenticate("web-1", cred)));
  // Re-enrolling brings it back.
  std::string fresh = enroll("web-1");
  EXPECT_TRUE(plane_->authenticate("web-1", fresh).ok());
}

TEST_F(ControlPlaneTest, ApiTokensCarryRolesAndCanBeRevoked) {
  std::string path = (dir_ / "admin.token").string();
  ASSERT_TRUE(plane_->auth().bootstrapAdmin(path).ok());
  ASSERT_TRUE(plane_->auth().bootstrapAdmin(path).ok());  // idempotent
  std::ifstream in(path);
  std::string admin_secret;
  std::getline(in, admin_secret);
  auto admin = plane_->auth().authenticate(admin_secret);
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_EQ(admin->role, Role::kAdmin);

  auto viewer = plane_->auth().create(Role::kViewer, "ci", 0, "admin");
  ASSERT_TRUE(viewer.ok());
  auto p = plane_->auth().authenticate(viewer->secret);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->role, Role::kViewer);
  EXPECT_EQ(p->name, "ci");
  auto denied = OperatorAuth::require(*p, Role::kOperator, "running commands");
  EXPECT_TRUE(absl::IsPermissionDenied(denied));
  EXPECT_NE(denied.message().find("operator"), absl::string_view::npos);
  EXPECT_TRUE(OperatorAuth::require(*admin, Role::kOperator, "running commands").ok());

  ASSERT_TRUE(plane_->auth().revoke(viewer->record.id).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->auth().authenticate(viewer->secret).status()));
  EXPECT_TRUE(absl::IsNotFound(plane_->auth().revoke("nope")));
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->auth().authenticate("mst_wrong").status()));

  auto brief = plane_->auth().create(Role::kOperator, "", 1000, "admin");
  ASSERT_TRUE(brief.ok());
  clock_.advanceMs(1001);
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->auth().authenticate(brief->secret).status()));
  auto all = plane_->auth().list();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);
}

TEST_F(ControlPlaneTest, EnrollTokensCanBeListedAndRevoked) {
  auto token = plane_->enrollment().createToken(5, 0, {{"env", "prod"}}, "admin");
  ASSERT_TRUE(token.ok());
  auto list = plane_->enrollment().listTokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].labels.at("env"), "prod");
  ASSERT_TRUE(plane_->enrollment().revokeToken(token->record.id).ok());
  auto refused = plane_->enrollment().enroll({.token = token->secret, .agent_id = "a"});
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status()));
  EXPECT_TRUE(absl::IsNotFound(plane_->enrollment().revokeToken("nope")));
}

TEST_F(ControlPlaneTest, MetricsCountResultsAndOpenStates) {
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  auto open = plane_->commands().openByState();
  EXPECT_EQ(open[static_cast<int>(CommandState::kDispatched)], 1u);
  plane_->commands().onAccepted(s, r.commands[0].id);
  plane_->commands().onResult(s, exited(r.commands[0].id, 0));
  ASSERT_TRUE(store_->flush().ok());
  auto& m = plane_->commands().metrics();
  EXPECT_EQ(m.results_by_state[static_cast<int>(CommandState::kSucceeded)].load(), 1u);
  EXPECT_EQ(m.commands_created.load(), 1u);
  EXPECT_EQ(m.dispatch_to_result_seconds.snapshot().count, 1u);
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, AgentsBeyondTheLimitAreRefusedButReconnectsAreNot) {
  config_.max_agents = 1;
  openPlane();
  enroll("a");
  enroll("b");
  auto a = connect("a");
  auto b = std::make_shared<FakeSession>("b", "sb");
  HelloInfo hello;
  hello.agent_id = "b";
  EXPECT_TRUE(absl::IsResourceExhausted(plane_->onHello(b, hello)));
  EXPECT_EQ(plane_->agentsRefused(), 1u);
  // The same agent replacing its own stream is not a new agent.
  auto a2 = connect("a", "s2");
  EXPECT_FALSE(a2->closed());
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, CommandsForADecommissionedHostAreRefused) {
  enroll("web-1");
  ASSERT_TRUE(plane_->decommission("web-1").ok());
  CreateRunRequest req;
  req.host_ids = {"web-1"};
  req.exec.argv = {"true"};
  EXPECT_TRUE(absl::IsFailedPrecondition(plane_->commands().createRun(req).status()));
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, ConnectedCountFollowsAttachReplaceDetachRevokeAndSilence) {
  enroll("a");
  enroll("b");
  enroll("c");
  auto& hosts = plane_->hosts();
  auto a1 = connect("a", "a1");
  auto b1 = connect("b", "b1");
  auto c1 = connect("c", "c1");
  EXPECT_EQ(hosts.connectedCount(), 3u);
  auto a2 = connect("a", "a2");  // replaces a1
  EXPECT_EQ(hosts.connectedCount(), 3u);
  plane_->onDisconnect(*a1, absl::CancelledError("old stream"));  // not the live one
  EXPECT_EQ(hosts.connectedCount(), 3u);
  plane_->onDisconnect(*a2, absl::CancelledError("gone"));
  EXPECT_EQ(hosts.connectedCount(), 2u);
  ASSERT_TRUE(hosts.revoke("b").ok());
  EXPECT_EQ(hosts.connectedCount(), 1u);
  clock_.advanceMs(config_.heartbeat_interval_ms * config_.missed_heartbeats_offline + 1);
  plane_->tick();  // c missed its heartbeats
  EXPECT_EQ(hosts.connectedCount(), 0u);
  auto c2 = connect("c", "c2");
  EXPECT_EQ(hosts.connectedCount(), 1u);
}

TEST_F(ControlPlaneTest, WelcomeSizesTheReconnectWindowToTheFleet) {
  // 1,000 agents/s by default: a window of one second per thousand enrolled hosts,
  // between the agent's own base (1 s) and cap (60 s).
  EXPECT_EQ(plane_->reconnectWindowMs(1), 1'000);
  EXPECT_EQ(plane_->reconnectWindowMs(10'000), 10'000);
  EXPECT_EQ(plane_->reconnectWindowMs(19'000), 19'000);
  EXPECT_EQ(plane_->reconnectWindowMs(1'000'000), 60'000);
  enroll("web-1");
  auto s = connect("web-1");
  auto welcome = s->sent<WelcomeMsg>();
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0].reconnect_window_ms, 1'000);
}

TEST_F(ControlPlaneTest, StreamWithoutHelloIsClosedAfterTheHelloTimeout) {
  enroll("quiet");
  enroll("talker");
  auto quiet = open("quiet", "s1");
  auto talker = open("talker", "s2");
  HelloInfo hello;
  hello.agent_id = "talker";
  ASSERT_TRUE(plane_->onHello(talker, hello).ok());
  // The talker keeps heartbeating; the quiet stream never says Hello.
  for (int64_t t = 0; t + 500 < config_.hello_timeout_ms; t += 500) {
    clock_.advanceMs(500);
    plane_->onHeartbeat(talker, {});
    plane_->tick();
  }
  clock_.advanceMs(config_.hello_timeout_ms % 500 == 0 ? 499 : config_.hello_timeout_ms % 500 - 1);
  plane_->tick();
  EXPECT_FALSE(quiet->closed());
  clock_.advanceMs(1);
  plane_->onHeartbeat(talker, {});
  plane_->tick();
  ASSERT_TRUE(quiet->closed());
  EXPECT_TRUE(absl::IsDeadlineExceeded(*quiet->closeStatus()));
  EXPECT_FALSE(talker->closed());
}

// --- Large runs: stored and sent in slices -----------------------------------------------

class SlicedRunTest : public ControlPlaneTest {
 protected:
  void SetUp() override {
    config_.run_slice_commands = 3;
    ControlPlaneTest::SetUp();
    attachFanout();
  }
  // As musterd stops: the writer's callbacks and the fan-out tasks they post finish before
  // the plane they point into is destroyed.
  void quiesce() {
    ASSERT_TRUE(store_->flush().ok());
    fanout_->shutdown();
  }
  void TearDown() override {
    quiesce();
    ControlPlaneTest::TearDown();
  }
  void reopen() {
    quiesce();
    openPlane();
    attachFanout();
  }
  void attachFanout() {
    fanout_ = std::make_unique<common::WorkerPool>(2, "test-fanout");
    plane_->commands().setFanoutExecutor(fanout_.get());  // as in musterd
  }
  // Fails the test if a command is sent before its row is committed.
  void checkEverySendIsDurable(FakeSession& session) {
    session.setOnSend([this](const ServerEvent& event) {
      auto* dispatch = std::get_if<DispatchMsg>(&event);
      if (dispatch == nullptr) return;
      auto row = store_->getCommand(dispatch->command.id);
      if (!row.ok() || !row->has_value()) ++sent_before_stored_;
    });
  }
  // h0..h(n-1), every one enrolled; the even ones connected.
  std::vector<std::string> fleet(int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      ids.push_back("h" + std::to_string(i));
      enroll(ids.back());
      if (i % 2 == 0) {
        sessions_[ids.back()] = connect(ids.back());
        checkEverySendIsDurable(*sessions_[ids.back()]);
      }
    }
    return ids;
  }
  absl::StatusOr<CreateRunResult> runOn(const std::vector<std::string>& hosts) {
    CreateRunRequest req;
    req.host_ids = hosts;
    req.exec.argv = {"true"};
    req.created_by = "test";
    return plane_->commands().createRun(req);
  }
  std::vector<model::Command> storedOfRun(const std::string& run_id) {
    EXPECT_TRUE(store_->flush().ok());
    store::CommandFilter f;
    f.run_id = run_id;
    f.limit = 1000;
    auto page = store_->listCommands(f);
    EXPECT_TRUE(page.ok());
    return page.ok() ? *page : std::vector<model::Command>{};
  }
  // Later slices are queued by the writer after the previous one commits: poll.
  size_t storedCountSoon(const std::string& run_id, size_t want) {
    size_t n = 0;
    for (int i = 0; i < 500 && (n = storedOfRun(run_id).size()) < want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return n;
  }
  bool runComplete(const std::string& run_id) {
    auto run = store_->getRun(run_id);
    EXPECT_TRUE(run.ok() && run->has_value());
    return run.ok() && run->has_value() && (*run)->pending_targets.empty();
  }
  void sql(const std::string& statement) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "muster.db").c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &error), SQLITE_OK)
        << (error ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
  }
  // What a crash after the first slice leaves: the run with its targets, `stored` commands.
  store::InsertRun interruptedRun(const std::vector<std::string>& hosts, size_t stored) {
    store::InsertRun insert;
    insert.run.id = "01JRUNINTERRUPTED000000000";
    insert.run.created_by = "test";
    insert.run.created_at_ms = clock_.nowMs();
    insert.run.pending_targets = hosts;
    for (size_t i = 0; i < stored; ++i) {
      model::Command c;
      c.id = "01JCMDINTERRUPTED00000000" + std::to_string(i);
      c.run_id = insert.run.id;
      c.host_id = hosts[i];
      c.exec.argv = {"uptime"};
      c.exec.timeout_ms = 5000;
      c.created_by = "test";
      c.created_at_ms = clock_.nowMs();
      c.expires_at_ms = clock_.nowMs() + 3'600'000;
      insert.commands.push_back(c);
    }
    return insert;
  }
  std::unique_ptr<common::WorkerPool> fanout_;
  std::atomic<int> sent_before_stored_{0};
  std::map<std::string, std::shared_ptr<FakeSession>> sessions_;
};

TEST_F(SlicedRunTest, LargeRunIsStoredAndSentSliceBySlice) {
  auto hosts = fleet(10);  // 4 slices of 3, 3, 3 and 1
  auto r = runOn(hosts);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->commands.size(), 10u);
  for (const auto& c : r->commands) {
    bool online = sessions_.count(c.host_id) > 0;
    EXPECT_EQ(c.state, online ? CommandState::kDispatched : CommandState::kQueued) << c.host_id;
  }
  for (const auto& [id, session] : sessions_) {
    auto sent = session->sent<DispatchMsg>();
    ASSERT_EQ(sent.size(), 1u) << id;
    EXPECT_EQ(sent[0].command.host_id, id);
  }
  auto stored = storedOfRun(r->run_id);
  EXPECT_EQ(stored.size(), 10u);
  std::set<std::string> stored_hosts;
  for (const auto& c : stored) stored_hosts.insert(c.host_id);
  EXPECT_EQ(stored_hosts.size(), 10u);
  EXPECT_TRUE(runComplete(r->run_id));
  EXPECT_EQ(plane_->commands().openCount(), 10u);
  EXPECT_EQ(sent_before_stored_.load(), 0);
}

TEST_F(SlicedRunTest, SliceThatFailsToStoreIsRetriedByTheTickAndNeverSentBeforeIt) {
  auto hosts = fleet(9);  // slices {h0 h1 h2} {h3 h4 h5} {h6 h7 h8}
  sql("CREATE TRIGGER fail_h4 BEFORE INSERT ON commands WHEN NEW.host_id = 'h4' "
      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  auto r = runOn(hosts);
  ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("for 3 of 9 hosts"), absl::string_view::npos) << r.status();
  // The first slice is stored and sent; nothing of the failed slice left the server.
  EXPECT_EQ(sessions_["h0"]->sent<DispatchMsg>().size(), 1u);
  EXPECT_EQ(sessions_["h2"]->sent<DispatchMsg>().size(), 1u);
  EXPECT_TRUE(sessions_["h4"]->sent<DispatchMsg>().empty());
  EXPECT_TRUE(sessions_["h6"]->sent<DispatchMsg>().empty());
  // Not a run the operator should submit again: it is stored and lists its targets.
  std::string run_id = storedOfRun("").empty() ? "" : storedOfRun("")[0].run_id;
  ASSERT_FALSE(run_id.empty());
  EXPECT_FALSE(runComplete(run_id));
  EXPECT_EQ(storedOfRun(run_id).size(), 3u);

  plane_->tick();  // too soon: retries are a second apart
  clock_.advanceMs(1000);
  plane_->tick();  // the store still fails
  EXPECT_EQ(storedOfRun(run_id).size(), 3u);
  EXPECT_TRUE(sessions_["h4"]->sent<DispatchMsg>().empty());

  sql("DROP TRIGGER fail_h4");
  clock_.advanceMs(1000);
  plane_->tick();
  EXPECT_EQ(storedCountSoon(run_id, 9), 9u);
  EXPECT_TRUE(runComplete(run_id));
  // The last slice is sent by the writer's callback, just after its commit.
  for (int i = 0; i < 500 && sessions_["h8"]->sent<DispatchMsg>().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (const auto& [id, session] : sessions_) {
    EXPECT_EQ(session->sent<DispatchMsg>().size(), 1u) << id;
  }
  clock_.advanceMs(1000);
  plane_->tick();  // nothing left to retry: no duplicates
  EXPECT_EQ(storedOfRun(run_id).size(), 9u);
  EXPECT_EQ(sessions_["h6"]->sent<DispatchMsg>().size(), 1u);
  EXPECT_EQ(sent_before_stored_.load(), 0);
}

TEST_F(SlicedRunTest, ReplayOfARunStillBeingStoredSaysHowFarItGot) {
  auto hosts = fleet(9);
  sql("CREATE TRIGGER fail_h4 BEFORE INSERT ON commands WHEN NEW.host_id = 'h4' "
      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  CreateRunRequest req;
  req.host_ids = hosts;
  req.exec.argv = {"true"};
  req.created_by = "test";
  req.idempotency_key = "deploy-7";
  auto first = plane_->commands().createRun(req);
  ASSERT_TRUE(absl::IsUnavailable(first.status())) << first.status();
  // The CLI retries a 503 with the same key: it must learn the run exists, not make another.
  auto again = plane_->commands().createRun(req);
  ASSERT_TRUE(absl::IsUnavailable(again.status())) << again.status();
  EXPECT_NE(again.status().message().find("is stored for 3 of 9 hosts"), absl::string_view::npos)
      << again.status();
  EXPECT_NE(again.status().message().find("do not submit it again"), absl::string_view::npos);
  EXPECT_EQ(storedOfRun("").size(), 3u);
  sql("DROP TRIGGER fail_h4");
  clock_.advanceMs(1000);
  plane_->tick();
  std::string run_id = storedOfRun("")[0].run_id;
  EXPECT_EQ(storedCountSoon(run_id, 9), 9u);
  EXPECT_TRUE(runComplete(run_id));
  auto replayed = plane_->commands().createRun(req);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_TRUE(replayed->replayed);
  EXPECT_EQ(replayed->commands.size(), 9u);
}

TEST_F(SlicedRunTest, CancellingARunStopsTheSlicesNotStoredYetEvenAcrossARestart) {
  auto hosts = fleet(9);
  sql("CREATE TRIGGER fail_h4 BEFORE INSERT ON commands WHEN NEW.host_id = 'h4' "
      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  auto r = runOn(hosts);
  ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  std::string run_id = storedOfRun("")[0].run_id;
  auto cancelled = plane_->commands().cancelRun(run_id, "wrong script");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->size(), 3u);
  EXPECT_TRUE(runComplete(run_id));  // no pending targets left to create
  sql("DROP TRIGGER fail_h4");
  clock_.advanceMs(1000);
  plane_->tick();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(storedOfRun(run_id).size(), 3u);
  for (const char* host : {"h4", "h6", "h8"}) {
    EXPECT_TRUE(sessions_[host]->sent<DispatchMsg>().empty()) << host;
  }
  EXPECT_EQ(sessions_["h0"]->sent<CancelMsg>().size(), 1u);  // it had it: told to stop
  reopen();  // a new process: nothing is completed behind the operator's back
  EXPECT_EQ(storedOfRun(run_id).size(), 3u);
  for (const auto& c : storedOfRun(run_id)) {
    EXPECT_NE(c.state, CommandState::kQueued) << c.host_id;
  }
}

TEST_F(SlicedRunTest, QueuedCommandPastItsDeadlineIsNotSent) {
  enroll("late-1");
  CreateRunRequest req;
  req.host_ids = {"late-1"};
  req.exec.argv = {"true"};
  req.expire_in_ms = 5000;
  req.created_by = "test";
  auto r = plane_->commands().createRun(req);
  ASSERT_TRUE(r.ok()) << r.status();
  clock_.advanceMs(6000);  // offline past the deadline; no tick has expired it yet
  auto s = connect("late-1");
  EXPECT_TRUE(s->sent<DispatchMsg>().empty());
  plane_->tick();
  EXPECT_EQ(stored(r->commands[0].id).state, CommandState::kExpired);
}

TEST_F(SlicedRunTest, RunInterruptedBetweenSlicesIsCompletedAtTheNextStart) {
  auto hosts = fleet(5);
  auto insert = interruptedRun(hosts, 2);
  ASSERT_TRUE(store_->writeAndWait(insert).status.ok());
  ASSERT_EQ(store_->loadIncompleteRuns()->size(), 1u);

  reopen();  // a new process on the same database
  EXPECT_TRUE(runComplete(insert.run.id));
  EXPECT_TRUE(store_->loadIncompleteRuns()->empty());
  auto stored = storedOfRun(insert.run.id);
  ASSERT_EQ(stored.size(), 5u);
  for (const auto& c : stored) {
    EXPECT_EQ(c.exec.argv, std::vector<std::string>{"uptime"});
    EXPECT_EQ(c.exec.timeout_ms, 5000);
    EXPECT_EQ(c.expires_at_ms, insert.commands[0].expires_at_ms);
  }
  EXPECT_EQ(plane_->commands().openCount(), 5u);
  auto s = connect("h4", "s2");
  ASSERT_EQ(s->sent<DispatchMsg>().size(), 1u);
  EXPECT_EQ(s->sent<DispatchMsg>()[0].command.exec.argv, std::vector<std::string>{"uptime"});
  reopen();  // completing is done once
  EXPECT_EQ(storedOfRun(insert.run.id).size(), 5u);
}

TEST_F(SlicedRunTest, RunThatCannotBeCompletedAtStartIsCompletedByTheTick) {
  auto hosts = fleet(5);
  auto insert = interruptedRun(hosts, 2);
  ASSERT_TRUE(store_->writeAndWait(insert).status.ok());
  sql("CREATE TRIGGER fail_h3 BEFORE INSERT ON commands WHEN NEW.host_id = 'h3' "
      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  reopen();  // the store refuses the missing commands at start
  EXPECT_EQ(storedOfRun(insert.run.id).size(), 2u);
  EXPECT_FALSE(runComplete(insert.run.id));
  auto s = connect("h4", "s2");
  sql("DROP TRIGGER fail_h3");
  clock_.advanceMs(1000);
  plane_->tick();
  EXPECT_EQ(storedCountSoon(insert.run.id, 5), 5u);
  EXPECT_TRUE(runComplete(insert.run.id));
  for (int i = 0; i < 500 && s->sent<DispatchMsg>().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(s->sent<DispatchMsg>().size(), 1u);  // sent once stored, to the connected host
  EXPECT_EQ(s->sent<DispatchMsg>()[0].command.exec.argv, std::vector<std::string>{"uptime"});
  clock_.advanceMs(1000);
  plane_->tick();  // nothing left: no duplicates
  EXPECT_EQ(storedOfRun(insert.run.id).size(), 5u);
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, RevokeEndsAStreamStillConnectingAndItsHelloIsRefused) {
  enroll("web-1");
  auto s = open("web-1");
  ASSERT_TRUE(plane_->decommission("web-1").ok());
  ASSERT_TRUE(s->closed());
  EXPECT_TRUE(absl::IsPermissionDenied(*s->closeStatus()));
  HelloInfo hello;
  hello.agent_id = "web-1";
  EXPECT_FALSE(plane_->onHello(s, hello).ok());
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kRevoked);
  EXPECT_EQ(plane_->hosts().sessionFor("web-1"), nullptr);
  EXPECT_EQ(plane_->hosts().connectedCount(), 0u);
}

TEST_F(ControlPlaneTest, RevokeRacingHelloNeverLeavesTheHostOnline) {
  for (int i = 0; i < 200; ++i) {
    std::string id = "race-" + std::to_string(i);
    enroll(id);
    auto s = open(id);
    HelloInfo hello;
    hello.agent_id = id;
    absl::Status hello_status;
    std::thread helloer([&] { hello_status = plane_->onHello(s, hello); });
    ASSERT_TRUE(plane_->decommission(id).ok());
    helloer.join();
    auto host = plane_->hosts().get(id);
    ASSERT_EQ(host->status, model::HostStatus::kRevoked) << "round " << i;
    ASSERT_EQ(plane_->hosts().sessionFor(id), nullptr) << "round " << i;
    // Whichever came first, the stream ends: refused at Hello, or closed by the revoke.
    ASSERT_TRUE(!hello_status.ok() || s->closed()) << "round " << i;
  }
  EXPECT_EQ(plane_->hosts().connectedCount(), 0u);
}

TEST_F(ControlPlaneTest, ReEnrollingEndsEveryStreamOfTheOldCredential) {
  std::string old_cred = enroll("web-1");
  auto live = connect("web-1", "live");
  auto connecting = open("web-1", "connecting");
  std::string fresh = enroll("web-1", "web-1");
  ASSERT_NE(fresh, old_cred);
  ASSERT_TRUE(live->closed());
  EXPECT_TRUE(absl::IsUnauthenticated(*live->closeStatus()));
  ASSERT_TRUE(connecting->closed());
  HelloInfo hello;
  hello.agent_id = "web-1";
  EXPECT_FALSE(plane_->onHello(connecting, hello).ok());
  EXPECT_EQ(plane_->hosts().sessionFor("web-1"), nullptr);
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOffline);
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->authenticate("web-1", old_cred)));
  // The new credential works.
  auto again = connect("web-1", "again");
  EXPECT_FALSE(again->closed());
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOnline);
}

TEST_F(ControlPlaneTest, UnknownIdAndWrongCredentialLookTheSame) {
  std::string cred = enroll("web-1");
  auto unknown = plane_->authenticate("nobody", cred);
  auto wrong = plane_->authenticate("web-1", cred + "x");
  EXPECT_EQ(unknown.code(), wrong.code());
  auto s = std::make_shared<FakeSession>("nobody", "s");
  auto opened = plane_->openStream(s, cred);
  EXPECT_EQ(opened.code(), wrong.code());
}

}  // namespace
}  // namespace muster::server

namespace muster::server {
namespace {

TEST_F(ControlPlaneTest, CancellingARunIsOneStoreTransaction) {
  std::vector<std::string> hosts;
  for (int i = 0; i < 40; ++i) {
    hosts.push_back("h" + std::to_string(i));
    enroll(hosts.back());
  }
  connect("h0");  // one running on a live host, the rest queued for offline hosts
  CreateRunRequest req;
  req.host_ids = hosts;
  req.exec.argv = {"sleep", "100"};
  req.created_by = "test";
  auto r = plane_->commands().createRun(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(store_->flush().ok());
  const uint64_t before = store_->stats().transactions;
  auto cancelled = plane_->commands().cancelRun(r->run_id, "operator");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(store_->stats().transactions - before, 1u);
  EXPECT_EQ(cancelled->size(), hosts.size());
  size_t queued_cancelled = 0;
  for (const auto& c : *cancelled) {
    auto s = stored(c.id);
    if (c.host_id == "h0") {
      EXPECT_TRUE(s.cancel_requested);
    } else {
      EXPECT_EQ(s.state, CommandState::kCancelled);
      ++queued_cancelled;
    }
  }
  EXPECT_EQ(queued_cancelled, hosts.size() - 1);
}

TEST_F(ControlPlaneTest, ResultsWaitInTheAgentWhileTheStoreIsFarBehind) {
  config_.max_store_backlog = 8;
  openPlane();
  enroll("web-1");
  auto s = connect("web-1");
  auto r = run("web-1");
  ASSERT_TRUE(store_->flush().ok());
  // Another connection holds the database's write lock: the writer waits (busy timeout), and
  // what the core queues piles up behind it.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "muster.db").string().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  const std::string id = r.commands[0].id;
  for (int i = 0; i < 20 && !s->closed(); ++i) {
    model::OutputChunk chunk;
    chunk.command_id = id;
    chunk.stream = model::OutputStream::kStdout;
    chunk.offset = static_cast<uint64_t>(i);
    chunk.data = "x";
    plane_->commands().onOutput(s, chunk);
  }
  ASSERT_TRUE(s->closed());
  EXPECT_TRUE(absl::IsUnavailable(*s->closeStatus())) << *s->closeStatus();
  EXPECT_EQ(plane_->limits().hits(Limit::kStoreBacklog), 1u);
  // The result is not taken (no ack): the agent keeps it for its next stream.
  auto s2 = std::make_shared<FakeSession>("web-1", "s2");
  plane_->commands().onResult(s2, exited(id, 0));
  EXPECT_TRUE(s2->closed());
  EXPECT_TRUE(s2->sent<ResultAckMsg>().empty());
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  ASSERT_TRUE(store_->flush().ok());
  // Once the store caught up, the resent result is stored and acked.
  auto s3 = connect("web-1", "s3");
  plane_->commands().onResult(s3, exited(id, 0));
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(stored(id).state, CommandState::kSucceeded);
  ASSERT_EQ(s3->sent<ResultAckMsg>().size(), 1u);
}

// An enrolled agent could fill the disk through its finished commands, resending output at
// new offsets for ever. What a well-behaved agent sends is stored: live output, then after a
// reconnect its replay of head and tail at offsets of its own (overlapping the live chunks).
// Past 10 x max_output_bytes per stream more is dropped and counted.
TEST_F(ControlPlaneTest, OutputForAnEndedCommandIsBoundedByWhatTheAgentMayKeep) {
  config_.max_output_bytes = 1000;
  openPlane();
  enroll("web-1");
  auto s = connect("web-1");
  const std::string id = run("web-1").commands[0].id;
  auto send = [&](uint64_t offset, size_t len) {
    plane_->commands().onOutput(s,
                                {id, model::OutputStream::kStdout, offset, std::string(len, 'x')});
    ASSERT_TRUE(store_->flush().ok());
  };
  plane_->commands().onAccepted(s, id);
  for (uint64_t off = 0; off < 6000; off += 1000) send(off, 1000);  // live: 6000 bytes
  plane_->commands().onResult(s, exited(id, 0));
  ASSERT_TRUE(store_->flush().ok());
  send(0, 500);     // the replay's head: replaces nothing (a shorter chunk at 0 is kept out)
  send(5500, 500);  // the replay's tail, overlapping the last live chunk
  send(5500, 500);  // and again after another reconnect: replaces, the total stays
  EXPECT_EQ(*store_->outputBytes(id, model::OutputStream::kStdout), 6500u);
  EXPECT_EQ(plane_->limits().hits(Limit::kOutputBudget), 0u);
  // A flood at new offsets: stored up to 10,000 bytes, then dropped.
  for (uint64_t off = 6000; off < 20000; off += 1000) send(off, 1000);
  EXPECT_EQ(*store_->outputBytes(id, model::OutputStream::kStdout), 9500u);
  EXPECT_EQ(plane_->limits().hits(Limit::kOutputBudget), 11u);
  EXPECT_FALSE(s->closed());  // dropped, not a reason to end the stream
  // stderr has a budget of its own.
  plane_->commands().onOutput(s, {id, model::OutputStream::kStderr, 0, std::string(900, 'e')});
  ASSERT_TRUE(store_->flush().ok());
  EXPECT_EQ(*store_->outputBytes(id, model::OutputStream::kStderr), 900u);
}

// A host with more open commands than its link's send queue holds used to get them all at
// once on every reconnect: the queue overflowed, the stream ended, and the next one started
// the same redelivery again, for ever. They now go a window at a time, as the agent reads.
TEST_F(ControlPlaneTest, ManyOpenCommandsAreRedeliveredAWindowAtATime) {
  config_.redelivery_window_messages = 64;
  openPlane();
  enroll("web-1");
  std::set<std::string> ids;
  for (int i = 0; i < 300; ++i) ids.insert(run("web-1").commands[0].id);
  auto s = open("web-1");
  s->simulateQueue();
  HelloInfo hello;
  hello.agent_id = "web-1";
  ASSERT_TRUE(plane_->onHello(s, hello).ok());
  const size_t first = s->sent<DispatchMsg>().size();
  EXPECT_GE(first, 32u);
  EXPECT_LE(s->queuedMessages(), 64u);  // Welcome and the window
  plane_->tick();                       // the agent read nothing: nothing more
  EXPECT_EQ(s->sent<DispatchMsg>().size(), first);
  s->readAll();
  plane_->commands().onAccepted(s, *ids.begin());  // a report tops the window up
  const size_t second = s->sent<DispatchMsg>().size();
  EXPECT_GT(second, first);
  EXPECT_LE(second - first, 64u);
  for (int i = 0; i < 20 && s->sent<DispatchMsg>().size() < 300; ++i) {
    EXPECT_LE(s->queuedMessages(), 64u);
    s->readAll();
    plane_->tick();  // a quiet agent still gets the rest
  }
  std::multiset<std::string> dispatched;
  for (const auto& d : s->sent<DispatchMsg>()) dispatched.insert(d.command.id);
  EXPECT_EQ(dispatched.size(), 300u);
  EXPECT_EQ(std::set<std::string>(dispatched.begin(), dispatched.end()), ids);  // each once
  EXPECT_FALSE(s->closed());
}

// Large commands (scripts near the API's body limit): the window is in bytes too, so the
// send queue's byte bound is not overrun either. A window below the batch size still moves.
TEST_F(ControlPlaneTest, RedeliveryKeepsToTheByteWindow) {
  config_.redelivery_window_messages = 64;
  config_.redelivery_window_bytes = 20'000;
  openPlane();
  enroll("web-1");
  std::set<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    CreateRunRequest req;
    req.host_ids = {"web-1"};
    req.exec.argv = {"echo", std::string(3000, 'a')};
    req.created_by = "test";
    auto r = plane_->commands().createRun(req);
    ASSERT_TRUE(r.ok()) << r.status();
    ids.insert(r->commands[0].id);
  }
  auto s = open("web-1");
  s->simulateQueue();
  HelloInfo hello;
  hello.agent_id = "web-1";
  ASSERT_TRUE(plane_->onHello(s, hello).ok());
  for (int i = 0; i < 60 && s->sent<DispatchMsg>().size() < 40; ++i) {
    EXPECT_LE(s->queuedBytes(), 20'000u + 3'100u);  // the window and at most one command
    s->readAll();
    plane_->tick();
  }
  std::multiset<std::string> dispatched;
  for (const auto& d : s->sent<DispatchMsg>()) dispatched.insert(d.command.id);
  EXPECT_EQ(dispatched.size(), 40u);
  EXPECT_EQ(std::set<std::string>(dispatched.begin(), dispatched.end()), ids);
}

// --max-send-queue 16 makes a window of 8, below the batch of 16: it must still move.
TEST_F(ControlPlaneTest, RedeliveryWithAWindowBelowTheBatchStillDeliversEverything) {
  config_.redelivery_window_messages = 3;
  openPlane();
  enroll("web-1");
  for (int i = 0; i < 10; ++i) run("web-1");
  auto s = open("web-1");
  s->simulateQueue();
  HelloInfo hello;
  hello.agent_id = "web-1";
  ASSERT_TRUE(plane_->onHello(s, hello).ok());
  for (int i = 0; i < 20 && s->sent<DispatchMsg>().size() < 10; ++i) {
    EXPECT_LE(s->queuedMessages(), 3u + 1u);
    s->readAll();
    plane_->tick();
  }
  EXPECT_EQ(s->sent<DispatchMsg>().size(), 10u);
}

// --- Identity: an enrolled id cannot be taken over (issue 10, point 5) ---

absl::StatusOr<std::string> enrollWith(ControlPlane& plane, const std::string& id,
                                       const std::string& bound_to = "",
                                       const std::string& current_credential = "",
                                       model::StringMap token_labels = {},
                                       model::StringMap agent_labels = {}) {
  auto token = plane.enrollment().createToken(1, bound_to.empty() ? 0 : 3'600'000,
                                              std::move(token_labels), "test", bound_to);
  if (!token.ok()) return token.status();
  EnrollRequest req{.token = token->secret,
                    .agent_id = id,
                    .labels = std::move(agent_labels),
                    .current_credential = current_credential,
                    .source = "ipv4:192.0.2.7"};
  return plane.enrollment().enroll(req);
}

TEST_F(ControlPlaneTest, EnrollingAnEnrolledIdWithAPlainTokenIsRefusedAndCostsNoUse) {
  std::string cred = enroll("web-1");
  auto live = connect("web-1");
  auto token = plane_->enrollment().createToken(1, 0, {}, "attacker-got-this");
  ASSERT_TRUE(token.ok());
  auto taken = plane_->enrollment().enroll({.token = token->secret, .agent_id = "web-1"});
  ASSERT_TRUE(absl::IsAlreadyExists(taken.status())) << taken.status();
  EXPECT_NE(taken.status().message().find("'web-1'"), std::string::npos) << taken.status();
  EXPECT_NE(taken.status().message().find("--host web-1"), std::string::npos) << taken.status();
  // Nothing changed: the host keeps its credential and its stream; the token keeps its use.
  EXPECT_FALSE(live->closed());
  EXPECT_TRUE(plane_->authenticate("web-1", cred).ok());
  auto tokens = plane_->enrollment().listTokens();
  ASSERT_TRUE(tokens.ok());
  for (const auto& t : *tokens) {
    if (t.id == token->record.id) EXPECT_EQ(t.uses_left, 1);
  }
  // The same token still enrolls a new id.
  EXPECT_TRUE(plane_->enrollment().enroll({.token = token->secret, .agent_id = "web-2"}).ok());
}

TEST_F(ControlPlaneTest, AHostBoundTokenReEnrollsItsHostOnly) {
  std::string old_cred = enroll("web-1");
  auto live = connect("web-1");
  auto other = enrollWith(*plane_, "web-9", "web-1");
  ASSERT_TRUE(absl::IsPermissionDenied(other.status())) << other.status();
  EXPECT_NE(other.status().message().find("for host 'web-1'"), std::string::npos);
  auto fresh = enrollWith(*plane_, "web-1", "web-1");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE(live->closed());
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->authenticate("web-1", old_cred)));
  EXPECT_TRUE(plane_->authenticate("web-1", *fresh).ok());
  // A bound token also enrolls its host when it is new.
  EXPECT_TRUE(enrollWith(*plane_, "web-3", "web-3").ok());
}

TEST_F(ControlPlaneTest, TheCurrentCredentialRotatesItAndAWrongOneDoesNot) {
  std::string cred = enroll("web-1");
  auto wrong = enrollWith(*plane_, "web-1", "", cred + "x");
  EXPECT_TRUE(absl::IsAlreadyExists(wrong.status())) << wrong.status();
  auto rotated = enrollWith(*plane_, "web-1", "", cred);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_NE(*rotated, cred);
  EXPECT_TRUE(absl::IsUnauthenticated(plane_->authenticate("web-1", cred)));
  EXPECT_TRUE(plane_->authenticate("web-1", *rotated).ok());
  // A credential of another host proves nothing.
  std::string other = enroll("web-2");
  EXPECT_TRUE(absl::IsAlreadyExists(enrollWith(*plane_, "web-1", "", other).status()));
}

TEST_F(ControlPlaneTest, ARevokedHostEnrollsAgainWithAPlainToken) {
  enroll("web-1");
  ASSERT_TRUE(plane_->decommission("web-1").ok());
  auto again = enrollWith(*plane_, "web-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(plane_->hosts().get("web-1")->status, model::HostStatus::kOffline);
  EXPECT_TRUE(plane_->authenticate("web-1", *again).ok());
}

TEST_F(ControlPlaneTest, TwoEnrollmentsOfOneNewIdCannotBothTakeIt) {
  constexpr int kThreads = 8;
  std::vector<std::string> secrets;
  for (int i = 0; i < kThreads; ++i) {
    secrets.push_back(plane_->enrollment().createToken(1, 0, {}, "test")->secret);
  }
  std::atomic<int> ok{0}, exists{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto r = plane_->enrollment().enroll({.token = secrets[i], .agent_id = "web-1"});
      if (r.ok()) ++ok;
      if (absl::IsAlreadyExists(r.status())) ++exists;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), kThreads - 1);
  // The refused ones spent no use of their tokens.
  int used = 0;
  auto tokens = plane_->enrollment().listTokens();
  ASSERT_TRUE(tokens.ok());
  for (const auto& t : *tokens) used += t.uses_left == 0 ? 1 : 0;
  EXPECT_EQ(used, 1);
}

// An agent whose Enroll reply was lost retries with the same attempt id and gets in; another
// attempt does not, and once the host has connected its attempt id is spent.
TEST_F(ControlPlaneTest, ARetryOfTheSameEnrollmentAttemptGetsInUntilTheHostConnects) {
  auto enrollAttempt = [&](const std::string& attempt) {
    auto token = plane_->enrollment().createToken(1, 0, {}, "test");
    return plane_->enrollment().enroll(
        {.token = token->secret, .agent_id = "web-1", .attempt_id = attempt});
  };
  ASSERT_TRUE(enrollAttempt("attempt-a").ok());  // the reply was lost
  EXPECT_TRUE(absl::IsAlreadyExists(enrollAttempt("attempt-b").status()));
  auto again = enrollAttempt("attempt-a");
  ASSERT_TRUE(again.ok()) << again.status();
  creds_["web-1"] = *again;
  connect("web-1");
  EXPECT_TRUE(absl::IsAlreadyExists(enrollAttempt("attempt-a").status()));
}

TEST_F(ControlPlaneTest, ARevokedIdTakenAgainStartsWithoutTheOldLabels) {
  enroll("db-1");
  ASSERT_TRUE(plane_->hosts().setLabels("db-1", {{"env", "prod"}, {"role", "db"}}, {}).ok());
  ASSERT_TRUE(plane_->decommission("db-1").ok());
  ASSERT_TRUE(enrollWith(*plane_, "db-1", "", "", {{"site", "lab"}}).ok());
  auto host = plane_->hosts().get("db-1");
  EXPECT_EQ(host->labels, (model::StringMap{{"site", "lab"}}));
  EXPECT_EQ(host->pinned_labels, (std::set<std::string>{"site"}));
}

TEST_F(ControlPlaneTest, ATokenForOneHostIsSingleUseAndExpires) {
  EXPECT_TRUE(absl::IsInvalidArgument(
      plane_->enrollment().createToken(2, 3'600'000, {}, "test", "web-1").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      plane_->enrollment().createToken(1, 0, {}, "test", "web-1").status()));
  EXPECT_TRUE(plane_->enrollment().createToken(1, 3'600'000, {}, "test", "web-1").ok());
}

TEST_F(ControlPlaneTest, TokenAndOperatorLabelsAreNeverReplacedByTheAgent) {
  auto cred =
      enrollWith(*plane_, "web-1", "", "", {{"env", "prod"}}, {{"env", "dev"}, {"role", "web"}});
  ASSERT_TRUE(cred.ok()) << cred.status();
  creds_["web-1"] = *cred;
  auto labels = [&] { return plane_->hosts().get("web-1")->labels; };
  EXPECT_EQ(labels(), (model::StringMap{{"env", "prod"}, {"role", "web"}}));
  ASSERT_TRUE(plane_->hosts().setLabels("web-1", {{"tier", "gold"}}, {}).ok());
  auto s = open("web-1");
  HelloInfo hello;
  hello.agent_id = "web-1";
  hello.labels = {{"env", "test"}, {"tier", "bronze"}, {"role", "db"}};
  ASSERT_TRUE(plane_->onHello(s, hello).ok());
  EXPECT_EQ(labels(), (model::StringMap{{"env", "prod"}, {"role", "db"}, {"tier", "gold"}}));
  // Pinned labels survive a restart (they are stored).
  plane_.reset();
  openPlane();
  EXPECT_EQ(plane_->hosts().get("web-1")->pinned_labels, (std::set<std::string>{"env", "tier"}));
}

TEST_F(ControlPlaneTest, AgentLabelKeysRestrictWhatAgentsSetForThemselves) {
  config_.agent_label_keys = {"role"};
  openPlane();
  auto cred = enrollWith(*plane_, "web-1", "", "", {}, {{"role", "web"}, {"zone", "a"}});
  ASSERT_TRUE(cred.ok()) << cred.status();
  creds_["web-1"] = *cred;
  EXPECT_EQ(plane_->hosts().get("web-1")->labels, (model::StringMap{{"role", "web"}}));
  auto s = open("web-1");
  HelloInfo hello;
  hello.agent_id = "web-1";
  hello.labels = {{"role", "db"}, {"zone", "b"}};
  ASSERT_TRUE(plane_->onHello(s, hello).ok());
  EXPECT_EQ(plane_->hosts().get("web-1")->labels, (model::StringMap{{"role", "db"}}));
}

// mTLS in the core: the transport verifies the chain and hands over the fingerprint; the core
// decides whether it is the host's. The signer here stands in for the CA (crypto is tested in
// tests/unit/crypto and end to end in tests/integration/mtls_test.cc).
class ClientCertificateTest : public ControlPlaneTest {
 protected:
  void useSigner() {
    plane_->enrollment().setCertificateSigner(
        [this](const std::string& csr,
               const std::string& agent_id) -> absl::StatusOr<IssuedCertificate> {
          if (csr == "bad")
            return absl::InvalidArgumentError("the CSR's signature does not verify");
          ++signed_;
          return IssuedCertificate{.cert_pem = "PEM of " + agent_id,
                                   .sha256_hex = agent_id + "-cert-" + std::to_string(signed_),
                                   .serial_hex = std::to_string(signed_),
                                   .not_after_ms = clock_.nowMs() + 3'600'000};
        });
  }
  absl::StatusOr<IssuedCertificate> enrollWithCsr(const std::string& id,
                                                  const std::string& csr = "csr",
                                                  const std::string& bound_to = "") {
    auto token =
        plane_->enrollment().createToken(1, bound_to.empty() ? 0 : 3'600'000, {}, "test", bound_to);
    if (!token.ok()) return token.status();
    IssuedCertificate issued;
    EnrollRequest req;
    req.token = token->secret;
    req.agent_id = id;
    req.csr_pem = csr;
    auto cred = plane_->enrollment().enroll(req, &issued);
    if (!cred.ok()) return cred.status();
    creds_[id] = *cred;
    return issued;
  }
  absl::Status openWith(const std::string& id, const std::string& cert_sha) {
    auto s = std::make_shared<FakeSession>(id, "s-" + cert_sha);
    return plane_->openStream(s, creds_[id], cert_sha);
  }
  int signed_ = 0;
};

TEST_F(ClientCertificateTest, APresentedCertificateMustBeTheOneIssuedToTheHost) {
  useSigner();
  auto a = enrollWithCsr("web-1");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->cert_pem, "PEM of web-1");
  EXPECT_EQ(plane_->hosts().get("web-1")->client_cert_sha256, a->sha256_hex);
  auto b = enrollWithCsr("web-2");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(openWith("web-1", a->sha256_hex).ok());
  EXPECT_TRUE(openWith("web-1", "").ok()) << "not required: none is fine";
  auto other = openWith("web-1", b->sha256_hex);
  EXPECT_TRUE(absl::IsUnauthenticated(other)) << other;
  // A CSR that cannot be signed fails the enrollment and spends no use of the token.
  auto token = plane_->enrollment().createToken(1, 0, {}, "test");
  EnrollRequest req;
  req.token = token->secret;
  req.agent_id = "web-3";
  req.csr_pem = "bad";
  EXPECT_TRUE(absl::IsInvalidArgument(plane_->enrollment().enroll(req).status()));
  req.csr_pem = "csr";
  EXPECT_TRUE(plane_->enrollment().enroll(req).ok()) << "the token's one use was kept";
}

TEST_F(ClientCertificateTest, RequiredCertificatesRefuseNoneAndExpiredOnes) {
  config_.require_client_certs = true;
  openPlane();
  // Without a signer the requirement cannot be met: enrollment says so.
  auto unsigned_enroll = enrollWithCsr("web-1");
  EXPECT_TRUE(absl::IsFailedPrecondition(unsigned_enroll.status())) << unsigned_enroll.status();
  useSigner();
  auto no_csr = enrollWithCsr("web-1", "");
  EXPECT_TRUE(absl::IsFailedPrecondition(no_csr.status())) << no_csr.status();
  auto a = enrollWithCsr("web-1");
  ASSERT_TRUE(a.ok()) << a.status();
  auto none = openWith("web-1", "");
  EXPECT_TRUE(absl::IsUnauthenticated(none)) << none;
  EXPECT_NE(none.message().find("--require-client-certs"), std::string::npos) << none;
  EXPECT_TRUE(openWith("web-1", a->sha256_hex).ok());
  clock_.advanceMs(3'600'000);
  auto expired = openWith("web-1", a->sha256_hex);
  EXPECT_TRUE(absl::IsUnauthenticated(expired)) << expired;
  EXPECT_NE(expired.message().find("expired"), std::string::npos) << expired;
}

TEST_F(ClientCertificateTest, ACredentialAloneCannotRenewAwayTheHostsCertificate) {
  useSigner();  // certificates optional: a stream without one is let in
  auto own = enrollWithCsr("web-1");
  ASSERT_TRUE(own.ok());
  auto stolen = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], "", "csr", "x");
  EXPECT_TRUE(absl::IsUnauthenticated(stolen.status())) << stolen.status();
  EXPECT_EQ(plane_->hosts().get("web-1")->client_cert_sha256, own->sha256_hex);
  EXPECT_TRUE(openWith("web-1", own->sha256_hex).ok());
  // Once the certificate expired, the credential may get a new one (else the host would be
  // locked out of certificates for good).
  clock_.advanceMs(3'600'000);
  auto fresh = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], "", "csr", "x");
  EXPECT_TRUE(fresh.ok()) << fresh.status();
}

TEST_F(ClientCertificateTest, ARenewalWhoseReplyWasLostIsRedoneWithoutLockingTheAgentOut) {
  config_.require_client_certs = true;
  openPlane();
  useSigner();
  auto first = enrollWithCsr("web-1");
  ASSERT_TRUE(first.ok());
  auto lost = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], first->sha256_hex,
                                                    "csr", "test");
  ASSERT_TRUE(lost.ok());
  // The agent never got `lost` and retries with the certificate it still has.
  auto again = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], first->sha256_hex,
                                                     "csr", "test");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(openWith("web-1", first->sha256_hex).ok()) << "still its certificate";
  EXPECT_TRUE(absl::IsUnauthenticated(openWith("web-1", lost->sha256_hex)));
  EXPECT_TRUE(openWith("web-1", again->sha256_hex).ok());
}

TEST_F(ClientCertificateTest, RenewalKeepsThePreviousUntilTheNewOneIsUsedAndSurvivesARestart) {
  config_.require_client_certs = true;
  openPlane();
  useSigner();
  auto first = enrollWithCsr("web-1");
  ASSERT_TRUE(first.ok());
  // Proven by credential and the current certificate; anything less is refused.
  auto wrong_cred = plane_->enrollment().renewCertificate("web-1", "mst_agent_nope",
                                                          first->sha256_hex, "csr", "test");
  EXPECT_TRUE(absl::IsUnauthenticated(wrong_cred.status())) << wrong_cred.status();
  auto wrong_cert = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], "someone-else",
                                                          "csr", "test");
  EXPECT_TRUE(absl::IsUnauthenticated(wrong_cert.status())) << wrong_cert.status();
  auto second = plane_->enrollment().renewCertificate("web-1", creds_["web-1"], first->sha256_hex,
                                                      "csr", "test");
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_NE(second->sha256_hex, first->sha256_hex);
  // Both work until a stream presents the new one; then only the new one.
  EXPECT_TRUE(openWith("web-1", first->sha256_hex).ok());
  EXPECT_TRUE(openWith("web-1", second->sha256_hex).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(openWith("web-1", first->sha256_hex)));
  ASSERT_TRUE(store_->flush().ok());
  openPlane();
  EXPECT_EQ(plane_->hosts().get("web-1")->client_cert_sha256, second->sha256_hex);
  EXPECT_TRUE(openWith("web-1", second->sha256_hex).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(openWith("web-1", first->sha256_hex)));
  // A revoked host's certificate is refused, and renewal with it too.
  ASSERT_TRUE(plane_->hosts().revoke("web-1").ok());
  EXPECT_TRUE(absl::IsPermissionDenied(openWith("web-1", second->sha256_hex)));
  useSigner();
  EXPECT_FALSE(plane_->enrollment()
                   .renewCertificate("web-1", creds_["web-1"], second->sha256_hex, "csr", "test")
                   .ok());
}

}  // namespace
}  // namespace muster::server
