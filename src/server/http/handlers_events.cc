// GET /api/v1/events: the audit log, filtered and paged newest first, or followed live.
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/duration.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {
namespace {

boost::json::value orNull(const std::string& s) {
  if (s.empty()) return nullptr;
  return boost::json::value(s);
}

absl::Status paramError(std::string_view key, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("query parameter ", toAbsl(key), ": ", toAbsl(message)));
}

// "link", "api.token", "link.refused": lower-case words joined by dots.
bool isValidKind(std::string_view kind) {
  if (kind.empty() || kind.size() > 64 || kind.front() == '.' || kind.back() == '.') return false;
  char prev = 0;
  for (char c : kind) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

// An RFC 3339 time, or a duration back from now ("1h": the last hour).
absl::StatusOr<int64_t> parseTimeParam(std::string_view key, std::string_view text,
                                       int64_t now_ms) {
  if (!text.empty() && text.find('T') == std::string_view::npos) {
    auto ago = common::parseDurationMs(text);
    if (ago.ok()) return now_ms - *ago;
  }
  auto at = parseRfc3339Ms(text);
  if (at.ok()) return *at;
  return paramError(key, absl::StrCat("'", toAbsl(text.substr(0, 40)),
                                      "' is neither a time like 2026-11-23T20:00:00Z nor a "
                                      "duration back from now like 30m, 24h or 7d"));
}

absl::Status readFilters(const Context& ctx, model::EventQuery* q) {
  if (const std::string* kind = ctx.param("kind"); kind && !kind->empty()) {
    if (!isValidKind(*kind)) {
      return paramError("kind", absl::StrCat("invalid kind '", kind->substr(0, 64),
                                             "': use a kind like link.refused or a family like "
                                             "link or api.token (docs/api.md lists them)"));
    }
    q->kind = *kind;
  }
  if (const std::string* host = ctx.param("host"); host && !host->empty()) {
    if (auto st = checkId("host", *host); !st.ok()) return paramError("host", toStd(st.message()));
    q->host_id = *host;
  }
  if (const std::string* actor = ctx.param("actor"); actor && !actor->empty()) {
    bool printable = actor->size() <= 128;
    for (unsigned char c : *actor) printable = printable && c >= 0x20 && c != 0x7f;
    if (!printable) {
      return paramError("actor",
                        "an actor is a token name or an agent id: at most 128 "
                        "printable characters");
    }
    q->actor = *actor;
  }
  const int64_t now = ctx.plane.clock().nowMs();
  for (auto [key, out] : {std::pair{"since", &q->since_ms}, std::pair{"until", &q->until_ms}}) {
    const std::string* text = ctx.param(key);
    if (!text || text->empty()) continue;
    auto at = parseTimeParam(key, *text, now);
    if (!at.ok()) return at.status();
    *out = std::max<int64_t>(*at, 1);
  }
  if (q->since_ms > 0 && q->until_ms > 0 && q->until_ms <= q->since_ms) {
    return absl::InvalidArgumentError("query parameters: until must be after since");
  }
  if (const std::string* cursor = ctx.param("cursor"); cursor && !cursor->empty()) {
    if (auto st = checkId("event", *cursor); !st.ok())
      return paramError("cursor", toStd(st.message()));
    q->before_id = *cursor;
  }
  return absl::OkStatus();
}

int digits(std::string_view s, size_t pos, size_t n, bool* ok) {
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (i >= s.size() || !absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) {
      *ok = false;
      return 0;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

absl::StatusOr<int64_t> parseRfc3339Ms(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fff...](Z|+hh:mm|-hh:mm)
  bool ok = s.size() >= 20 && s.size() <= 40 && s[4] == '-' && s[7] == '-' &&
            (s[10] == 'T' || s[10] == 't') && s[13] == ':' && s[16] == ':';
  std::tm tm{};
  tm.tm_year = digits(s, 0, 4, &ok) - 1900;
  tm.tm_mon = digits(s, 5, 2, &ok) - 1;
  tm.tm_mday = digits(s, 8, 2, &ok);
  tm.tm_hour = digits(s, 11, 2, &ok);
  tm.tm_min = digits(s, 14, 2, &ok);
  tm.tm_sec = digits(s, 17, 2, &ok);
  size_t pos = 19;
  int64_t millis = 0;
  if (ok && pos < s.size() && s[pos] == '.') {
    size_t start = ++pos;
    while (pos < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[pos]))) {
      if (pos - start < 3) millis = millis * 10 + (s[pos] - '0');
      ++pos;
    }
    if (pos == start) ok = false;
    for (size_t n = pos - start; n < 3; ++n) millis *= 10;
  }
  int64_t offset_min = 0;
  if (ok && pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z') && pos + 1 == s.size()) {
  } else if (ok && pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    offset_min = digits(s, pos + 1, 2, &ok) * 60 + digits(s, pos + 4, 2, &ok);
    if (s[pos] == '-') offset_min = -offset_min;
  } else {
    ok = false;
  }
  ok = ok && tm.tm_mon >= 0 && tm.tm_mon < 12 && tm.tm_mday >= 1 && tm.tm_mday <= 31 &&
       tm.tm_hour < 24 && tm.tm_min < 60 && tm.tm_sec <= 60 && tm.tm_year >= 70;
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", toAbsl(s.substr(0, 40)), "' is not an RFC 3339 time"));
  }
  const int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_min * 60;
  return secs * 1000 + millis;
}

