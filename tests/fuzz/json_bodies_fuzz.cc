// Fuzz target: every JSON request body of the REST API (runs, host labels, tokens) through
// its strict reader in api_json, and the error reply each refusal becomes. The first byte
// picks the reader.
#include <boost/json/parse.hpp>

#include "model/selector.h"
#include "server/http/api_json.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
namespace json = boost::json;
using namespace muster::server::http;

// A refusal must reach the client as the API's JSON error shape, whatever bytes caused it.
void checkRefusal(const absl::Status& status) {
  MUSTER_FUZZ_CHECK(!status.ok());
  MUSTER_FUZZ_CHECK(absl::IsInvalidArgument(status));
  ApiReply reply = errorReply(status);
  MUSTER_FUZZ_CHECK(reply.status == 400 || reply.status == 422);
  boost::system::error_code ec;
  json::value body = json::parse(reply.body, ec);
  MUSTER_FUZZ_CHECK(!ec);  // valid JSON, strings valid UTF-8
  const json::value* error = body.as_object().if_contains("error");
  MUSTER_FUZZ_CHECK(error && error->is_object());
  MUSTER_FUZZ_CHECK(error->as_object().at("message").is_string());
}

void createRun(std::string_view body, uint8_t flags) {
  const std::string_view kHeaders[] = {"", "key-1", "k"};
  std::string_view header = kHeaders[flags % 3];
  auto run = parseCreateRunBody(body, header, "fuzz");
  if (!run.ok()) return checkRefusal(run.status());
  MUSTER_FUZZ_CHECK(run->host_ids.empty() || run->selector.empty());
  MUSTER_FUZZ_CHECK(run->exec.argv.empty() || run->exec.script.empty());
  MUSTER_FUZZ_CHECK(run->exec.timeout_ms >= 0 && run->exec.kill_grace_ms >= 0);
  MUSTER_FUZZ_CHECK(run->expire_in_ms >= 0);
  if (!header.empty()) MUSTER_FUZZ_CHECK(run->idempotency_key == header);
  MUSTER_FUZZ_CHECK(run->created_by == "fuzz");
  if (!run->selector.empty()) {
    std::string error;
    muster::model::Selector::parse(run->selector, &error);  // what the core does next
  }
}

void labels(std::string_view body) {
  auto change = parseLabelBody(body);
  if (!change.ok()) return checkRefusal(change.status());
  for (const auto& key : change->remove) MUSTER_FUZZ_CHECK(change->set.count(key) == 0);
}

void token(std::string_view body) {
  auto request = parseTokenBody(body);
  if (!request.ok()) return checkRefusal(request.status());
  MUSTER_FUZZ_CHECK(request->ttl_ms >= 0);
  if (request->kind == TokenRequest::Kind::kApi) {
    MUSTER_FUZZ_CHECK(request->labels.empty() && request->uses == 1);
  } else {
    MUSTER_FUZZ_CHECK(request->name.empty() && request->role == muster::server::Role::kViewer);
  }
}

// The field accessors on their own, each key read as the type its length picks.
void fields(std::string_view body) {
  auto object = parseJsonObject(body);
  if (!object.ok()) return checkRefusal(object.status());
  FieldReader reader(*object, "fuzz request");
  for (const auto& kv : *object) {
    std::string key(kv.key());
    std::string s;
    int64_t i = 0;
    bool b = false;
    std::vector<std::string> list;
    muster::model::StringMap map;
    absl::Status st;
    switch (key.size() % 7) {
      case 0: st = reader.optString(key, &s); break;
      case 1: st = reader.optInt(key, &i); break;
      case 2: st = reader.optBool(key, &b); break;
      case 3: st = reader.optStringList(key, &list); break;
      case 4: st = reader.optStringMap(key, &map); break;
      case 5:
        st = reader.optDuration(key, key + "_ms", &i);
        if (st.ok()) MUSTER_FUZZ_CHECK(i >= 0);
        break;
      default: reader.allow(key); break;
    }
    if (!st.ok()) checkRefusal(st);
  }
  if (auto st = reader.finish(); !st.ok()) checkRefusal(st);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  muster::fuzz::FuzzInput in(data, size);
  uint8_t which = in.byte();
  std::string_view body = in.rest();
  switch (which % 4) {
    case 0: createRun(body, which / 4); break;
    case 1: labels(body); break;
    case 2: token(body); break;
    default: fields(body); break;
  }
  return 0;
}
