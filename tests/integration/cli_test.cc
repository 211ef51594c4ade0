// The `muster` CLI end to end: the real binary against a real musterd with real agents.
// Selector targeting, live output, exit codes, cancel, pagination, roles, tokens, host
// labels and removal, and the error statuses as the operator sees them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

using namespace std::chrono_literals;

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
};

std::string str(const boost::json::value& v, const char* key) {
  if (!v.is_object()) return "";
  auto* p = v.as_object().if_contains(key);
  return p && p->is_string() ? std::string(p->as_string()) : "";
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Musterd>(dir_);
    enroll_token_ = server_->enrollToken();
  }

  // Starts agents and waits until every one is online.
  void startAgents(const std::vector<std::pair<std::string, std::vector<std::string>>>& agents) {
    for (const auto& [id, labels] : agents) {
      std::vector<std::string> extra;
      for (const auto& l : labels) {
        extra.push_back("--label");
        extra.push_back(l);
      }
      agents_.push_back(std::make_unique<AgentProc>(dir_, *server_, id, enroll_token_, extra));
    }
    for (const auto& [id, labels] : agents) {
      ASSERT_TRUE(waitFor([&] { return server_->hostStatus(id) == "online"; }))
          << id << " never came online:\n"
          << agent(id).process().err();
    }
  }

  AgentProc& agent(const std::string& id) {
    for (auto& a : agents_) {
      if (a->id() == id) return *a;
    }
    throw std::runtime_error("no agent " + id);
  }

  std::vector<std::string> argvFor(const std::vector<std::string>& args, const std::string& token) {
    std::vector<std::string> argv = {MUSTER_CLI_BIN, "--server",        server_->httpBase(),
                                     "--ca",         server_->caFile(), "--token",
                                     token};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // Runs `muster ARGS...` to completion (with the admin token unless `token` is given).
  CliResult muster(const std::vector<std::string>& args, std::string token = "") {
    if (token.empty()) token = server_->adminToken();
    Process p(argvFor(args, token), dir_.sub("cli-" + std::to_string(runs_++)));
    CliResult r;
    r.code = p.wait(60s);
    r.out = p.out();
    r.err = p.err();
    return r;
  }

  // Starts `muster ARGS...` and returns without waiting.
  std::unique_ptr<Process> musterAsync(const std::vector<std::string>& args) {
    return std::make_unique<Process>(argvFor(args, server_->adminToken()),
                                     dir_.sub("cli-" + std::to_string(runs_++)));
  }

  boost::json::value json(const CliResult& r) {
    boost::system::error_code ec;
    auto v = boost::json::parse(r.out, ec);
    EXPECT_FALSE(ec) << "not JSON: " << r.out << r.err;
    return ec ? boost::json::value() : v;
  }

  std::vector<std::string> hostIds(const CliResult& r) {
    std::vector<std::string> ids;
    auto v = json(r);
    if (!v.is_object()) return ids;
    for (const auto& h : v.at("hosts").as_array()) ids.push_back(str(h, "id"));
    return ids;
  }

  // Commands in `state` (all of them, newest first), via the API.
  boost::json::array commandsIn(const std::string& state) {
    auto r = server_->get("/api/v1/commands?limit=1000&state=" + state);
    auto v = r.json();
    return v.is_object() ? v.at("commands").as_array() : boost::json::array{};
  }

  static std::string describe(const CliResult& r) {
    return "exit " + std::to_string(r.code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
  }

  TempDir dir_;
  std::unique_ptr<Musterd> server_;
  std::string enroll_token_;
  std::vector<std::unique_ptr<AgentProc>> agents_;
  int runs_ = 0;
};

TEST_F(CliTest, SelectorTargetsLabelledHostsAndPrefixesTheirOutput) {
  startAgents({{"web-1", {"env=prod", "role=web"}},
               {"web-2", {"env=prod", "role=web"}},
               {"db-1", {"env=prod", "role=db"}},
               {"dev-1", {"env=dev", "role=web"}}});

  CliResult prod = muster({"hosts", "-l", "env=prod", "--json"});
  ASSERT_EQ(prod.code, 0) << describe(prod);
  EXPECT_EQ(hostIds(prod), (std::vector<std::string>{"db-1", "web-1", "web-2"}));
  CliResult table = muster({"hosts", "-l", "role in (web,db),env!=dev"});
  ASSERT_EQ(table.code, 0) << describe(table);
  EXPECT_TRUE(contains(table.out, "ID")) << table.out;
  EXPECT_TRUE(contains(table.out, "db-1"));
  EXPECT_FALSE(contains(table.out, "dev-1"));
  CliResult none = muster({"hosts", "-l", "env=nowhere"});
  EXPECT_EQ(none.code, 0);
  EXPECT_TRUE(contains(none.out, "no hosts match")) << none.out;

  CliResult run = muster(
      {"run", "-l", "env=prod,role=web", "--", "sh", "-c", "echo out-line; echo err-line >&2"});
  ASSERT_EQ(run.code, 0) << describe(run);
  EXPECT_TRUE(contains(run.out, "web-1 | out-line")) << run.out;
  EXPECT_TRUE(contains(run.out, "web-2 | out-line")) << run.out;
  EXPECT_TRUE(contains(run.err, "web-1 | err-line")) << run.err;
  EXPECT_FALSE(contains(run.out, "db-1")) << run.out;
  EXPECT_FALSE(contains(run.out, "dev-1")) << run.out;
  EXPECT_TRUE(contains(run.out, "2 succeeded")) << run.out;

  // The core's counters saw it: agents connected, results, dispatch-to-result latency.
  std::string metrics = server_->get("/metrics").body;
  EXPECT_TRUE(contains(metrics, "muster_agents_connected 4\n")) << metrics;
  EXPECT_TRUE(contains(metrics, "muster_hosts{status=\"online\"} 4\n")) << metrics;
  EXPECT_TRUE(contains(metrics, "muster_command_results_total{state=\"succeeded\"} 2\n"));
  EXPECT_TRUE(contains(metrics, "muster_dispatch_to_result_seconds_count 2\n")) << metrics;
  EXPECT_TRUE(contains(metrics, "muster_commands_created_total 2\n")) << metrics;
  EXPECT_TRUE(contains(
      metrics, "muster_http_requests_total{route=\"POST /api/v1/commands\",code=\"201\"} 1"))
      << metrics;
}

TEST_F(CliTest, LabelsSetWithTheCliRetargetRuns) {
  startAgents({{"a-1", {"env=prod"}}, {"b-1", {"env=prod"}}});
  CliResult set = muster({"host", "label", "b-1", "tier=gold", "canary=yes"});
  ASSERT_EQ(set.code, 0) << describe(set);
  EXPECT_TRUE(contains(set.out, "canary=yes,env=prod,tier=gold")) << set.out;

  CliResult run = muster({"run", "-l", "tier=gold", "--", "echo", "gold"});
  ASSERT_EQ(run.code, 0) << describe(run);
  EXPECT_TRUE(contains(run.out, "b-1 | gold")) << run.out;
  EXPECT_FALSE(contains(run.out, "a-1")) << run.out;

  CliResult removed = muster({"host", "label", "b-1", "--remove", "canary"});
  ASSERT_EQ(removed.code, 0) << describe(removed);
  EXPECT_TRUE(contains(removed.out, "env=prod,tier=gold")) << removed.out;
  EXPECT_EQ(hostIds(muster({"hosts", "-l", "canary", "--json"})).size(), 0u);
  EXPECT_EQ(hostIds(muster({"hosts", "-l", "!canary,env=prod", "--json"})),
            (std::vector<std::string>{"a-1", "b-1"}));

  // Usage errors are caught before the server is asked.
  EXPECT_EQ(muster({"host", "label", "b-1"}).code, 2);
  EXPECT_EQ(muster({"host", "label", "b-1", "novalue"}).code, 2);
  EXPECT_EQ(muster({"host", "label", "b-1", "--remove", "k=v"}).code, 2);
  // A bad key is the server's 400.
  CliResult bad = muster({"host", "label", "b-1", "bad key!=x"});
  EXPECT_EQ(bad.code, 1) << describe(bad);
  EXPECT_TRUE(contains(bad.err, "invalid label")) << bad.err;
}

TEST_F(CliTest, ExitStatusIsZeroOnlyIfEveryHostSucceeded) {
  startAgents({{"h-1", {}}, {"h-2", {}}});
  CliResult ok = muster({"run", "-H", "h-1", "-H", "h-2", "--", "true"});
  EXPECT_EQ(ok.code, 0) << describe(ok);
  EXPECT_TRUE(contains(ok.out, "2 succeeded")) << ok.out;

  CliResult failed = muster({"run", "-H", "h-1", "-H", "h-2", "--", "sh", "-c", "exit 3"});
  EXPECT_EQ(failed.code, 1) << describe(failed);
  EXPECT_TRUE(contains(failed.out, "2 failed")) << failed.out;

  // mkdir is atomic: exactly one host wins, so the run is mixed.
  std::string once = dir_.sub("once");
  CliResult mixed = muster({"run", "-H", "h-1", "-H", "h-2", "--", "mkdir", once});
  EXPECT_EQ(mixed.code, 1) << describe(mixed);
  EXPECT_TRUE(contains(mixed.out, "1 failed, 1 succeeded")) << mixed.out;

  for (const auto& args : std::vector<std::vector<std::string>>{
           {"run", "--", "true"},                                 // no targets
           {"run", "-l", "env=prod", "-H", "h-1", "--", "true"},  // both kinds of targets
           {"run", "-H", "h-1"},                                  // nothing to run
           {"run", "-H", "h-1", "--timeout", "soon", "--", "true"},
           {"hosts", "--status", "sleeping"},
           {"frobnicate"},
           {"token", "create"},
           {"token", "create", "--role", "root"},
           {"token", "create", "--role", "viewer", "--enroll"},
       }) {
    CliResult r = muster(args);
    EXPECT_EQ(r.code, 2) << args[0] << " " << (args.size() > 1 ? args[1] : "") << ": "
                         << describe(r);
  }
  EXPECT_EQ(commandsIn("succeeded").size() + commandsIn("failed").size(), 6u);
}

TEST_F(CliTest, OutputIsStreamedWhileTheCommandRuns) {
  startAgents({{"live-1", {}}});
  std::string flag = dir_.sub("go-on");
  auto cli =
      musterAsync({"run", "-H", "live-1", "--", "sh", "-c",
                   "echo first; while [ ! -e " + flag + " ]; do sleep 0.05; done; echo second"});
  ASSERT_TRUE(waitFor([&] { return contains(cli->out(), "live-1 | first"); }))
      << cli->out() << cli->err();
  EXPECT_TRUE(cli->running());
  EXPECT_FALSE(contains(cli->out(), "second"));
  std::ofstream(flag) << "x";
  ASSERT_EQ(cli->wait(30s), 0) << cli->out() << cli->err();
  EXPECT_TRUE(contains(cli->out(), "live-1 | second")) << cli->out();
}

TEST_F(CliTest, CancelStopsAWholeRun) {
  startAgents({{"c-1", {}}, {"c-2", {}}});
  auto cli = musterAsync({"run", "-H", "c-1", "-H", "c-2", "--", "sleep", "60"});
  ASSERT_TRUE(waitFor([&] { return commandsIn("running").size() == 2; }))
      << cli->out() << cli->err();
  std::string run_id = str(commandsIn("running")[0], "run_id");
  ASSERT_FALSE(run_id.empty());

  CliResult cancel = muster({"cancel", run_id});
  ASSERT_EQ(cancel.code, 0) << describe(cancel);
  EXPECT_TRUE(contains(cancel.out, "cancel requested for 2 open command(s)")) << cancel.out;
  EXPECT_EQ(cli->wait(30s), 1) << cli->out() << cli->err();
  EXPECT_TRUE(contains(cli->out(), "2 cancelled")) << cli->out();

  CliResult show = muster({"run", "show", run_id, "--json"});
  ASSERT_EQ(show.code, 0) << describe(show);
  auto summary = json(show).at("summary");
  EXPECT_EQ(summary.at("cancelled").as_int64(), 2);
  EXPECT_EQ(summary.at("total").as_int64(), 2);

  // A detached run, cancelled by command id; cancelling it again is a 409.
  CliResult detached = muster({"run", "-H", "c-1", "--detach", "--json", "--", "sleep", "60"});
  ASSERT_EQ(detached.code, 0) << describe(detached);
  std::string command_id = str(json(detached).at("commands").as_array()[0], "id");
  ASSERT_TRUE(waitFor([&] { return server_->commandState(command_id) == "running"; }));
  CliResult one = muster({"cancel", command_id});
  ASSERT_EQ(one.code, 0) << describe(one);
  ASSERT_TRUE(waitFor([&] { return server_->commandState(command_id) == "cancelled"; }));
  CliResult again = muster({"cancel", command_id});
  EXPECT_EQ(again.code, 1) << describe(again);
  EXPECT_TRUE(contains(again.err, "already finished")) << again.err;
  EXPECT_FALSE(contains(again.err, "idempotency")) << again.err;
}

TEST_F(CliTest, CommandListPagesWithACursor) {
  startAgents({{"p-1", {}}});
  std::vector<std::string> created;
  for (int i = 0; i < 5; ++i) {
    CliResult r = muster({"run", "-H", "p-1", "--detach", "--json", "--", "true"});
    ASSERT_EQ(r.code, 0) << describe(r);
    created.push_back(str(json(r).at("commands").as_array()[0], "id"));
  }
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    std::vector<std::string> args = {"commands", "--limit", "2", "--json"};
    if (!cursor.empty()) {
      args.push_back("--cursor");
      args.push_back(cursor);
    }
    CliResult page = muster(args);
    ASSERT_EQ(page.code, 0) << describe(page);
    auto v = json(page);
    for (const auto& c : v.at("commands").as_array()) seen.push_back(str(c, "id"));
    cursor = str(v, "next_cursor");
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, std::vector<std::string>(created.rbegin(), created.rend()));

  CliResult human = muster({"commands", "--limit", "2"});
  ASSERT_EQ(human.code, 0) << describe(human);
  EXPECT_TRUE(contains(human.out, "(more: add --cursor " + created[3] + ")")) << human.out;
}

