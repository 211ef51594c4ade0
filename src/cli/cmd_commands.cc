// `muster command show ID`, `muster commands ...` and `muster cancel ID|RUN`.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "cli/command_view.h"
#include "cli/commands.h"
#include "cli/format.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

int showCommand(const ClientConfig& config, const std::string& id, bool as_json, bool with_output) {
  HttpClient client(config);
  auto command = client.get("/api/v1/commands/" + urlEscape(id));
  if (!command.ok()) return reportError(command.status());
  absl::StatusOr<json::value> output = absl::NotFoundError("");
  if (with_output) {
    output = client.get("/api/v1/commands/" + urlEscape(id) + "/output");
    if (!output.ok()) return reportError(output.status());
  }
  if (as_json) {
    if (!with_output) {
      printJson(std::cout, *command);
    } else {
      printJson(std::cout, json::object{{"command", *command}, {"output", *output}});
    }
    return kExitOk;
  }
  const json::value& c = *command;
  auto line = [](std::string_view label, const std::string& value) {
    if (!value.empty()) std::cout << label << std::string(12 - label.size(), ' ') << value << "\n";
  };
  bool cancel_pending = field(c, "cancel_requested") == "true" && field(c, "state") != "cancelled";
  line("id:", field(c, "id"));
  line("run:", field(c, "run_id"));
  line("host:", field(c, "host_id"));
  line("state:", outcomeText(c) + (cancel_pending ? " (cancel requested)" : ""));
  line("command:", commandText(c));
  line("cwd:", field(c, "cwd"));
  line("timeout:", absl::StrCat(intField(c, "timeout_ms") / 1000, "s"));
  line("created:", field(c, "created_at") + " by " + field(c, "created_by"));
  line("dispatched:", field(c, "dispatched_at"));
  line("started:", field(c, "started_at"));
  line("finished:", field(c, "finished_at"));
  line("expires:", field(c, "expires_at"));
  line("error:", field(c, "error"));
  line("output:", humanBytes(intField(c, "stdout_bytes")) + " stdout, " +
                      humanBytes(intField(c, "stderr_bytes")) + " stderr" +
                      (field(c, "output_truncated") == "true" ? " (truncated)" : ""));
  if (with_output) {
    std::cout << "--- stdout\n" << field(*output, "stdout");
    std::cout << "--- stderr\n" << field(*output, "stderr");
  }
  return kExitOk;
}

struct ListOptions {
  std::string run, host, state, cursor;
  int limit = 50;
  bool json = false;
};

int listCommands(const ClientConfig& config, const ListOptions& o) {
  HttpClient client(config);
  std::string path = absl::StrCat("/api/v1/commands?limit=", o.limit);
  if (!o.run.empty()) path += "&run=" + urlEscape(o.run);
  if (!o.host.empty()) path += "&host=" + urlEscape(o.host);
  if (!o.state.empty()) path += "&state=" + urlEscape(o.state);
  if (!o.cursor.empty()) path += "&cursor=" + urlEscape(o.cursor);
  auto page = client.get(path);
  if (!page.ok()) return reportError(page.status());
  if (o.json) {
    printJson(std::cout, *page);
    return kExitOk;
  }
  const json::value* commands = member(*page, "commands");
  if (!commands || !commands->is_array() || commands->as_array().empty()) {
    std::cout << "no commands match\n";
    return kExitOk;
  }
  Table table({"ID", "HOST", "STATE", "EXIT", "CREATED", "COMMAND"});
  for (const auto& c : commands->as_array()) {
    std::string text = commandText(c);
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    table.add({field(c, "id"), field(c, "host_id"), field(c, "state"), exitText(c),
               field(c, "created_at"), text});
  }
  table.print(std::cout);
  std::string next = field(*page, "next_cursor");
  if (!next.empty()) std::cout << "(more: add --cursor " << next << ")\n";
  return kExitOk;
}

int cancel(const ClientConfig& config, const std::string& id) {
  HttpClient client(config);
  auto command = client.post("/api/v1/commands/" + urlEscape(id) + "/cancel", json::object{});
  if (command.ok()) {
    std::string state = field(*command, "state");
    if (state == "cancelled") {
      std::cout << "command " << id << " on " << field(*command, "host_id") << " cancelled\n";
    } else {
      std::cout << "command " << id << " on " << field(*command, "host_id")
                << ": cancel requested (" << state << "; the agent stops it)\n";
    }
    return kExitOk;
  }
  if (!absl::IsNotFound(command.status())) return reportError(command.status());
  auto run = client.post("/api/v1/runs/" + urlEscape(id) + "/cancel", json::object{});
  if (!run.ok()) {
    if (absl::IsNotFound(run.status())) {
      return reportError(absl::NotFoundError(absl::StrCat("no command or run with id '", id, "'")));
    }
    return reportError(run.status());
  }
  const json::value* commands = member(*run, "commands");
  size_t n = commands && commands->is_array() ? commands->as_array().size() : 0;
  std::cout << "run " << id << ": cancel requested for " << n << " open command(s)\n";
  return kExitOk;
}

}  // namespace

void registerCommandCommands(CLI::App& app, std::vector<Runner>* runners) {
  struct Options {
    std::string id;
    bool json = false;
    bool output = false;
    ListOptions list;
    std::string cancel_id;
  };
  auto opts = std::make_shared<Options>();

  auto* command = app.add_subcommand("command", "Show one command");
  command->require_subcommand(1);
  auto* show = command->add_subcommand("show", "Show a command's state, times and result");
  show->add_option("id", opts->id, "command id")->required();
  show->add_flag("--json", opts->json, "print JSON");
  show->add_flag("--output", opts->output, "also print the stored output");
  runners->push_back({show, [opts](const ClientConfig& c) {
                        return showCommand(c, opts->id, opts->json, opts->output);
                      }});

  auto* list = app.add_subcommand("commands", "List commands, newest first");
  list->add_option("--run", opts->list.run, "only commands of this run");
  list->add_option("--host", opts->list.host, "only commands for this host");
  list->add_option("--state", opts->list.state, "only commands in this state")
      ->check(CLI::IsMember({"queued", "dispatched", "running", "succeeded", "failed", "timed_out",
                             "cancelled", "expired"}));
  list->add_option("--limit", opts->list.limit, "at most this many (1-1000)")
      ->check(CLI::Range(1, 1000));
  list->add_option("--cursor", opts->list.cursor, "continue after this command id");
  list->add_flag("--json", opts->list.json, "print JSON");
  runners->push_back({list, [opts](const ClientConfig& c) { return listCommands(c, opts->list); }});

  auto* cancel_cmd =
      app.add_subcommand("cancel", "Cancel a command, or every open command of a run");
  cancel_cmd->add_option("id", opts->cancel_id, "command id or run id")->required();
  runners->push_back(
      {cancel_cmd, [opts](const ClientConfig& c) { return cancel(c, opts->cancel_id); }});
}

}  // namespace muster::cli
