// Untrusted numbers and ids over HTTP: durations and *_ms fields out of range, huge query
// parameters and offsets, "." and ".." (plain or percent-encoded) as ids. Each is a 400 with
// a JSON error naming the field, and nothing is stored.
#include "http_api_fixture.h"

namespace muster::server::http {
namespace {

class HttpInputTest : public HttpApiTest {
 protected:
  Reply createWith(const std::string& extra) {
    return call("POST", "/api/v1/commands", R"({"hosts":["web-1"],"argv":["true"],)" + extra + "}");
  }
};

TEST_F(HttpInputTest, CommandDurationsOutOfRangeAre400NamingFieldValueAndRange) {
  enrollHost("web-1");
  struct Case {
    std::string body;
    std::string field;
    int64_t max;
  };
  const int64_t kWeek = 7 * 86'400'000LL, kHour = 3'600'000LL, kYear = 365 * 86'400'000LL;
  std::vector<Case> cases = {
      {R"("timeout": "9999999999999h")", "timeout", kWeek},
      {R"("timeout": "999999999999d")", "timeout", kWeek},  // overflowed int64 before
      {R"("timeout": "99999999999999999999999ms")", "timeout", kWeek},
      {R"("timeout": "8d")", "timeout", kWeek},
      {R"("timeout_ms": 604800001)", "timeout_ms", kWeek},
      {R"("timeout_ms": 4294967296)", "timeout_ms", kWeek},  // would wrap to 0 as uint32
      {R"("timeout_ms": 9223372036854775807)", "timeout_ms", kWeek},
      {R"("timeout_ms": 18446744073709551615)", "timeout_ms", kWeek},
      {R"("timeout_ms": 1e300)", "timeout_ms", kWeek},
      {R"("timeout_ms": -1)", "timeout_ms", kWeek},
      {R"("kill_grace": "2h")", "kill_grace", kHour},
      {R"("kill_grace_ms": 3600001)", "kill_grace_ms", kHour},
      {R"("expire": "366d")", "expire", kYear},
      {R"("expire_ms": 9223372036854775807)", "expire_ms", kYear},
  };
  for (const auto& c : cases) {
    Reply r = createWith(c.body);
    EXPECT_EQ(r.status, 400) << c.body << ": " << r.body;
    ASSERT_TRUE(r.json.is_object()) << c.body << ": " << r.body;
    const auto& error = r.json.as_object().at("error").as_object();
    EXPECT_EQ(error.at("code").as_string(), "invalid_argument") << c.body;
    ASSERT_TRUE(error.contains("field")) << c.body << ": " << r.body;
    EXPECT_EQ(error.at("field").as_string(), c.field) << c.body;
    EXPECT_EQ(error.at("min").as_int64(), 0) << c.body;
    EXPECT_EQ(error.at("max").as_int64(), c.max) << c.body;
    std::string message(error.at("message").as_string());
    EXPECT_NE(message.find("\"" + c.field + "\""), std::string::npos) << message;
    EXPECT_NE(message.find("allowed 0 to"), std::string::npos) << message;
  }
  EXPECT_EQ(commandCount(), 0u);

  // The ceilings themselves are fine, and kept exactly.
  Reply week = createWith(R"("timeout": "7d", "kill_grace": "1h", "expire": "365d")");
  ASSERT_EQ(week.status, 201) << week.body;
  EXPECT_EQ(week.json.at("commands").as_array()[0].at("timeout_ms").as_int64(), kWeek);
}

TEST_F(HttpInputTest, TokenTtlOutOfRangeIs400) {
  for (std::string body :
       {R"({"kind":"enroll","ttl":"3651d"})", R"({"kind":"enroll","ttl_ms":9223372036854775807})",
        R"({"kind":"api","role":"viewer","ttl":"99999999999999d"})",
        R"({"kind":"api","role":"viewer","ttl_ms":-5})"}) {
    Reply r = call("POST", "/api/v1/tokens", body);
    EXPECT_EQ(r.status, 400) << body << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << body;
    EXPECT_NE(errorMessage(r).find("ttl"), std::string::npos) << r.body;
  }
  Reply tokens = call("GET", "/api/v1/tokens");
  ASSERT_EQ(tokens.status, 200);
  EXPECT_TRUE(tokens.json.at("enroll").as_array().empty());
  EXPECT_EQ(tokens.json.at("api").as_array().size(), 1u);  // the admin token only
}

TEST_F(HttpInputTest, QueryNumbersOutOfRangeAre400) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  for (const std::string& path : std::vector<std::string>{
           "/api/v1/hosts?limit=99999999999999999999", "/api/v1/hosts?limit=0",
           "/api/v1/commands?limit=-1", "/api/v1/commands?limit=1001",
           "/api/v1/commands/" + id + "/output?follow=1&stdout_offset=18446744073709551616",
           "/api/v1/commands/" + id + "/output?follow=1&stdout_offset=-1",
           "/api/v1/commands/" + id + "/output?follow=1&stderr_offset=9007199254740993",
           "/api/v1/commands/" + id + "/output?stdout_offset=5"}) {
    Reply r = call("GET", path);
    EXPECT_EQ(r.status, 400) << path << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << path;
  }
  Reply bad_id =
      call("GET", "/api/v1/commands/" + id + "/output?follow=1", "", {"Last-Event-ID: 12;x"});
  EXPECT_EQ(bad_id.status, 400) << bad_id.body;
  EXPECT_NE(errorMessage(bad_id).find("Last-Event-ID"), std::string::npos) << bad_id.body;
}

TEST_F(HttpInputTest, DotAndDotDotAreNeverIds) {
  enrollHost("web-1");
  std::string id = str(createCommand("web-1").at("commands").as_array()[0], "id");
  ASSERT_EQ(call("GET", "/api/v1/hosts/web-1").status, 200);
  for (auto [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/v1/hosts/.."},
           {"GET", "/api/v1/hosts/."},
           {"GET", "/api/v1/hosts/%2e%2e"},
           {"GET", "/api/v1/hosts/%2E%2e"},
           {"GET", "/api/v1/hosts/..%2F..%2Ftokens"},
           {"DELETE", "/api/v1/hosts/.."},
           {"DELETE", "/api/v1/hosts/%2e%2e"},
           {"PUT", "/api/v1/hosts/../labels"},
           {"GET", "/api/v1/commands/.."},
           {"GET", "/api/v1/commands/%2e%2e/output"},
           {"POST", "/api/v1/commands/../cancel"},
           {"GET", "/api/v1/runs/%2e%2e"},
           {"POST", "/api/v1/runs/../cancel"},
           {"DELETE", "/api/v1/tokens/.."},
           {"DELETE", "/api/v1/tokens/%2e"},
           {"GET", "/api/v1/commands?host=.."},
           {"GET", "/api/v1/commands?run=%2e%2e"},
           {"GET", "/api/v1/commands?cursor=.."},
           {"GET", "/api/v1/hosts?cursor=%2e%2e"},
       }) {
    Reply r = call(method, path, method == "PUT" ? R"({"set":{"a":"b"}})" : "");
    EXPECT_EQ(r.status, 400) << method << " " << path << ": " << r.body;
    EXPECT_EQ(errorCode(r), "invalid_argument") << method << " " << path;
  }
  // Dot segments are not resolved either: this is not GET /api/v1/tokens.
  Reply escaped = call("GET", "/api/v1/hosts/../tokens");
  EXPECT_EQ(escaped.status, 404) << escaped.body;
  EXPECT_EQ(escaped.json.as_object().count("api"), 0u);
  // Nothing was touched.
  Reply host = call("GET", "/api/v1/hosts/web-1");
  ASSERT_EQ(host.status, 200);
  EXPECT_NE(str(host.json, "status"), "revoked");
  EXPECT_EQ(str(call("GET", "/api/v1/commands/" + id).json, "state"), "queued");
}

}  // namespace
}  // namespace muster::server::http
