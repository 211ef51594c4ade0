// Fuzz target: what the CLI makes of a server's reply: an error body turned into a Status
// (httpError, serverErrorCode, the hint), and a JSON record shown with the presentation
// helpers (field, intField, outcomeText, ago, humanBytes, printJson) as the commands do.
#include <boost/json/parse.hpp>
#include <sstream>

#include "cli/command_view.h"
#include "cli/format.h"
#include "cli/http_client.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
namespace json = boost::json;
using namespace muster::cli;

constexpr int64_t kNowMs = 1'700'000'000'000;

void showRecord(const json::value& v) {
  (void)outcomeText(v);
  (void)exitText(v);
  (void)commandText(v);
  (void)succeeded(v);
  for (const char* key : {"id", "state", "status", "host_id", "name", "role", "kind"}) {
    (void)field(v, key);
  }
  for (const char* key : {"last_seen_ms", "created_at_ms", "enrolled_at_ms"}) {
    (void)ago(intField(v, key), kNowMs);
  }
  for (const char* key : {"stdout_bytes", "mem_total_bytes", "disk_free_bytes"}) {
    (void)humanBytes(static_cast<uint64_t>(intField(v, key)));
  }
  if (const json::value* metrics = member(v, "metrics")) (void)doubleField(*metrics, "load1");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  muster::fuzz::FuzzInput in(data, size);
  static const long kStatuses[] = {400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 504, 302};
  long status = kStatuses[in.byte() % (sizeof kStatuses / sizeof kStatuses[0])];
  std::string body(in.rest());

  absl::Status error = httpError(status, body);
  MUSTER_FUZZ_CHECK(!error.ok());
  (void)serverErrorCode(error);

  boost::system::error_code ec;
  json::value value = json::parse(body, ec);
  if (ec) return 0;
  showRecord(value);
  // Listings: {"hosts": [...]}, {"commands": [...]}, {"enroll": [...], "api": [...]}.
  if (value.is_object()) {
    for (const auto& kv : value.as_object()) {
      if (!kv.value().is_array()) continue;
      for (const auto& item : kv.value().as_array()) showRecord(item);
    }
  }
  std::ostringstream out;
  printJson(out, value);
  return 0;
}
