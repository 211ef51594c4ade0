// `muster run (-l SELECTOR | -H ID...) -- CMD ARGS...` (create a run, stream every host's output
// live, summarize, exit 0 only if every host succeeded) and `muster run show RUN`.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/json/parse.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "cli/command_view.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "common/duration.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

constexpr size_t kMaxPartialLine = 64 * 1024;

std::atomic<bool> g_interrupted{false};

extern "C" void onInterrupt(int) { g_interrupted = true; }

// Prints complete lines with a host prefix; holds a partial line until its newline.
class LinePrinter {
 public:
  LinePrinter(std::string prefix, std::ostream* out) : prefix_(std::move(prefix)), out_(out) {}
  void add(std::string_view text) {
    partial_.append(text);
    size_t start = 0;
    while (true) {
      size_t nl = partial_.find('\n', start);
      if (nl == std::string::npos) break;
      *out_ << prefix_ << std::string_view(partial_).substr(start, nl - start) << '\n';
      start = nl + 1;
    }
    partial_.erase(0, start);
    if (partial_.size() > kMaxPartialLine) flush();
  }
  void flush() {
    if (partial_.empty()) return;
    *out_ << prefix_ << partial_ << '\n';
    partial_.clear();
  }

 private:
  std::string prefix_;
  std::ostream* out_;
  std::string partial_;
};

struct RunOptions {
  std::string selector;
  std::vector<std::string> hosts;
  std::string timeout;
  std::string expire;
  std::vector<std::string> env;         // K=V
  std::vector<std::string> secret_env;  // K=V or K=@file
  bool detach = false;
  bool json = false;
  std::vector<std::string> argv;
  std::string show_id;
  bool show_json = false;
};

// K=V from a flag; with `files`, K=@PATH reads the value from a file (so a secret need not be
// in the shell's history or in `ps`); one trailing newline is dropped. The error never quotes
// the value.
absl::StatusOr<std::pair<std::string, std::string>> envAssignment(const std::string& flag,
                                                                  const std::string& item,
                                                                  bool files) {
  size_t eq = item.find('=');
  if (eq == std::string::npos || eq == 0) {
    // A secret's argument is never echoed (it may be the value itself, its '=' forgotten).
    if (files)
      return absl::InvalidArgumentError(absl::StrCat(flag, " wants NAME=VALUE or NAME=@FILE"));
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " wants NAME=VALUE, got '", item.substr(0, 64), "'"));
  }
  std::string name = item.substr(0, eq), value = item.substr(eq + 1);
  if (files && !value.empty() && value[0] == '@') {
    std::string path = value.substr(1);
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", name, "=@", path, ": cannot read the file"));
    }
    std::ostringstream text;
    text << in.rdbuf();
    value = text.str();
    if (!value.empty() && value.back() == '\n') value.pop_back();
  }
  return std::pair{std::move(name), std::move(value)};
}

std::string newIdempotencyKey() {
  std::random_device random;
  std::uniform_int_distribution<uint64_t> dist;
  char buf[40];
  std::snprintf(buf, sizeof buf, "cli-%016llx%016llx",
                static_cast<unsigned long long>(dist(random)),
                static_cast<unsigned long long>(dist(random)));
  return buf;
}

// Follows every command of the run; fills `finals` with each command's last record.
void followRun(const ClientConfig& config, const json::array& commands, bool print_output,
               std::vector<json::value>* finals) {
  size_t width = 0;
  for (const auto& c : commands) width = std::max(width, field(c, "host_id").size());
  std::vector<std::string> paths;
  std::vector<std::unique_ptr<LinePrinter>> out_printers, err_printers;
  for (const auto& c : commands) {
    std::string host = field(c, "host_id");
    std::string prefix = host + std::string(width - host.size(), ' ') + " | ";
    out_printers.push_back(std::make_unique<LinePrinter>(prefix, &std::cout));
    err_printers.push_back(std::make_unique<LinePrinter>(prefix, &std::cerr));
    paths.push_back("/api/v1/commands/" + urlEscape(field(c, "id")) + "/output?follow=1");
  }
  finals->assign(commands.size(), json::value());
  std::vector<std::string> stream_errors(commands.size());

  EventFollower follower(config);
  auto on_event = [&](size_t i, const SseEvent& event) {
    boost::system::error_code ec;
    json::value data = json::parse(event.data, ec);
    if (ec) return;
    if (event.event == "output") {
      if (!print_output) return;
      bool is_err = field(data, "stream") == "stderr";
      (is_err ? err_printers : out_printers)[i]->add(field(data, "data"));
      (is_err ? std::cerr : std::cout).flush();
    } else if (event.event == "end") {
      out_printers[i]->flush();
      err_printers[i]->flush();
      (*finals)[i] = std::move(data);
    } else if (event.event == "error") {
      const json::value* error = member(data, "error");
      stream_errors[i] = error ? field(*error, "message") : event.data;
    }
  };
  // At most kMaxFollowed streams at once (the server caps event streams, 512 by default): the
  // commands past the first batch are followed when it ends; their output is stored, so
  // following them later replays it from the start.
  constexpr size_t kMaxFollowed = 128;
  auto previous = std::signal(SIGINT, onInterrupt);
  std::vector<absl::Status> results;
  for (size_t begin = 0; begin < paths.size() && !g_interrupted; begin += kMaxFollowed) {
    size_t end = std::min(paths.size(), begin + kMaxFollowed);
    std::vector<std::string> batch(paths.begin() + begin, paths.begin() + end);
    auto batch_results = follower.run(
        batch, [&](size_t i, const SseEvent& event) { on_event(begin + i, event); }, g_interrupted);
    results.insert(results.end(), batch_results.begin(), batch_results.end());
  }
  results.resize(paths.size());
  std::signal(SIGINT, previous);
  for (size_t i = 0; i < commands.size(); ++i) {
    out_printers[i]->flush();
    err_printers[i]->flush();
    if (g_interrupted || !(*finals)[i].is_null()) continue;
    std::string why =
        !stream_errors[i].empty() ? stream_errors[i] : std::string(results[i].message());
    if (!why.empty()) {
      std::cerr << "muster: lost the output stream of " << field(commands[i], "host_id") << ": "
                << why << "\n";
    }
  }
  std::cout.flush();
}

