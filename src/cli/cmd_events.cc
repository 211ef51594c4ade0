// `muster events`: the audit log, newest first, or followed live (--follow).
#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <csignal>
#include <iostream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/format.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

std::atomic<bool> g_stop{false};
extern "C" void onEventsInterrupt(int) { g_stop = true; }

struct Options {
  std::string kind, host, actor, since, cursor;
  int limit = 50;
  bool follow = false;
  bool json = false;
};

std::string filters(const Options& o) {
  std::string q;
  for (auto [key, value] : {std::pair{"kind", &o.kind}, std::pair{"host", &o.host},
                            std::pair{"actor", &o.actor}, std::pair{"since", &o.since}}) {
    if (!value->empty()) absl::StrAppend(&q, "&", key, "=", urlEscape(*value));
  }
  return q;
}

// "k=v k=v" of the detail object, sorted as the server sends it.
std::string detailText(const json::value& e) {
  const json::value* detail = member(e, "detail");
  if (!detail || !detail->is_object()) return "";
  std::string out;
  for (const auto& [k, v] : detail->as_object()) {
    absl::StrAppend(&out, out.empty() ? "" : " ", std::string(k), "=", scalarText(v));
  }
  if (out.size() > 80) out = out.substr(0, 77) + "...";
  return out;
}

std::vector<std::string> row(const json::value& e) {
  std::string actor = field(e, "actor");
  return {field(e, "time"),   field(e, "kind"),   actor.empty() ? "-" : actor,
          field(e, "source"), field(e, "target"), field(e, "result"),
          detailText(e)};
}

const std::vector<std::string> kHeaders = {"TIME",   "KIND",   "ACTOR", "SOURCE",
                                           "TARGET", "RESULT", "DETAIL"};

void printOne(const json::value& e, bool as_json) {
  if (as_json) {
    std::cout << json::serialize(e) << "\n";
  } else {
    std::string line;
    for (const auto& cell : row(e)) absl::StrAppend(&line, line.empty() ? "" : "  ", cell);
    std::cout << line << "\n";
  }
  std::cout.flush();
}

int follow(const ClientConfig& config, const Options& o) {
  // The last few first (oldest of them first), then everything after the newest.
  HttpClient client(config);
  auto page = client.get(absl::StrCat("/api/v1/events?limit=", o.limit, filters(o)));
  if (!page.ok()) return reportError(page.status());
  std::string last_id;
  if (const json::value* events = member(*page, "events"); events && events->is_array()) {
    const auto& list = events->as_array();
    if (!list.empty()) last_id = field(list.front(), "id");
    for (auto it = list.rbegin(); it != list.rend(); ++it) printOne(*it, o.json);
  }
  auto previous = std::signal(SIGINT, onEventsInterrupt);
  EventFollower follower(config);
  int exit_status = kExitOk;
  while (!g_stop) {
    std::string path = absl::StrCat("/api/v1/events?follow=1", filters(o));
    if (!last_id.empty()) path += "&after=" + urlEscape(last_id);
    absl::Status server_error;
    auto results = follower.run(
        {path},
        [&](size_t, const SseEvent& event) {
          boost::system::error_code ec;
          json::value data = json::parse(event.data, ec);
          if (ec) return;
          if (event.event == "audit") {
            last_id = field(data, "id");
            printOne(data, o.json);
          } else if (event.event == "error") {
            const json::value* error = member(data, "error");
            server_error = absl::UnavailableError(error ? field(*error, "message") : event.data);
          }
        },
        g_stop);
    if (g_stop) break;
    absl::Status why = results.empty() ? absl::OkStatus() : results[0];
    if (!why.ok() && (absl::IsPermissionDenied(why) || absl::IsUnauthenticated(why) ||
                      absl::IsInvalidArgument(why))) {
      exit_status = reportError(why);
      break;
    }
    // The server restarted, dropped a slow reader or shut down: resume where we stopped.
    std::cerr << "muster: event stream ended ("
              << (!server_error.ok() ? server_error.message() : why.message())
              << "); resuming in 1s\n";
    for (int i = 0; i < 10 && !g_stop; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::signal(SIGINT, previous);
  return exit_status;
}

int list(const ClientConfig& config, const Options& o) {
  HttpClient client(config);
  std::string path = absl::StrCat("/api/v1/events?limit=", o.limit, filters(o));
  if (!o.cursor.empty()) path += "&cursor=" + urlEscape(o.cursor);
  auto page = client.get(path);
  if (!page.ok()) return reportError(page.status());
  const json::value* events = member(*page, "events");
  if (o.json) {
    if (events && events->is_array()) {
      for (const auto& e : events->as_array()) printOne(e, true);
    }
    return kExitOk;
  }
  if (!events || !events->is_array() || events->as_array().empty()) {
    std::cout << "no events match\n";
    return kExitOk;
  }
  Table table(kHeaders);
  for (const auto& e : events->as_array()) table.add(row(e));
  table.print(std::cout);
  std::string next = field(*page, "next_cursor");
  if (!next.empty()) std::cout << "(more: add --cursor " << next << ")\n";
  return kExitOk;
}

}  // namespace

void registerEventCommands(CLI::App& app, std::vector<Runner>* runners) {
  auto opts = std::make_shared<Options>();
  auto* events = app.add_subcommand("events", "The audit log: API calls and agent-link events");
  events->add_flag("-f,--follow", opts->follow, "print the last --limit events, then new ones");
  events->add_option("--kind", opts->kind, "a kind (link.refused) or a family (link, api.token)");
  events->add_option("--host", opts->host, "only events about this host");
  events->add_option("--actor", opts->actor, "only events by this token name or agent id");
  events->add_option("--since", opts->since,
                     "a duration back from now (1h, 7d) or a time (2026-11-23T20:00:00Z)");
  events->add_option("--limit", opts->limit, "at most this many (1-1000)")
      ->check(CLI::Range(1, 1000));
  events->add_option("--cursor", opts->cursor, "continue after this event id (older ones)");
  events->add_flag("--json", opts->json, "one JSON object per line");
  runners->push_back({events, [opts](const ClientConfig& c) {
                        return opts->follow ? follow(c, *opts) : list(c, *opts);
                      }});
}

}  // namespace muster::cli
