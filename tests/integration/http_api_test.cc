// REST API over a real HttpServer: authentication, errors, commands, runs, hosts, tokens.

#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

TEST_F(HttpApiTest, HealthEndpointsAnswerWithoutToken) {
  Reply health = call("GET", "/healthz", "", {}, false);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(str(health.json, "status"), "ok");
  Reply ready = call("GET", "/readyz", "", {}, false);
  EXPECT_EQ(ready.status, 200) << ready.body;
}

TEST_F(HttpApiTest, ApiRejectsMissingOrWrongToken) {
  Reply missing = call("GET", "/api/v1/hosts", "", {}, false);
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(errorCode(missing), "unauthenticated");
  EXPECT_NE(missing.header_blob.find("WWW-Authenticate: Bearer"), std::string::npos);
  Reply wrong = call("GET", "/api/v1/hosts", "", {"Authorization: Bearer nope"}, false);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(errorCode(wrong), "unauthenticated");
  Reply scheme = call("GET", "/api/v1/hosts", "", {"Authorization: Basic Zm9vOmJhcg=="}, false);
  EXPECT_EQ(scheme.status, 401);
}

TEST_F(HttpApiTest, UnknownResourcesAre404Json) {
  for (const char* path : {"/api/v1/hosts/nope", "/api/v1/commands/01HZZZZZZZZZZZZZZZZZZZZZZZ",
                           "/api/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ", "/api/v1/nothing", "/nothing",
                           "/api/v1/commands/01HZZZZZZZZZZZZZZZZZZZZZZZ/output"}) {
    Reply r = call("GET", path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    EXPECT_EQ(errorCode(r), "not_found") << path;
  }
  Reply cancel = call("POST", "/api/v1/runs/nope/cancel");
  EXPECT_EQ(cancel.status, 404);
  Reply method = call("DELETE", "/api/v1/hosts");
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(errorCode(method), "method_not_allowed");
}

TEST_F(HttpApiTest, BadRequestBodiesAre400AndPersistNothing) {
  enrollHost("web-1");
  struct Case {
    const char* body;
    const char* why;
  } cases[] = {
      {"{not json", "malformed"},
      {"[1,2]", "not an object"},
      {R"({"hosts":"web-1","argv":["true"]})", "hosts not a list"},
      {R"({"hosts":["web-1"],"argv":"true"})", "argv not a list"},
      {R"({"hosts":["web-1"],"argv":[1]})", "argv item not a string"},
      {R"({"hosts":["web-1"],"argv":["true"],"timout":"5s"})", "unknown field"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout":5})", "timeout as a number"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout":"5 parsecs"})", "bad duration"},
      {R"({"hosts":["web-1"],"argv":["true"],"script":"true"})", "argv and script"},
      {R"({"hosts":["web-1"]})", "nothing to run"},
      {R"({"argv":["true"]})", "no hosts"},
      {R"({"hosts":["web-1"],"selector":"env=prod","argv":["true"]})", "hosts and selector"},
      {R"({"selector":["env=prod"],"argv":["true"]})", "selector not a string"},
      {R"({"hosts":["web-1"],"argv":["true"],"env":{"A":1}})", "env value not a string"},
      {R"({"hosts":["web-1"],"argv":["true"],"timeout_ms":1.5})", "fractional ms"},
  };
  for (const auto& c : cases) {
    Reply r = call("POST", "/api/v1/commands", c.body);
    EXPECT_EQ(r.status, 400) << c.why << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << c.why;
  }
  Reply unknown_host = call("POST", "/api/v1/commands", R"({"hosts":["ghost"],"argv":["true"]})");
  EXPECT_EQ(unknown_host.status, 404) << unknown_host.body;
  Reply bad_state = call("GET", "/api/v1/commands?state=sleeping");
  EXPECT_EQ(bad_state.status, 400);
  Reply bad_limit = call("GET", "/api/v1/commands?limit=0");
  EXPECT_EQ(bad_limit.status, 400);
  for (const char* body : {R"({"kind":"api","role":"root"})", R"({"kind":"api"})",
                           R"({"kind":"api","role":"viewer","uses":3})", R"({"kind":"session"})",
                           R"({"kind":"enroll","role":"admin"})", R"({"role":"admin"})"}) {
    Reply bad_token = call("POST", "/api/v1/tokens", body);
    EXPECT_EQ(bad_token.status, 400) << body << ": " << bad_token.body;
  }
  Reply tokens = call("GET", "/api/v1/tokens");
  ASSERT_EQ(tokens.status, 200);
  EXPECT_EQ(tokens.json.as_object().at("api").as_array().size(), 1u);  // the admin token only
  EXPECT_EQ(commandCount(), 0u);
}

TEST_F(HttpApiTest, OversizedBodyIs413AndServerKeepsServing) {
  enrollHost("web-1");
  std::string big = R"({"hosts":["web-1"],"argv":["echo",")" + std::string(2 << 20, 'x') + "\"]}";
  Reply r = call("POST", "/api/v1/commands", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(errorCode(r), "payload_too_large");
  // With 100-continue the client never sends the body.
  Reply expect = call("POST", "/api/v1/commands", big, {"Expect: 100-continue"});
  EXPECT_EQ(expect.status, 413);
  EXPECT_EQ(commandCount(), 0u);
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(HttpApiTest, QueuedCommandForOfflineHostCanBeCreatedReadListedAndCancelled) {
  enrollHost("web-1");
  Reply hosts = call("GET", "/api/v1/hosts");
  ASSERT_EQ(hosts.status, 200);
  auto& host_list = hosts.json.as_object().at("hosts").as_array();
  ASSERT_EQ(host_list.size(), 1u);
  EXPECT_EQ(str(host_list[0], "id"), "web-1");
  EXPECT_EQ(str(host_list[0], "status"), "offline");
  EXPECT_TRUE(hosts.json.as_object().at("next_cursor").is_null());
  EXPECT_EQ(
      call("GET", "/api/v1/hosts?status=online").json.as_object().at("hosts").as_array().size(),
      0u);
  EXPECT_EQ(call("GET", "/api/v1/hosts/web-1").status, 200);

  json::object created =
      createCommand("web-1", R"(,"timeout":"30s","expire":"1h","env":{"A":"b"})");
  std::string run_id = str(created, "run_id");
  ASSERT_FALSE(run_id.empty());
  auto& commands = created.at("commands").as_array();
  ASSERT_EQ(commands.size(), 1u);
  std::string id = str(commands[0], "id");
  EXPECT_EQ(str(commands[0], "state"), "queued");
  EXPECT_EQ(str(commands[0], "host_id"), "web-1");
  EXPECT_EQ(commands[0].as_object().at("timeout_ms").as_int64(), 30000);
  EXPECT_TRUE(commands[0].as_object().at("exit_code").is_null());
  EXPECT_TRUE(commands[0].as_object().at("finished_at").is_null());
  EXPECT_EQ(str(commands[0], "created_by"), "admin");

  Reply got = call("GET", "/api/v1/commands/" + id);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(str(got.json, "state"), "queued");
  EXPECT_EQ(str(got.json, "run_id"), run_id);
  EXPECT_EQ(str(got.json.as_object().at("env"), "A"), "b");

  Reply listed = call("GET", "/api/v1/commands?host=web-1&state=queued");
  ASSERT_EQ(listed.status, 200);
  ASSERT_EQ(listed.json.as_object().at("commands").as_array().size(), 1u);
  EXPECT_TRUE(listed.json.as_object().at("next_cursor").is_null());

  Reply run = call("GET", "/api/v1/runs/" + run_id);
  ASSERT_EQ(run.status, 200);
  auto& summary = run.json.as_object().at("summary").as_object();
  EXPECT_EQ(summary.at("queued").as_int64(), 1);
  EXPECT_EQ(summary.at("total").as_int64(), 1);
  EXPECT_TRUE(run.json.as_object().at("complete").as_bool());  // every target has its command
  EXPECT_FALSE(run.json.as_object().contains("targets"));

  Reply cancelled = call("POST", "/api/v1/commands/" + id + "/cancel");
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(str(cancelled.json, "state"), "cancelled");
  EXPECT_FALSE(cancelled.json.as_object().at("finished_at").is_null());
  Reply again = call("POST", "/api/v1/commands/" + id + "/cancel");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(errorCode(again), "failed_precondition");

  Reply after = call("GET", "/api/v1/runs/" + run_id);
  EXPECT_EQ(after.json.as_object().at("summary").as_object().at("cancelled").as_int64(), 1);
  Reply stored = call("GET", "/api/v1/commands/" + id);
  EXPECT_EQ(str(stored.json, "state"), "cancelled");
}

TEST_F(HttpApiTest, CancelRunCancelsItsOpenCommands) {
  enrollHost("web-1");
  enrollHost("web-2");
  Reply created =
      call("POST", "/api/v1/commands", R"({"hosts":["web-1","web-2"],"script":"sleep 1"})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string run_id = str(created.json, "run_id");
  Reply cancelled = call("POST", "/api/v1/runs/" + run_id + "/cancel");
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(cancelled.json.as_object().at("commands").as_array().size(), 2u);
  Reply run = call("GET", "/api/v1/runs/" + run_id);
  EXPECT_EQ(run.json.as_object().at("summary").as_object().at("cancelled").as_int64(), 2);
}

TEST_F(HttpApiTest, SummaryViewLeavesTheCommandListOut) {
  enrollHost("web-1");
  enrollHost("web-2");
  Reply created = call("POST", "/api/v1/commands?view=summary",
                       R"({"hosts":["web-1","web-2"],"argv":["true"]})");
  ASSERT_EQ(created.status, 201) << created.body;
  const auto& body = created.json.as_object();
  EXPECT_FALSE(body.contains("commands"));
  EXPECT_EQ(body.at("summary").as_object().at("queued").as_int64(), 2);
  EXPECT_EQ(body.at("summary").as_object().at("total").as_int64(), 2);
  std::string run_id = str(created.json, "run_id");

  Reply run = call("GET", "/api/v1/runs/" + run_id + "?view=summary");
  ASSERT_EQ(run.status, 200);
  EXPECT_FALSE(run.json.as_object().contains("commands"));
  EXPECT_EQ(run.json.as_object().at("summary").as_object().at("total").as_int64(), 2);
  Reply full = call("GET", "/api/v1/runs/" + run_id + "?view=full");
  EXPECT_EQ(full.json.as_object().at("commands").as_array().size(), 2u);

  Reply bad = call("POST", "/api/v1/commands?view=tiny", R"({"hosts":["web-1"],"argv":["true"]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(errorMessage(bad).find("full or summary"), std::string::npos) << bad.body;
  // Nothing was created by the rejected request.
  Reply listed = call("GET", "/api/v1/commands?host=web-1");
  EXPECT_EQ(listed.json.as_object().at("commands").as_array().size(), 1u);
}

TEST_F(HttpApiTest, IdempotencyKeyReplaysAndConflicts) {
  enrollHost("web-1");
  std::string body = R"({"hosts":["web-1"],"argv":["uptime"],"idempotency_key":"deploy-42"})";
  Reply first = call("POST", "/api/v1/commands", body);
  ASSERT_EQ(first.status, 201) << first.body;
  Reply replay = call("POST", "/api/v1/commands", body);
  ASSERT_EQ(replay.status, 200) << replay.body;
  EXPECT_EQ(str(replay.json, "run_id"), str(first.json, "run_id"));
  EXPECT_TRUE(replay.json.as_object().at("replayed").as_bool());

  Reply header = call("POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["uptime"]})",
                      {"Idempotency-Key: deploy-42"});
  EXPECT_EQ(header.status, 200) << header.body;
  EXPECT_EQ(str(header.json, "run_id"), str(first.json, "run_id"));

  Reply conflict = call("POST", "/api/v1/commands",
                        R"({"hosts":["web-1"],"argv":["reboot"],"idempotency_key":"deploy-42"})");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(errorCode(conflict), "already_exists");
  Reply mismatch = call("POST", "/api/v1/commands", body, {"Idempotency-Key: other"});
  EXPECT_EQ(mismatch.status, 400);
  EXPECT_EQ(commandCount(), 1u);
}

TEST_F(HttpApiTest, CommandListPagesNewestFirst) {
  enrollHost("web-1");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(str(createCommand("web-1").at("commands").as_array()[0], "id"));
  }
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    Reply page =
        call("GET", "/api/v1/commands?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    for (const auto& c : page.json.as_object().at("commands").as_array()) {
      seen.push_back(str(c, "id"));
    }
    const auto& next = page.json.as_object().at("next_cursor");
    cursor = next.is_string() ? std::string(next.as_string()) : "";
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> expected(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, expected);
}

TEST_F(HttpApiTest, HostListPagesById) {
  for (const char* id : {"c-host", "a-host", "b-host"}) enrollHost(id);
  Reply first = call("GET", "/api/v1/hosts?limit=2");
  ASSERT_EQ(first.status, 200);
  auto& hosts = first.json.as_object().at("hosts").as_array();
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(str(hosts[0], "id"), "a-host");
  EXPECT_EQ(str(hosts[1], "id"), "b-host");
  std::string cursor(first.json.as_object().at("next_cursor").as_string());
  Reply second = call("GET", "/api/v1/hosts?limit=2&cursor=" + cursor);
  auto& rest = second.json.as_object().at("hosts").as_array();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(str(rest[0], "id"), "c-host");
  EXPECT_TRUE(second.json.as_object().at("next_cursor").is_null());
}

TEST_F(HttpApiTest, EnrollTokenCanBeCreatedAndUsed) {
  Reply r = call("POST", "/api/v1/tokens",
                 R"({"kind":"enroll","uses":2,"ttl":"1h","labels":{"env":"prod"}})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::string secret = str(r.json, "token");
  EXPECT_EQ(secret.rfind("mst_enroll_", 0), 0u);
  EXPECT_FALSE(str(r.json, "expires_at").empty());
  EXPECT_EQ(r.json.as_object().at("uses").as_int64(), 2);
  auto credential = plane_->enrollment().enroll(EnrollRequest{.token = secret, .agent_id = "db-1"});
  ASSERT_TRUE(credential.ok()) << credential.status();
  Reply host = call("GET", "/api/v1/hosts/db-1");
  ASSERT_EQ(host.status, 200);
  EXPECT_EQ(str(host.json.as_object().at("labels"), "env"), "prod");
  EXPECT_EQ(call("POST", "/api/v1/tokens", R"({"kind":"enroll","uses":"two"})").status, 400);
}

TEST_F(HttpApiTest, RequestsAreCountedByRouteAndStatus) {
  call("GET", "/api/v1/hosts", "", {}, false);
  call("GET", "/api/v1/hosts");
  call("GET", "/api/v1/hosts");
  std::map<std::pair<std::string, int>, uint64_t> counts;
  for (const auto& c : server_->requestCounts()) counts[{c.route, c.status}] = c.count;
  EXPECT_EQ((counts[{"GET /api/v1/hosts", 200}]), 2u);
  EXPECT_EQ((counts[{"GET /api/v1/hosts", 401}]), 1u);
}

// Secret environment values are stored and sent to the agent, never returned: not by the
// create reply, a read, a listing, a run or a cancel.
TEST_F(HttpApiTest, SecretEnvValuesAreNeverReturned) {
  enrollHost("web-1");
  const std::string secret = "s3cr3t-value-0xC0FFEE";
  json::object created = createCommand(
      "web-1", R"(,"env":{"PLAIN":"p"},"secret_env":{"DB_PASSWORD":")" + secret + R"("})");
  std::string run_id = str(created, "run_id");
  std::string id = str(created.at("commands").as_array()[0], "id");
  std::vector<std::string> bodies = {json::serialize(created)};
  for (const std::string& path :
       std::vector<std::string>{"/api/v1/commands/" + id, "/api/v1/commands?host=web-1",
                                "/api/v1/runs/" + run_id, "/api/v1/commands/" + id + "/output"}) {
    Reply r = call("GET", path);
    EXPECT_EQ(r.status, 200) << path;
    bodies.push_back(r.body);
  }
  Reply got = call("GET", "/api/v1/commands/" + id);
  auto& names = got.json.as_object().at("secret_env").as_array();
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0].as_string(), "DB_PASSWORD");
  bodies.push_back(call("POST", "/api/v1/commands/" + id + "/cancel").body);
  for (const auto& body : bodies) EXPECT_EQ(body.find(secret), std::string::npos) << body;
  // Stored, for the agent.
  auto stored = plane_->commands().get(id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->exec.secret_env.at("DB_PASSWORD"), secret);
  // A name in both env and secret_env is refused.
  Reply both =
      call("POST", "/api/v1/commands",
           R"({"hosts":["web-1"],"argv":["true"],"env":{"K":"a"},"secret_env":{"K":"b"}})");
  EXPECT_EQ(both.status, 400) << both.body;
  EXPECT_EQ(both.body.find("\"b\""), std::string::npos);
}

}  // namespace
}  // namespace muster::server::http

