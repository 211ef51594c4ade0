// REST API over a real HttpServer: roles, API and enrollment tokens, host labels and
// decommission, label selectors, /metrics and readiness.
#include <sqlite3.h>

#include <regex>

#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

std::vector<std::string> hostIds(const Reply& r) {
  std::vector<std::string> ids;
  if (!r.json.is_object()) return ids;
  for (const auto& h : r.json.as_object().at("hosts").as_array()) {
    ids.emplace_back(h.as_object().at("id").as_string());
  }
  return ids;
}

std::vector<std::string> commandHosts(const Reply& r) {
  std::vector<std::string> ids;
  if (!r.json.is_object()) return ids;
  for (const auto& c : r.json.as_object().at("commands").as_array()) {
    ids.emplace_back(c.as_object().at("host_id").as_string());
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

class HttpAdminTest : public HttpApiTest {
 protected:
  void label(const std::string& id, const std::string& set_json) {
    Reply r = call("PATCH", "/api/v1/hosts/" + id + "/labels", R"({"set":)" + set_json + "}");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  // Three offline hosts: web-1 (env=prod, role=web), db-1 (env=prod, role=db, canary),
  // web-2 (env=dev, role=web).
  void enrollLabelledFleet() {
    enrollHost("web-1");
    enrollHost("db-1");
    enrollHost("web-2");
    label("web-1", R"({"env":"prod","role":"web"})");
    label("db-1", R"({"env":"prod","role":"db","canary":"yes"})");
    label("web-2", R"({"env":"dev","role":"web"})");
  }
};

TEST_F(HttpAdminTest, ViewerOnlyReads) {
  enrollHost("web-1");
  std::string viewer = apiToken(Role::kViewer);
  EXPECT_EQ(callAs(viewer, "GET", "/api/v1/hosts").status, 200);
  EXPECT_EQ(callAs(viewer, "GET", "/api/v1/hosts/web-1").status, 200);
  EXPECT_EQ(callAs(viewer, "GET", "/api/v1/commands").status, 200);

  Reply run = callAs(viewer, "POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["true"]})");
  EXPECT_EQ(run.status, 403) << run.body;
  EXPECT_EQ(errorCode(run), "permission_denied");
  EXPECT_NE(errorMessage(run).find("role viewer"), std::string::npos) << run.body;
  EXPECT_NE(errorMessage(run).find("needs operator"), std::string::npos) << run.body;
  EXPECT_NE(errorMessage(run).find("muster token create --role operator"), std::string::npos);

  struct Case {
    const char* method;
    const char* path;
    const char* body;
    const char* needs;
  } cases[] = {
      {"POST", "/api/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ/cancel", "", "operator"},
      {"POST", "/api/v1/commands/01HZZZZZZZZZZZZZZZZZZZZZZZ/cancel", "", "operator"},
      {"POST", "/api/v1/tokens", R"({"kind":"enroll"})", "admin"},
      {"GET", "/api/v1/tokens", "", "admin"},
      {"DELETE", "/api/v1/tokens/01HZZZZZZZZZZZZZZZZZZZZZZZ", "", "admin"},
      {"PATCH", "/api/v1/hosts/web-1/labels", R"({"set":{"a":"b"}})", "admin"},
      {"DELETE", "/api/v1/hosts/web-1", "", "admin"},
  };
  for (const auto& c : cases) {
    Reply r = callAs(viewer, c.method, c.path, c.body);
    EXPECT_EQ(r.status, 403) << c.method << " " << c.path << ": " << r.body;
    EXPECT_NE(errorMessage(r).find(std::string("needs ") + c.needs), std::string::npos) << r.body;
  }
  // The method is checked before the role; nothing was stored.
  EXPECT_EQ(callAs(viewer, "PUT", "/api/v1/commands").status, 405);
  EXPECT_EQ(commandCount(), 0u);
  EXPECT_EQ(call("GET", "/api/v1/hosts/web-1").json.as_object().at("status").as_string(),
            "offline");
  EXPECT_TRUE(call("GET", "/api/v1/hosts/web-1").json.as_object().at("labels").as_object().empty());
}

TEST_F(HttpAdminTest, OperatorRunsAndCancelsButManagesNothing) {
  enrollHost("web-1");
  std::string op = apiToken(Role::kOperator);
  Reply run = callAs(op, "POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["true"]})");
  ASSERT_EQ(run.status, 201) << run.body;
  EXPECT_EQ(str(run.json.as_object().at("commands").as_array()[0], "created_by"), "operator-user");
  Reply cancel = callAs(op, "POST", "/api/v1/runs/" + str(run.json, "run_id") + "/cancel");
  EXPECT_EQ(cancel.status, 200) << cancel.body;

  Reply token = callAs(op, "POST", "/api/v1/tokens", R"({"kind":"api","role":"admin"})");
  EXPECT_EQ(token.status, 403);
  EXPECT_NE(errorMessage(token).find("role operator"), std::string::npos) << token.body;
  EXPECT_NE(errorMessage(token).find("needs admin"), std::string::npos) << token.body;
  EXPECT_EQ(callAs(op, "GET", "/api/v1/tokens").status, 403);
  EXPECT_EQ(callAs(op, "DELETE", "/api/v1/hosts/web-1").status, 403);
  EXPECT_EQ(callAs(op, "PUT", "/api/v1/hosts/web-1/labels", R"({"set":{"a":"b"}})").status, 403);
  auto tokens = plane_->auth().list();
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->size(), 2u);  // admin and operator: nothing was created
}

TEST_F(HttpAdminTest, ApiTokenLifecycle) {
  Reply created =
      call("POST", "/api/v1/tokens", R"({"kind":"api","role":"operator","name":"ci","ttl":"30d"})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string secret = str(created.json, "token");
  std::string id = str(created.json, "id");
  EXPECT_EQ(secret.rfind("mst_operator_", 0), 0u) << secret;
  EXPECT_EQ(str(created.json, "kind"), "api");
  EXPECT_EQ(str(created.json, "role"), "operator");
  EXPECT_EQ(str(created.json, "name"), "ci");
  EXPECT_EQ(str(created.json, "created_by"), "admin");
  EXPECT_EQ(str(created.json, "state"), "active");
  EXPECT_FALSE(str(created.json, "expires_at").empty());

  enrollHost("web-1");
  Reply run = callAs(secret, "POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["true"]})");
  ASSERT_EQ(run.status, 201) << run.body;
  EXPECT_EQ(str(run.json.as_object().at("commands").as_array()[0], "created_by"), "ci");

  Reply enroll =
      call("POST", "/api/v1/tokens", R"({"kind":"enroll","uses":-1,"labels":{"a":"b"}})");
  ASSERT_EQ(enroll.status, 201);
  std::string enroll_id = str(enroll.json, "id");

  Reply listed = call("GET", "/api/v1/tokens");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.body.find(secret), std::string::npos);
  EXPECT_EQ(listed.body.find(str(enroll.json, "token")), std::string::npos);
  EXPECT_EQ(listed.body.find(kToken), std::string::npos);
  EXPECT_EQ(listed.body.find("hash"), std::string::npos);
  std::set<std::string> api_ids, enroll_ids;
  for (const auto& t : listed.json.as_object().at("api").as_array()) api_ids.insert(str(t, "id"));
  for (const auto& t : listed.json.as_object().at("enroll").as_array()) {
    enroll_ids.insert(str(t, "id"));
  }
  EXPECT_EQ(api_ids.size(), 2u);  // admin + ci
  EXPECT_TRUE(api_ids.count(id));
  EXPECT_TRUE(enroll_ids.count(enroll_id));

  Reply revoked = call("DELETE", "/api/v1/tokens/" + id);
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(str(revoked.json, "kind"), "api");
  Reply refused = callAs(secret, "GET", "/api/v1/hosts");
  EXPECT_EQ(refused.status, 401);
  EXPECT_NE(errorMessage(refused).find("revoked"), std::string::npos) << refused.body;

  Reply enroll_revoked = call("DELETE", "/api/v1/tokens/" + enroll_id);
  ASSERT_EQ(enroll_revoked.status, 200) << enroll_revoked.body;
  EXPECT_EQ(str(enroll_revoked.json, "kind"), "enroll");
  auto enrolled = plane_->enrollment().enroll(
      EnrollRequest{.token = std::string(str(enroll.json, "token")), .agent_id = "late-host"});
  EXPECT_TRUE(absl::IsPermissionDenied(enrolled.status())) << enrolled.status();

  Reply after = call("GET", "/api/v1/tokens");
  for (const auto& t : after.json.as_object().at("api").as_array()) {
    if (str(t, "id") == id) {
      EXPECT_EQ(str(t, "state"), "revoked");
    }
  }
  Reply unknown = call("DELETE", "/api/v1/tokens/01HZZZZZZZZZZZZZZZZZZZZZZZ");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(errorCode(unknown), "not_found");
}

TEST_F(HttpAdminTest, ExpiredApiTokenIs401) {
  Reply created = call("POST", "/api/v1/tokens", R"({"kind":"api","role":"viewer","ttl_ms":1})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string secret = str(created.json, "token");
  Reply refused;
  ASSERT_TRUE(waitFor([&] {
    refused = callAs(secret, "GET", "/api/v1/hosts");
    return refused.status == 401;
  }));
  EXPECT_NE(errorMessage(refused).find("expired"), std::string::npos) << refused.body;
}

TEST_F(HttpAdminTest, HostLabelsCanBeSetAndRemoved) {
  enrollHost("web-1");
  Reply set = call("PATCH", "/api/v1/hosts/web-1/labels", R"({"set":{"env":"prod","role":"web"}})");
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(str(set.json, "id"), "web-1");
  EXPECT_EQ(str(set.json.as_object().at("labels"), "role"), "web");
  Reply changed =
      call("PUT", "/api/v1/hosts/web-1/labels", R"({"set":{"tier":"gold"},"remove":["role"]})");
  ASSERT_EQ(changed.status, 200) << changed.body;
  auto labels = call("GET", "/api/v1/hosts/web-1").json.as_object().at("labels").as_object();
  EXPECT_EQ(labels.size(), 2u);
  EXPECT_EQ(str(labels, "env"), "prod");
  EXPECT_EQ(str(labels, "tier"), "gold");

  struct Case {
    const char* body;
    int status;
  } cases[] = {
      {"{}", 400},
      {"", 400},
      {R"({"set":{"a":1}})", 400},
      {R"({"set":["a"]})", 400},
      {R"({"remove":"a"})", 400},
      {R"({"set":{"bad key!":"x"}})", 400},
      {R"({"set":{"a":"b"},"remove":["a"]})", 400},
      {R"({"set":{"a":"b"},"add":{"c":"d"}})", 400},
  };
  for (const auto& c : cases) {
    Reply r = call("PATCH", "/api/v1/hosts/web-1/labels", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << ": " << r.body;
  }
  EXPECT_EQ(call("PATCH", "/api/v1/hosts/ghost/labels", R"({"set":{"a":"b"}})").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/hosts/web-1/labels").status, 405);
  EXPECT_EQ(call("GET", "/api/v1/hosts/web-1").json.as_object().at("labels").as_object().size(),
            2u);
}

TEST_F(HttpAdminTest, HostListFiltersBySelector) {
  enrollLabelledFleet();
  using V = std::vector<std::string>;
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?selector=env%3Dprod")), (V{"db-1", "web-1"}));
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?selector=env%3Dprod%2C!canary")), (V{"web-1"}));
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?selector=role%20in%20(web%2Cdb)%2Cenv!%3Ddev")),
            (V{"db-1", "web-1"}));
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?selector=canary")), (V{"db-1"}));
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?selector=role%3Dweb&status=offline")),
            (V{"web-1", "web-2"}));
  EXPECT_TRUE(hostIds(call("GET", "/api/v1/hosts?selector=role%3Dweb&status=online")).empty());

  // Pages of a filtered list.
  Reply first = call("GET", "/api/v1/hosts?selector=role%3Dweb&limit=1");
  EXPECT_EQ(hostIds(first), (V{"web-1"}));
  std::string cursor(first.json.as_object().at("next_cursor").as_string());
  Reply second = call("GET", "/api/v1/hosts?selector=role%3Dweb&limit=1&cursor=" + cursor);
  EXPECT_EQ(hostIds(second), (V{"web-2"}));
  EXPECT_TRUE(second.json.as_object().at("next_cursor").is_null());

  for (const char* bad : {"env%20in%20(", "%3Dprod", "env%3D%3D%3Dx", "a%20b%20c"}) {
    Reply r = call("GET", std::string("/api/v1/hosts?selector=") + bad);
    EXPECT_EQ(r.status, 422) << bad << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_selector") << bad;
  }
}

TEST_F(HttpAdminTest, CommandsTargetASelector) {
  enrollLabelledFleet();
  Reply run = call("POST", "/api/v1/commands", R"({"selector":"env=prod","argv":["true"]})");
  ASSERT_EQ(run.status, 201) << run.body;
  EXPECT_EQ(commandHosts(run), (std::vector<std::string>{"db-1", "web-1"}));
  Reply run2 =
      call("POST", "/api/v1/commands", R"({"selector":"role=web,!canary","script":"true"})");
  ASSERT_EQ(run2.status, 201) << run2.body;
  EXPECT_EQ(commandHosts(run2), (std::vector<std::string>{"web-1", "web-2"}));
  size_t before = commandCount();

  for (const char* body :
       {R"({"selector":"env=nowhere","argv":["true"]})",
        R"({"selector":"env in (","argv":["true"]})", R"({"selector":"","argv":["true"]})"}) {
    Reply r = call("POST", "/api/v1/commands", body);
    EXPECT_EQ(r.status, 422) << body << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_selector") << body;
  }
  EXPECT_EQ(commandCount(), before);
}

TEST_F(HttpAdminTest, DeleteHostDecommissionsIt) {
  auto token = plane_->enrollment().createToken(1, 0, {}, "test");
  ASSERT_TRUE(token.ok());
  auto credential =
      plane_->enrollment().enroll(EnrollRequest{.token = token->secret, .agent_id = "web-1"});
  ASSERT_TRUE(credential.ok());
  enrollHost("web-2");
  label("web-1", R"({"env":"prod"})");
  label("web-2", R"({"env":"prod"})");
  std::string queued = str(createCommand("web-1").at("commands").as_array()[0], "id");

  Reply removed = call("DELETE", "/api/v1/hosts/web-1");
  ASSERT_EQ(removed.status, 200) << removed.body;
  EXPECT_EQ(str(removed.json, "status"), "revoked");
  EXPECT_EQ(str(removed.json, "id"), "web-1");
  EXPECT_TRUE(absl::IsPermissionDenied(plane_->authenticate("web-1", *credential)));
  EXPECT_TRUE(waitFor(
      [&] { return str(call("GET", "/api/v1/commands/" + queued).json, "state") == "cancelled"; }));
  EXPECT_EQ(hostIds(call("GET", "/api/v1/hosts?status=revoked")),
            (std::vector<std::string>{"web-1"}));

  // A selector never targets a decommissioned host; naming it is refused.
  Reply run = call("POST", "/api/v1/commands", R"({"selector":"env=prod","argv":["true"]})");
  ASSERT_EQ(run.status, 201) << run.body;
  EXPECT_EQ(commandHosts(run), (std::vector<std::string>{"web-2"}));
  EXPECT_EQ(call("DELETE", "/api/v1/hosts/ghost").status, 404);
}

TEST_F(HttpAdminTest, MetricsArePrometheusText) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  createCommand("web-1");
  ASSERT_EQ(call("POST", "/api/v1/commands/" + id + "/cancel").status, 200);
  call("GET", "/api/v1/hosts");
  call("GET", "/api/v1/hosts", "", {}, false);

  Reply metrics = call("GET", "/metrics", "", {}, false);  // no token needed
  ASSERT_EQ(metrics.status, 200) << metrics.body;
  EXPECT_NE(metrics.header_blob.find("Content-Type: text/plain; version=0.0.4"), std::string::npos)
      << metrics.header_blob;
  const std::string& text = metrics.body;
  for (const char* line : {
           "muster_agents_connected 0\n",
           "muster_hosts{status=\"offline\"} 1\n",
           "muster_hosts{status=\"online\"} 0\n",
           "muster_hosts{status=\"revoked\"} 0\n",
           "muster_commands_open{state=\"queued\"} 1\n",
           "muster_command_results_total{state=\"cancelled\"} 1\n",
           "muster_command_results_total{state=\"succeeded\"} 0\n",
           "muster_commands_created_total 2\n",
           "muster_dispatch_to_result_seconds_bucket{le=\"+Inf\"} 0\n",
           "muster_dispatch_to_result_seconds_count 0\n",
           "muster_dispatch_to_result_seconds_sum 0\n",
           "# TYPE muster_dispatch_to_result_seconds histogram\n",
           "# TYPE muster_store_commit_seconds gauge\n",
           "# TYPE muster_store_batch_size gauge\n",
           "# TYPE muster_store_transactions_total counter\n",
           "# TYPE muster_http_requests_total counter\n",
           "muster_http_requests_total{route=\"GET /api/v1/hosts\",code=\"200\"} 1\n",
           "muster_http_requests_total{route=\"GET /api/v1/hosts\",code=\"401\"} 1\n",
           "muster_http_requests_total{route=\"POST /api/v1/commands\",code=\"201\"} 2\n",
           "muster_http_requests_total{route=\"POST /api/v1/commands/{id}/cancel\",code=\"200\"} "
           "1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "in:\n" << text;
  }
  // Every line is a comment or a well-formed sample.
  std::regex sample(
      R"re([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? (-?[0-9.e+-]+|\+Inf|NaN))re");
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ASSERT_NE(nl, std::string::npos) << "last line without newline";
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
  }
  EXPECT_GT(std::stoll(text.substr(text.find("\nmuster_store_transactions_total ") + 33)), 0);

  Reply second = call("GET", "/metrics", "", {}, false);
  EXPECT_NE(second.body.find("muster_http_requests_total{route=\"GET /metrics\",code=\"200\"} 1\n"),
            std::string::npos);
  EXPECT_EQ(call("POST", "/metrics", "", {}, false).status, 405);
}

TEST_F(HttpAdminTest, ReadyzIs503WhenTheStoreIsNotReady) {
  ASSERT_EQ(call("GET", "/readyz", "", {}, false).status, 200);
  // Another (newer) release migrated the database under us.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/muster.db").c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* error = nullptr;
  int rc = sqlite3_exec(db,
                        "INSERT INTO schema_migrations (version, description, applied_at_ms) "
                        "VALUES (999, 'from the future', 0)",
                        nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
  Reply ready = call("GET", "/readyz", "", {}, false);
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(errorCode(ready), "unavailable");
  EXPECT_NE(errorMessage(ready).find("schema version 999"), std::string::npos) << ready.body;
  EXPECT_EQ(call("GET", "/healthz", "", {}, false).status, 200);
}

}  // namespace
}  // namespace muster::server::http
