// The audit log over HTTP: every mutating route leaves an event (a route added without one
// fails here), filters and pages, bad filters, the admin-only read, and the event stream
// resuming with Last-Event-ID.
#include "http_api_fixture.h"
#include "server/http/api.h"

namespace muster::server::http {
namespace {

class HttpAuditTest : public HttpApiTest {
 protected:
  // Newest first.
  json::array events(const std::string& query = "") {
    EXPECT_TRUE(store_->flush().ok());
    Reply r = call("GET", "/api/v1/events?limit=1000" + query);
    EXPECT_EQ(r.status, 200) << r.body;
    if (!r.json.is_object()) return {};
    return r.json.as_object().at("events").as_array();
  }
  // The newest event of `kind`, or null.
  json::value newest(const std::string& kind) {
    for (const auto& e : events("&kind=" + kind)) return e;
    return nullptr;
  }
};

struct MutatingCall {
  Route route;
  std::string method;
  std::string path;  // {cmd}, {run}, {token} are filled in
  std::string body;
  std::string kind;
  long status;
};

TEST_F(HttpAuditTest, EveryMutatingRouteLeavesAnEvent) {
  enrollHost("web-1");
  enrollHost("web-2");
  json::object created = createCommand("web-1");
  std::string cmd = str(created.at("commands").as_array()[0], "id");
  std::string run = str(createCommand("web-2"), "run_id");
  std::string token_id;
  apiToken(Role::kViewer, &token_id);
  std::string artifact = storeArtifact("firmware").id;

  std::vector<MutatingCall> calls = {
      {Route::kCreateCommands, "POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["true"]})",
       "api.command.create", 201},
      {Route::kCancelCommand, "POST", "/api/v1/commands/{cmd}/cancel", "", "api.command.cancel",
       200},
      {Route::kCancelRun, "POST", "/api/v1/runs/{run}/cancel", "", "api.run.cancel", 200},
      {Route::kSetHostLabels, "PATCH", "/api/v1/hosts/web-1/labels", R"({"set":{"tier":"gold"}})",
       "api.host.labels", 200},
      {Route::kCreateToken, "POST", "/api/v1/tokens", R"({"kind":"enroll"})", "api.token.create",
       201},
      {Route::kRevokeToken, "DELETE", "/api/v1/tokens/{token}", "", "api.token.delete", 200},
      {Route::kDeleteHost, "DELETE", "/api/v1/hosts/web-2", "", "api.host.delete", 200},
      {Route::kPinArtifact, "POST", "/api/v1/artifacts/{artifact}/pin", "", "api.artifact.pin",
       200},
      {Route::kUnpinArtifact, "POST", "/api/v1/artifacts/{artifact}/unpin", "",
       "api.artifact.unpin", 200},
      {Route::kDeleteArtifact, "DELETE", "/api/v1/artifacts/{artifact}", "", "api.artifact.delete",
       200},
  };
  // Every route whose name is a mutating method must be in the table above.
  std::set<Route> covered;
  for (const auto& c : calls) covered.insert(c.route);
  for (int i = 0; i < static_cast<int>(Route::kCount); ++i) {
    auto route = static_cast<Route>(i);
    std::string name(routeName(route));
    bool mutating = name.rfind("POST ", 0) == 0 || name.rfind("PUT ", 0) == 0 ||
                    name.rfind("PATCH ", 0) == 0 || name.rfind("DELETE ", 0) == 0;
    if (mutating) {
      EXPECT_TRUE(covered.count(route)) << name << " is a mutating route without an audit test";
    }
  }

  for (const auto& c : calls) {
    std::string path = c.path;
    for (auto [key, value] :
         {std::pair{std::string("{cmd}"), cmd}, std::pair{std::string("{run}"), run},
          std::pair{std::string("{token}"), token_id},
          std::pair{std::string("{artifact}"), artifact}}) {
      if (size_t at = path.find(key); at != std::string::npos) path.replace(at, key.size(), value);
    }
    Reply r = call(c.method, path, c.body);
    ASSERT_EQ(r.status, c.status) << c.method << " " << path << ": " << r.body;
    json::value e = newest(c.kind);
    ASSERT_TRUE(e.is_object()) << "no " << c.kind << " event after " << c.method << " " << path;
    EXPECT_EQ(str(e, "result"), std::to_string(c.status)) << c.kind;
    EXPECT_EQ(str(e, "actor"), "admin") << c.kind;
    EXPECT_FALSE(str(e, "actor_id").empty()) << c.kind;
    EXPECT_EQ(str(e, "source").rfind("127.0.0.1:", 0), 0u) << c.kind << ": " << str(e, "source");
    EXPECT_FALSE(str(e, "target").empty()) << c.kind;
  }
  // Targets and hosts where the path alone does not say it.
  EXPECT_EQ(str(newest("api.command.cancel"), "host"), "web-1");
  EXPECT_EQ(str(newest("api.host.delete"), "target"), "web-2");
  EXPECT_EQ(str(newest("link.revoked"), "actor"), "admin");  // decommission is a link event too
  json::value token_event = newest("api.token.create");
  EXPECT_EQ(str(token_event.as_object().at("detail"), "kind"), "enroll");
}

TEST_F(HttpAuditTest, RefusedCallsAreRecordedWithTheirStatus) {
  std::string viewer = apiToken(Role::kViewer);
  enrollHost("web-1");
  EXPECT_EQ(callAs(viewer, "DELETE", "/api/v1/hosts/web-1").status, 403);
  EXPECT_EQ(call("DELETE", "/api/v1/hosts/web-1", "", {}, false).status, 401);
  EXPECT_EQ(call("POST", "/api/v1/commands", R"({"hosts":["nope"],"argv":["true"]})").status, 404);
  EXPECT_EQ(call("POST", "/api/v1/hosts", "{}").status, 405);
  EXPECT_EQ(call("GET", "/api/v1/hosts").status, 200);  // reads are not audited

  auto deletes = events("&kind=api.host.delete");
  ASSERT_EQ(deletes.size(), 2u);
  EXPECT_EQ(str(deletes[0], "result"), "401");
  EXPECT_TRUE(deletes[0].as_object().at("actor").is_null());
  EXPECT_EQ(str(deletes[1], "result"), "403");
  EXPECT_EQ(str(deletes[1], "actor"), "viewer-user");
  EXPECT_NE(str(deletes[1].as_object().at("detail"), "error").find("needs admin"),
            std::string::npos);
  EXPECT_EQ(str(newest("api.command.create"), "result"), "404");
  json::value unknown = newest("api.unknown");
  ASSERT_TRUE(unknown.is_object());
  EXPECT_EQ(str(unknown, "result"), "405");
  EXPECT_EQ(str(unknown.as_object().at("detail"), "path"), "/hosts");
  for (const auto& e : events()) EXPECT_NE(str(e, "kind"), "api.host.list");
  EXPECT_EQ(events("&kind=api").size(), 4u);
}

TEST_F(HttpAuditTest, FiltersAndPagesNewestFirst) {
  enrollHost("web-1");
  enrollHost("web-2");
  for (int i = 0; i < 5; ++i) createCommand(i % 2 ? "web-1" : "web-2");
  ASSERT_EQ(call("POST", "/api/v1/tokens", R"({"kind":"api","role":"viewer","name":"bob"})").status,
            201);
  ASSERT_EQ(call("PATCH", "/api/v1/hosts/web-1/labels", R"({"set":{"a":"b"}})").status, 200);

  EXPECT_EQ(events("&kind=api.command.create").size(), 5u);
  EXPECT_EQ(events("&kind=api.command").size(), 5u);  // a family
  EXPECT_EQ(events("&kind=api").size(), 7u);
  EXPECT_EQ(events("&kind=api.comm").size(), 0u);  // not a family: no partial words
  EXPECT_EQ(events("&kind=link.enrolled").size(), 2u);
  // web-1: its enrollment, 2 single-host runs, the label change.
  EXPECT_EQ(events("&host=web-1").size(), 4u);
  EXPECT_EQ(events("&actor=admin").size(), 7u);
  EXPECT_EQ(events("&actor=web-2&kind=link").size(), 1u);
  EXPECT_EQ(events("&since=1h").size(), 9u);
  EXPECT_EQ(events("&until=2000-01-01T00:00:00Z").size(), 0u);
  EXPECT_EQ(events("&since=2000-01-01T00:00:00.000%2B01:00").size(), 9u);

  // Pages of 2, newest first, each id below the one before, nothing twice.
  std::vector<std::string> ids;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    Reply r = call("GET",
                   "/api/v1/events?kind=api&limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(r.status, 200) << r.body;
    for (const auto& e : r.json.as_object().at("events").as_array()) ids.push_back(str(e, "id"));
    const auto& next = r.json.as_object().at("next_cursor");
    if (next.is_null()) break;
    cursor = std::string(next.as_string());
  }
  ASSERT_EQ(ids.size(), 7u);
  EXPECT_TRUE(std::is_sorted(ids.rbegin(), ids.rend()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 7u);
}

TEST_F(HttpAuditTest, BadFiltersAre400WithAJsonError) {
  for (const char* query :
       {"kind=Link", "kind=link..refused", "kind=.link", "host=..", "host=a%2Fb", "since=yesterday",
        "until=2026-13-01T00:00:00Z", "since=1h&until=2h", "limit=0", "limit=1001", "cursor=..",
        "after=01J"}) {
    Reply r = call("GET", std::string("/api/v1/events?") + query);
    EXPECT_EQ(r.status, 400) << query << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << query;
    EXPECT_FALSE(errorMessage(r).empty()) << query;
  }
  Reply bad_resume = call("GET", "/api/v1/events?follow=1", "", {"Last-Event-ID: ../../x"});
  EXPECT_EQ(bad_resume.status, 400);
  EXPECT_EQ(errorCode(bad_resume), "invalid_argument");
}

TEST_F(HttpAuditTest, ReadingTheLogNeedsAdmin) {
  EXPECT_EQ(callAs(apiToken(Role::kViewer), "GET", "/api/v1/events").status, 403);
  Reply op = callAs(apiToken(Role::kOperator), "GET", "/api/v1/events?follow=1");
  EXPECT_EQ(op.status, 403);
  EXPECT_NE(errorMessage(op).find("reading the audit log needs admin"), std::string::npos)
      << errorMessage(op);
  EXPECT_EQ(call("GET", "/api/v1/events", "", {}, false).status, 401);
}

TEST_F(HttpAuditTest, FollowResumesAfterLastEventIdThenStreamsLive) {
  enrollHost("web-1");
  for (int i = 0; i < 4; ++i) createCommand("web-1");
  auto stored = events("&kind=api.command.create");  // newest first
  ASSERT_EQ(stored.size(), 4u);
  std::string resume_after = str(stored[2], "id");  // the second oldest

  SseClient follower(base_ + "/api/v1/events?kind=api.command", {"Last-Event-ID: " + resume_after});
  ASSERT_TRUE(waitFor(
      [&] { return follower.text().find("following the audit log") != std::string::npos; }));
  createCommand("web-1");                                                         // live
  ASSERT_EQ(call("POST", "/api/v1/tokens", R"({"kind":"enroll"})").status, 201);  // filtered out
  createCommand("web-1");
  ASSERT_TRUE(waitFor([&] {
    size_t n = 0;
    for (const auto& [name, data] : parseEvents(follower.text())) n += name == "audit";
    return n >= 4;
  }));
  std::vector<std::string> got;
  std::string text = follower.text();
  for (const auto& [name, data] : parseEvents(text)) {
    if (name == "audit") {
      EXPECT_EQ(str(data, "kind"), "api.command.create");
      got.push_back(str(data, "id"));
    }
  }
  ASSERT_EQ(got.size(), 4u) << text;
  EXPECT_EQ(got[0], str(stored[1], "id"));
  EXPECT_EQ(got[1], str(stored[0], "id"));
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  // Each event carries its id, what an EventSource sends back as Last-Event-ID.
  EXPECT_NE(text.find("id: " + got[3] + "\n"), std::string::npos);

  // Resuming from the last one sent: nothing old again, only what comes next.
  SseClient again(base_ + "/api/v1/events?kind=api.command", {"Last-Event-ID: " + got[3]});
  ASSERT_TRUE(
      waitFor([&] { return again.text().find("following the audit log") != std::string::npos; }));
  createCommand("web-1");
  ASSERT_TRUE(waitFor([&] { return again.text().find("event: audit") != std::string::npos; }));
  auto resumed = parseEvents(again.text());
  ASSERT_EQ(resumed.size(), 1u) << again.text();
  EXPECT_GT(str(resumed[0].second, "id"), got[3]);
}

}  // namespace
}  // namespace muster::server::http