namespace muster::server::http {
namespace {

TEST_F(HttpApiTest, ArtifactsAreListedShownAndServedWithRanges) {
  model::Artifact a = storeArtifact("0123456789abcdef", "fw.bin");
  model::Artifact empty = storeArtifact("", "empty.txt");
  Reply list = call("GET", "/api/v1/artifacts?limit=1");
  ASSERT_EQ(list.status, 200) << list.body;
  ASSERT_EQ(list.json.at("artifacts").as_array().size(), 1u);
  EXPECT_EQ(list.json.at("artifacts").as_array()[0].at("id").as_string(), empty.id);  // newest
  EXPECT_EQ(list.json.at("next_before").as_string(), empty.id);
  EXPECT_EQ(call("GET", "/api/v1/artifacts/" + a.id).json.at("sha256").as_string(), a.sha256);
  EXPECT_EQ(call("GET", "/api/v1/artifacts/" + a.id + "/content").body, "0123456789abcdef");
  for (auto [range, want] : {std::pair{"bytes=2-4", "234"}, std::pair{"bytes=14-", "ef"},
                             std::pair{"bytes=-3", "def"}, std::pair{"bytes=10-999", "abcdef"}}) {
    Reply part =
        call("GET", "/api/v1/artifacts/" + a.id + "/content", "", {std::string("Range: ") + range});
    EXPECT_EQ(part.status, 206) << range;
    EXPECT_EQ(part.body, want) << range;
  }
  for (const char* bad : {"bytes=16-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=x-"}) {
    EXPECT_EQ(
        call("GET", "/api/v1/artifacts/" + a.id + "/content", "", {std::string("Range: ") + bad})
            .status,
        416)
        << bad;
  }
  EXPECT_EQ(
      call("GET", "/api/v1/artifacts/" + empty.id + "/content", "", {"Range: bytes=-5"}).status,
      416);
  EXPECT_EQ(call("GET", "/api/v1/artifacts/" + empty.id + "/content").status, 200);
  // Viewers see what is stored, not its bytes; unknown and dot ids are refused.
  std::string viewer = apiToken(Role::kViewer);
  EXPECT_EQ(callAs(viewer, "GET", "/api/v1/artifacts/" + a.id).status, 200);
  EXPECT_EQ(callAs(viewer, "GET", "/api/v1/artifacts/" + a.id + "/content").status, 403);
  EXPECT_EQ(call("GET", "/api/v1/artifacts/01JNOPE").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/artifacts/%2e%2e/content").status, 400);
  EXPECT_EQ(call("GET", "/api/v1/artifacts?purpose=nonsense").status, 400);
}

}  // namespace
}  // namespace muster::server::http