boost::json::object eventJson(const model::Event& e) {
  boost::json::object o;
  o["id"] = e.id;
  o["time"] = rfc3339Ms(e.at_ms);
  o["time_ms"] = e.at_ms;
  o["kind"] = e.kind;
  o["actor"] = orNull(e.actor);
  o["actor_id"] = orNull(e.actor_id);
  o["source"] = orNull(e.source);
  o["target"] = orNull(e.target);
  o["host"] = orNull(e.host_id);
  o["result"] = e.result;
  boost::json::object detail;
  for (const auto& [k, v] : e.detail) detail[k] = v;
  o["detail"] = std::move(detail);
  return o;
}

ApiReply listEvents(Context& ctx, bool follow) {
  model::EventQuery query;
  if (auto st = readFilters(ctx, &query); !st.ok()) return errorReply(st);
  if (follow) {
    if (!query.before_id.empty()) {
      return errorReply(absl::InvalidArgumentError(
          "query parameter cursor pages back through the log; an event stream resumes with "
          "Last-Event-ID (or ?after=ID) instead"));
    }
    // Last-Event-ID (what an EventSource sends when it reconnects) wins over ?after=.
    std::string after = ctx.request.last_event_id;
    if (after.empty()) {
      if (const std::string* a = ctx.param("after")) after = *a;
    }
    if (!after.empty()) {
      if (auto st = checkId("event", after); !st.ok()) {
        return errorReply(absl::InvalidArgumentError(
            absl::StrCat("Last-Event-ID (or after): ", st.message(),
                         "; send back the id of the last event received")));
      }
    }
    query.after_id = after;
    ApiReply reply;
    reply.follow_events = EventFollowSpec{.query = std::move(query)};
    return reply;
  }
  if (ctx.param("after")) {
    return errorReply(absl::InvalidArgumentError(
        "query parameter after resumes an event stream: add follow=1 (pages use cursor)"));
  }
  auto limit = limitParam(ctx, 100, 1000);
  if (!limit.ok()) return errorReply(limit.status());
  query.limit = *limit + 1;  // one more tells whether there is a next page
  auto page = ctx.plane.queries().events(query);
  if (!page.ok()) return errorReply(page.status());
  bool more = static_cast<int>(page->size()) > *limit;
  if (more) page->resize(*limit);
  boost::json::array events;
  events.reserve(page->size());
  for (const auto& e : *page) events.push_back(eventJson(e));
  boost::json::object body;
  body["events"] = std::move(events);
  if (more && !page->empty()) {
    body["next_cursor"] = page->back().id;
  } else {
    body["next_cursor"] = nullptr;
  }
  return jsonReply(200, body);
}

}  // namespace muster::server::http