int runCommand(const ClientConfig& config, const RunOptions& o) {
  if (o.hosts.empty() && o.selector.empty()) {
    return reportUsage(
        "name the targets: -l SELECTOR (like -l env=prod) or -H ID (`muster hosts` lists them)");
  }
  if (!o.hosts.empty() && !o.selector.empty()) {
    return reportUsage("give either -l SELECTOR or -H ID..., not both");
  }
  if (o.argv.empty()) {
    std::string targets = o.selector.empty() ? "-H " + o.hosts.front() : "-l " + o.selector;
    return reportUsage("nothing to run: put the command after --, like `muster run " + targets +
                       " -- uptime`");
  }
  json::object body;
  json::array argv;
  for (const auto& a : o.argv) argv.emplace_back(a);
  if (o.selector.empty()) {
    json::array hosts;
    for (const auto& h : o.hosts) hosts.emplace_back(h);
    body["hosts"] = std::move(hosts);
  } else {
    body["selector"] = o.selector;
  }
  body["argv"] = std::move(argv);
  for (auto [flag, list, key] : {std::tuple{"--env", &o.env, "env"},
                                 std::tuple{"--secret-env", &o.secret_env, "secret_env"}}) {
    if (list->empty()) continue;
    json::object vars;
    for (const auto& item : *list) {
      auto kv = envAssignment(flag, item, /*files=*/std::string_view(key) == "secret_env");
      if (!kv.ok()) return reportUsage(std::string(kv.status().message()));
      vars[kv->first] = kv->second;
    }
    body[key] = std::move(vars);
  }
  // The server checks the same ranges; checking here saves a round trip and names the flag.
  for (auto [flag, value, key, max_ms] :
       {std::tuple{"--timeout", &o.timeout, "timeout", common::kMaxCommandTimeoutMs},
        std::tuple{"--expire", &o.expire, "expire", common::kMaxExpiryMs}}) {
    if (value->empty()) continue;
    auto ms = common::parseDurationMsInRange(flag, *value, 0, max_ms);
    if (!ms.ok()) return reportUsage(std::string(ms.status().message()));
    body[key] = *value;
  }
  body["idempotency_key"] = newIdempotencyKey();

  HttpClient client(config);
  auto created = client.post("/api/v1/commands", body);
  if (!created.ok() && absl::IsUnavailable(created.status()) &&
      created.status().message().find("cannot connect") == std::string::npos) {
    created = client.post("/api/v1/commands", body);  // same key: a retry creates nothing twice
  }
  if (!created.ok()) return reportError(created.status());
  std::string run_id = field(*created, "run_id");
  const json::value* commands_value = member(*created, "commands");
  json::array commands =
      commands_value && commands_value->is_array() ? commands_value->as_array() : json::array{};

  if (o.detach) {
    if (o.json) {
      printJson(std::cout, *created);
    } else {
      std::cout << run_id << "\n";
      std::cerr << "run " << run_id << ": " << commands.size()
                << " command(s) created; see `muster run show " << run_id << "`\n";
    }
    return kExitOk;
  }

  std::vector<json::value> finals;
  followRun(config, commands, !o.json, &finals);
  if (g_interrupted) {
    std::cerr << "\nmuster: interrupted; the commands keep running. Follow up with `muster run "
                 "show "
              << run_id << "` or stop them with `muster cancel " << run_id << "`\n";
    return 130;
  }
  for (size_t i = 0; i < commands.size(); ++i) {
    if (!finals[i].is_null()) continue;
    auto latest = client.get("/api/v1/commands/" + urlEscape(field(commands[i], "id")));
    finals[i] = latest.ok() ? *latest : commands[i];
  }

  bool all_ok = !finals.empty();
  for (const auto& f : finals) all_ok = all_ok && succeeded(f);
  if (o.json) {
    json::array list;
    for (auto& f : finals) list.push_back(f);
    printJson(std::cout, json::object{{"run_id", run_id}, {"commands", std::move(list)}});
    return all_ok ? kExitOk : kExitFailure;
  }
  std::vector<size_t> order(finals.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return field(finals[a], "host_id") < field(finals[b], "host_id");
  });
  Table table({"HOST", "STATE", "EXIT", "ERROR"});
  std::map<std::string, int> by_state;
  for (size_t i : order) {
    const auto& f = finals[i];
    by_state[field(f, "state")]++;
    std::string error = field(f, "error");
    if (error.size() > 70) error = error.substr(0, 67) + "...";
    table.add({field(f, "host_id"), field(f, "state"), exitText(f), error});
  }
  std::cout << "\n";
  table.print(std::cout);
  std::string counts;
  for (const auto& [state, n] : by_state)
    absl::StrAppend(&counts, counts.empty() ? "" : ", ", n, " ", state);
  std::cout << "run " << run_id << ": " << counts << "\n";
  return all_ok ? kExitOk : kExitFailure;
}

