// `muster hosts`, `muster host show ID`, `muster host label ID k=v... [--remove k...]` and
// `muster host rm ID`.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/format.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

std::string labelsText(const json::value& host) {
  const json::value* labels = member(host, "labels");
  if (!labels || !labels->is_object()) return "";
  std::vector<std::string> parts;
  for (const auto& kv : labels->as_object()) {
    parts.push_back(absl::StrCat(std::string(kv.key()), "=", scalarText(kv.value())));
  }
  return absl::StrJoin(parts, ",");
}

std::string memText(const json::value& metrics) {
  int64_t total = intField(metrics, "mem_total_bytes");
  int64_t available = intField(metrics, "mem_available_bytes");
  if (total <= 0) return "-";
  int64_t used_pct = (total - available) * 100 / total;
  return absl::StrCat(used_pct, "% of ", humanBytes(static_cast<uint64_t>(total)));
}

std::string loadText(const json::value& host) {
  const json::value* metrics = member(host, "metrics");
  if (!metrics || intField(host, "last_seen_ms") == 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.2f", doubleField(*metrics, "load1"));
  return buf;
}

int listHosts(const ClientConfig& config, const std::string& selector, const std::string& status,
              bool as_json) {
  HttpClient client(config);
  json::array hosts;
  std::string cursor;
  do {
    std::string path = "/api/v1/hosts?limit=1000";
    if (!selector.empty()) path += "&selector=" + urlEscape(selector);
    if (!status.empty()) path += "&status=" + urlEscape(status);
    if (!cursor.empty()) path += "&cursor=" + urlEscape(cursor);
    auto page = client.get(path);
    if (!page.ok()) return reportError(page.status());
    const json::value* items = member(*page, "hosts");
    if (items && items->is_array()) {
      for (const auto& h : items->as_array()) hosts.push_back(h);
    }
    cursor = field(*page, "next_cursor");
  } while (!cursor.empty());

  if (as_json) {
    printJson(std::cout, json::object{{"hosts", hosts}});
    return kExitOk;
  }
  if (hosts.empty()) {
    if (!selector.empty() || !status.empty()) {
      std::cout << "no hosts match" << (selector.empty() ? "" : " selector '" + selector + "'")
                << (status.empty() ? "" : " with status " + status) << "\n";
    } else {
      std::cout << "no hosts enrolled yet: create a token with `muster token create --enroll` "
                   "and start muster-agent with it\n";
    }
    return kExitOk;
  }
  Table table({"ID", "STATUS", "VERSION", "LAST-SEEN", "LOAD", "MEM", "LABELS"});
  int64_t now = nowMs();
  for (const auto& h : hosts) {
    const json::value* metrics = member(h, "metrics");
    table.add({field(h, "id"), field(h, "status"), field(h, "version"),
               ago(intField(h, "last_seen_ms"), now), loadText(h),
               metrics ? memText(*metrics) : "-", labelsText(h)});
  }
  table.print(std::cout);
  return kExitOk;
}

int showHost(const ClientConfig& config, const std::string& id, bool as_json) {
  HttpClient client(config);
  auto host = client.get("/api/v1/hosts/" + urlEscape(id));
  if (!host.ok()) return reportError(host.status());
  if (as_json) {
    printJson(std::cout, *host);
    return kExitOk;
  }
  const json::value& h = *host;
  int64_t now = nowMs();
  std::cout << "id:          " << field(h, "id") << "\n"
            << "status:      " << field(h, "status") << " (since "
            << ago(intField(h, "status_changed_at_ms"), now) << ")\n"
            << "version:     " << field(h, "version") << "\n"
            << "enrolled:    " << field(h, "enrolled_at") << "\n"
            << "last seen:   " << field(h, "last_seen") << " ("
            << ago(intField(h, "last_seen_ms"), now) << ")\n"
            << "labels:      " << labelsText(h) << "\n";
  if (const json::value* m = member(h, "metrics")) {
    std::cout << "load:        " << field(*m, "load1") << " " << field(*m, "load5") << " "
              << field(*m, "load15") << "\n"
              << "memory:      " << memText(*m) << "\n"
              << "disk free:   " << humanBytes(intField(*m, "disk_free_bytes")) << " of "
              << humanBytes(intField(*m, "disk_total_bytes")) << "\n"
              << "uptime:      " << intField(*m, "uptime_seconds") / 3600 << "h\n";
  }
  if (const json::value* facts = member(h, "facts"); facts && facts->is_object()) {
    std::cout << "facts:\n";
    for (const auto& kv : facts->as_object()) {
      std::cout << "  " << std::string(kv.key()) << ": " << scalarText(kv.value()) << "\n";
    }
  }
  return kExitOk;
}

struct LabelOptions {
  std::string id;
  std::vector<std::string> labels;  // k=v
  std::vector<std::string> remove;  // k
  bool json = false;
};

int labelHost(const ClientConfig& config, const LabelOptions& o) {
  json::object set;
  for (const auto& label : o.labels) {
    size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      return reportUsage("labels are key=value, got '" + label +
                         "'; to remove a label use --remove KEY");
    }
    set[label.substr(0, eq)] = label.substr(eq + 1);
  }
  json::array remove;
  for (const auto& key : o.remove) {
    if (key.find('=') != std::string::npos) {
      return reportUsage("--remove takes label keys, got '" + key +
                         "'; put key=value labels before --remove");
    }
    remove.emplace_back(key);
  }
  if (set.empty() && remove.empty()) {
    return reportUsage("nothing to change: give key=value labels and/or --remove KEY");
  }
  json::object body;
  if (!set.empty()) body["set"] = std::move(set);
  if (!remove.empty()) body["remove"] = std::move(remove);
  HttpClient client(config);
  auto host = client.patch("/api/v1/hosts/" + urlEscape(o.id) + "/labels", body);
  if (!host.ok()) return reportError(host.status());
  if (o.json) {
    printJson(std::cout, *host);
    return kExitOk;
  }
  std::string labels = labelsText(*host);
  std::cout << "host " << field(*host, "id") << " labels: " << (labels.empty() ? "(none)" : labels)
            << "\n";
  return kExitOk;
}