TEST_F(CliTest, EventsShowTheAuditLogAndFollowIt) {
  startAgents({{"ev-1", {}}});
  ASSERT_EQ(muster({"run", "-H", "ev-1", "--detach", "--", "true"}).code, 0);

  CliResult link = muster({"events", "--kind", "link.enrolled", "--json"});
  ASSERT_EQ(link.code, 0) << describe(link);
  boost::system::error_code ec;
  auto first = boost::json::parse(link.out.substr(0, link.out.find('\n')), ec);
  ASSERT_FALSE(ec) << link.out;
  EXPECT_EQ(str(first, "kind"), "link.enrolled");
  EXPECT_EQ(str(first, "actor"), "ev-1");

  CliResult table = muster({"events"});
  ASSERT_EQ(table.code, 0) << describe(table);
  EXPECT_TRUE(contains(table.out, "KIND")) << table.out;
  EXPECT_TRUE(contains(table.out, "api.command.create")) << table.out;
  CliResult none = muster({"events", "--host", "nobody"});
  EXPECT_TRUE(contains(none.out, "no events match")) << describe(none);
  CliResult bad = muster({"events", "--since", "yesterday"});
  EXPECT_EQ(bad.code, 1) << describe(bad);
  EXPECT_TRUE(contains(bad.err, "since")) << describe(bad);

  auto follower = musterAsync({"events", "--follow", "--json", "--kind", "link", "--limit", "5"});
  ASSERT_TRUE(waitFor([&] { return contains(follower->out(), "link.enrolled"); }))
      << follower->err();
  ASSERT_EQ(muster({"host", "rm", "ev-1"}).code, 0);
  EXPECT_TRUE(waitFor([&] { return contains(follower->out(), "link.revoked"); }))
      << follower->out() << follower->err();
  follower->signal(SIGINT);
  EXPECT_EQ(follower->wait(10s), 0) << follower->err();
}