int showRun(const ClientConfig& config, const std::string& id, bool as_json) {
  HttpClient client(config);
  auto run = client.get("/api/v1/runs/" + urlEscape(id));
  if (!run.ok()) return reportError(run.status());
  if (as_json) {
    printJson(std::cout, *run);
    return kExitOk;
  }
  std::cout << "run:      " << field(*run, "run_id") << "\n"
            << "created:  " << field(*run, "created_at") << " by " << field(*run, "created_by")
            << "\n";
  if (const json::value* summary = member(*run, "summary"); summary && summary->is_object()) {
    std::string counts;
    for (const auto& kv : summary->as_object()) {
      if (kv.key() == "total" || scalarText(kv.value()) == "0") continue;
      absl::StrAppend(&counts, counts.empty() ? "" : ", ", scalarText(kv.value()), " ",
                      std::string(kv.key()));
    }
    std::cout << "commands: " << field(*summary, "total") << (counts.empty() ? "" : " (") << counts
              << (counts.empty() ? "" : ")") << "\n\n";
  }
  Table table({"HOST", "STATE", "EXIT", "COMMAND-ID", "ERROR"});
  if (const json::value* commands = member(*run, "commands"); commands && commands->is_array()) {
    for (const auto& c : commands->as_array()) {
      std::string error = field(c, "error");
      if (error.size() > 60) error = error.substr(0, 57) + "...";
      table.add({field(c, "host_id"), field(c, "state"), exitText(c), field(c, "id"), error});
    }
  }
  table.print(std::cout);
  return kExitOk;
}

}  // namespace

void registerRunCommands(CLI::App& app, std::vector<Runner>* runners) {
  auto opts = std::make_shared<RunOptions>();
  auto* run = app.add_subcommand("run",
                                 "Run a command on hosts and stream their output: muster run "
                                 "(-l SELECTOR | -H ID...) -- CMD ARGS...");
  run->add_option("-l,--selector", opts->selector,
                  "target the hosts whose labels match, like 'env=prod,role in (web,db),!canary'");
  // One value per -H, so `-H a -- cmd -x` leaves `--` to end the options.
  run->add_option("-H,--host", opts->hosts, "target host id (repeat for several hosts)")
      ->allow_extra_args(false);
  run->add_option("--timeout", opts->timeout, "kill the command after this long (e.g. 30s, 5m)");
  run->add_option("--expire", opts->expire,
                  "drop the command if its host has not taken it within this long (e.g. 1h)");
  run->add_option("--env", opts->env, "environment variable NAME=VALUE for the command (repeat)")
      ->allow_extra_args(false);
  run->add_option("--secret-env", opts->secret_env,
                  "secret environment variable NAME=VALUE or NAME=@FILE: sent to the agent, "
                  "never shown by the API or in logs (repeat)")
      ->allow_extra_args(false);
  run->add_flag("--detach", opts->detach, "print the run id and return without waiting");
  run->add_flag("--json", opts->json, "print the final command records as JSON (no live output)");
  run->add_option("command", opts->argv, "the command to run and its arguments, after --");

  auto* show = run->add_subcommand("show", "Show a run: every host's state and exit code");
  show->add_option("run", opts->show_id, "run id")->required();
  show->add_flag("--json", opts->show_json, "print JSON");
  // `show` first: the most specific parsed subcommand wins.
  runners->push_back(
      {show, [opts](const ClientConfig& c) { return showRun(c, opts->show_id, opts->show_json); }});
  runners->push_back({run, [opts](const ClientConfig& c) { return runCommand(c, *opts); }});
}

}  // namespace muster::cli