int removeHost(const ClientConfig& config, const std::string& id, bool as_json) {
  HttpClient client(config);
  auto host = client.del("/api/v1/hosts/" + urlEscape(id));
  if (!host.ok()) return reportError(host.status());
  if (as_json) {
    printJson(std::cout, *host);
    return kExitOk;
  }
  std::cout << "host " << field(*host, "id") << " removed (status " << field(*host, "status")
            << "): its credential is revoked, so its agent is refused from now on, and its open "
               "commands were cancelled. Its history stays; to bring it back, re-enroll it with "
               "a token from `muster token create --enroll`.\n";
  return kExitOk;
}

}  // namespace

void registerHostCommands(CLI::App& app, std::vector<Runner>* runners) {
  struct Options {
    std::string selector;
    std::string status;
    bool json = false;
    std::string id;
    bool show_json = false;
    LabelOptions label;
    std::string rm_id;
    bool rm_json = false;
  };
  auto opts = std::make_shared<Options>();

  auto* host = app.add_subcommand("host", "Show, label or remove one host");
  host->require_subcommand(1);
  auto* show = host->add_subcommand("show", "Show one host's facts, labels and metrics");
  show->add_option("id", opts->id, "host id")->required();
  show->add_flag("--json", opts->show_json, "print JSON");
  runners->push_back(
      {show, [opts](const ClientConfig& c) { return showHost(c, opts->id, opts->show_json); }});

  auto* label = host->add_subcommand(
      "label", "Set and remove a host's labels: muster host label ID k=v... [--remove k...]");
  label->add_option("id", opts->label.id, "host id")->required();
  label->add_option("labels", opts->label.labels, "labels to set, key=value");
  label->add_option("--remove", opts->label.remove, "label keys to remove");
  label->add_flag("--json", opts->label.json, "print the host as JSON");
  runners->push_back({label, [opts](const ClientConfig& c) { return labelHost(c, opts->label); }});

  auto* rm = host->add_subcommand(
      "rm", "Decommission a host: revoke its credential and cancel its open commands");
  rm->add_option("id", opts->rm_id, "host id")->required();
  rm->add_flag("--json", opts->rm_json, "print the host as JSON");
  runners->push_back(
      {rm, [opts](const ClientConfig& c) { return removeHost(c, opts->rm_id, opts->rm_json); }});

  auto* hosts = app.add_subcommand("hosts", "List hosts");
  hosts->add_option("-l,--selector", opts->selector,
                    "only hosts whose labels match, like 'env=prod,role in (web,db),!canary'");
  hosts->add_option("--status", opts->status, "only hosts with this status")
      ->check(CLI::IsMember({"online", "offline", "revoked"}));
  hosts->add_flag("--json", opts->json, "print JSON");
  runners->push_back({hosts, [opts](const ClientConfig& c) {
                        return listHosts(c, opts->selector, opts->status, opts->json);
                      }});
}

}  // namespace muster::cli