TEST_F(CliTest, RolesDecideWhatATokenMayDo) {
  startAgents({{"r-1", {}}});
  CliResult viewer_created = muster({"token", "create", "--role", "viewer", "--name", "alice"});
  ASSERT_EQ(viewer_created.code, 0) << describe(viewer_created);
  std::string viewer = viewer_created.out.substr(0, viewer_created.out.find('\n'));
  EXPECT_EQ(viewer.rfind("mst_viewer_", 0), 0u) << viewer;
  CliResult op_created =
      muster({"token", "create", "--role", "operator", "--ttl", "30d", "--json"});
  ASSERT_EQ(op_created.code, 0) << describe(op_created);
  std::string op = str(json(op_created), "token");
  EXPECT_FALSE(str(json(op_created), "expires_at").empty());

  // viewer: reads, may not run.
  EXPECT_EQ(muster({"hosts"}, viewer).code, 0);
  CliResult denied = muster({"run", "-H", "r-1", "--", "true"}, viewer);
  EXPECT_EQ(denied.code, 1) << describe(denied);
  EXPECT_TRUE(contains(denied.err, "this token has role viewer; running commands needs operator"))
      << denied.err;
  EXPECT_TRUE(contains(denied.err, "muster token create --role operator")) << denied.err;

  // operator: runs, may not manage tokens or hosts.
  CliResult ran = muster({"run", "-H", "r-1", "--", "true"}, op);
  EXPECT_EQ(ran.code, 0) << describe(ran);
  CliResult no_tokens = muster({"token", "create", "--role", "viewer"}, op);
  EXPECT_EQ(no_tokens.code, 1) << describe(no_tokens);
  EXPECT_TRUE(contains(no_tokens.err, "creating tokens needs admin")) << no_tokens.err;
  EXPECT_EQ(muster({"host", "rm", "r-1"}, op).code, 1);
  EXPECT_EQ(muster({"token", "ls"}, op).code, 1);

  // admin lists them (never a secret), and revokes the viewer's.
  CliResult ls = muster({"token", "ls"});
  ASSERT_EQ(ls.code, 0) << describe(ls);
  EXPECT_TRUE(contains(ls.out, "alice")) << ls.out;
  EXPECT_TRUE(contains(ls.out, "enroll")) << ls.out;
  EXPECT_TRUE(contains(ls.out, "operator")) << ls.out;
  CliResult ls_json = muster({"token", "ls", "--json"});
  ASSERT_EQ(ls_json.code, 0);
  for (const auto& secret : {viewer, op, server_->adminToken(), enroll_token_}) {
    EXPECT_FALSE(contains(ls.out + ls_json.out, secret)) << "secret listed: " << secret;
  }
  EXPECT_FALSE(contains(ls_json.out, "hash"));
  std::string viewer_id;
  boost::json::value listed = json(ls_json);
  for (const auto& t : listed.at("api").as_array()) {
    if (str(t, "name") == "alice") viewer_id = str(t, "id");
  }
  ASSERT_FALSE(viewer_id.empty()) << ls_json.out;
  EXPECT_EQ(listed.at("enroll").as_array().size(), 1u);

  CliResult revoked = muster({"token", "revoke", viewer_id});
  ASSERT_EQ(revoked.code, 0) << describe(revoked);
  EXPECT_TRUE(contains(revoked.out, "revoked")) << revoked.out;
  CliResult refused = muster({"hosts"}, viewer);
  EXPECT_EQ(refused.code, 1) << describe(refused);
  EXPECT_TRUE(contains(refused.err, "revoked")) << refused.err;
  EXPECT_TRUE(contains(refused.err, "hint: musterd writes the first admin token")) << refused.err;
  CliResult unknown = muster({"token", "revoke", "01HZZZZZZZZZZZZZZZZZZZZZZZ"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_TRUE(contains(unknown.err, "no token with id")) << unknown.err;
}

TEST_F(CliTest, RemovedHostIsRefusedAndItsAgentSaysSo) {
  startAgents({{"gone-1", {"env=prod"}}, {"stay-1", {"env=prod"}}});
  CliResult rm = muster({"host", "rm", "gone-1"});
  ASSERT_EQ(rm.code, 0) << describe(rm);
  EXPECT_TRUE(contains(rm.out, "host gone-1 removed")) << rm.out;
  EXPECT_TRUE(contains(rm.out, "credential is revoked")) << rm.out;

  ASSERT_TRUE(waitFor([&] {
    return contains(agent("gone-1").process().err(), "server refused this agent");
  })) << agent("gone-1").process().err();
  EXPECT_TRUE(contains(agent("gone-1").process().err(), "revoked"));
  EXPECT_TRUE(contains(server_->process().err(), "host gone-1 decommissioned"));
  EXPECT_EQ(server_->hostStatus("gone-1"), "revoked");

  CliResult revoked = muster({"hosts", "--status", "revoked", "--json"});
  EXPECT_EQ(hostIds(revoked), (std::vector<std::string>{"gone-1"}));
  CliResult run = muster({"run", "-l", "env=prod", "--", "echo", "still-here"});
  EXPECT_EQ(run.code, 0) << describe(run);
  EXPECT_TRUE(contains(run.out, "stay-1 | still-here")) << run.out;
  EXPECT_FALSE(contains(run.out, "gone-1")) << run.out;
  // The agent stays refused (it retries with the revoked credential).
  EXPECT_EQ(server_->hostStatus("gone-1"), "revoked");
  EXPECT_EQ(muster({"host", "rm", "nobody"}).code, 1);
}

TEST_F(CliTest, ErrorsSayWhatToDoNext) {
  startAgents({{"e-1", {"env=prod"}}});
  CliResult not_found = muster({"host", "show", "ghost"});
  EXPECT_EQ(not_found.code, 1);
  EXPECT_TRUE(contains(not_found.err, "no host with id 'ghost'")) << not_found.err;

  CliResult bad_selector = muster({"run", "-l", "env in (", "--", "true"});
  EXPECT_EQ(bad_selector.code, 1) << describe(bad_selector);
  EXPECT_TRUE(contains(bad_selector.err, "hint: selectors look like")) << bad_selector.err;
  CliResult no_match = muster({"run", "-l", "env=nowhere", "--", "true"});
  EXPECT_EQ(no_match.code, 1) << describe(no_match);
  EXPECT_TRUE(contains(no_match.err, "matches no enrolled host")) << no_match.err;
  CliResult bad_list = muster({"hosts", "-l", "=x"});
  EXPECT_EQ(bad_list.code, 1) << describe(bad_list);

  CliResult wrong_token = muster({"hosts"}, "mst_nope");
  EXPECT_EQ(wrong_token.code, 1);
  EXPECT_TRUE(contains(wrong_token.err, "invalid API token")) << wrong_token.err;
  EXPECT_TRUE(contains(wrong_token.err, "admin.token")) << wrong_token.err;

  Process down({MUSTER_CLI_BIN, "--server", "https://127.0.0.1:" + std::to_string(freePort()),
                "--token", "x", "hosts"},
               dir_.sub("cli-down"));
  EXPECT_EQ(down.wait(30s), 1);
  EXPECT_TRUE(contains(down.err(), "cannot connect")) << down.err();
  EXPECT_TRUE(commandsIn("queued").empty());
}

// A machine re-imaged (or anyone holding an enrollment token) cannot take over an enrolled
// id with a plain token; a token made for the host with `--host` re-enrolls it, and the old
// credential is dead from then on.
TEST_F(CliTest, AnEnrolledIdIsTakenAgainOnlyWithATokenMadeForIt) {
  startAgents({{"web-1", {}}});
  agent("web-1").stop();
  TempDir wiped;  // the same id from a fresh state dir: a new machine, or an attacker
  AgentProc impostor(wiped, *server_, "web-1", enroll_token_);
  int status = impostor.process().wait(std::chrono::seconds(30));
  EXPECT_NE(status, 0);
  EXPECT_NE(impostor.process().err().find("already enrolled"), std::string::npos)
      << impostor.process().err();
  EXPECT_NE(impostor.process().err().find("--host web-1"), std::string::npos);

  auto token = muster({"token", "create", "--enroll", "--host", "web-1"});
  ASSERT_EQ(token.code, 0) << token.err;
  EXPECT_TRUE(contains(token.err, "for host web-1 only")) << token.err;
  std::string secret = token.out.substr(0, token.out.find('\n'));
  TempDir reimaged;
  AgentProc fresh(reimaged, *server_, "web-1", secret);
  ASSERT_TRUE(waitFor([&] { return server_->hostStatus("web-1") == "online"; }))
      << fresh.process().err();
  auto ls = muster({"token", "ls"});
  EXPECT_TRUE(contains(ls.out, "host:web-1")) << ls.out;
  // The old machine's credential no longer works.
  fresh.stop();
  AgentProc old_machine(dir_, *server_, "web-1", enroll_token_);
  EXPECT_TRUE(waitFor([&] { return contains(old_machine.process().err(), "refused"); }))
      << old_machine.process().err();
  EXPECT_NE(server_->hostStatus("web-1"), "online");
}

// `--secret-env NAME=@FILE`: the process gets the value; the CLI's output, the API's records
// and musterd's log never show it. `--token-file` keeps the API token out of `ps` too.
TEST_F(CliTest, SecretEnvReachesTheProcessAndNothingElse) {
  startAgents({{"h-1", {}}});
  const std::string secret = "hunter2-0xDEADBEEF";
  std::string secret_file = dir_.sub("db-password");
  std::ofstream(secret_file) << secret << "\n";
  std::string token_file = dir_.sub("token");
  std::ofstream(token_file) << server_->adminToken() << "\n";
  std::vector<std::string> argv = {MUSTER_CLI_BIN, "--server", server_->httpBase(), "--ca",
                                   server_->caFile(), "--token-file", token_file, "run", "-H",
                                   "h-1", "--secret-env", "PW=@" + secret_file, "--env",
                                   "MODE=check", "--", "sh", "-c",
                                   // The value in hex: the command line itself must not
                                   // hold the secret (it is returned by the API).
                                   "printf '%s:' \"$MODE\"; printf %s \"$PW\" | od -An -tx1 | "
                                   "tr -d ' \\n'; echo"};
  Process p(argv, dir_.sub("cli-secret"));
  ASSERT_EQ(p.wait(60s), 0) << p.out() << p.err();
  std::string hex;
  for (unsigned char c : secret) {
    char byte[3];
    std::snprintf(byte, sizeof byte, "%02x", c);
    hex += byte;
  }
  EXPECT_TRUE(contains(p.out(), "check:" + hex)) << p.out();
  EXPECT_FALSE(contains(p.out() + p.err(), secret));
  auto listed = muster({"commands", "--host", "h-1", "--json"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  EXPECT_TRUE(contains(listed.out, "\"PW\"")) << listed.out;  // the name is shown
  EXPECT_FALSE(contains(listed.out, secret));
  EXPECT_FALSE(contains(server_->process().err() + server_->process().out(), secret));
  EXPECT_FALSE(contains(agent("h-1").process().err() + agent("h-1").process().out(), secret));
}

}  // namespace
}  // namespace muster::itest
