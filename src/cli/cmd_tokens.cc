// `muster token create --enroll [--uses N] [--ttl 24h] [--label k=v] [--host ID]`,
// `muster token create --role ROLE [--name N] [--ttl 30d]`, `muster token ls` and
// `muster token revoke ID`.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "common/duration.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

struct TokenOptions {
  bool enroll = false;
  std::string role;
  std::string name;
  int64_t uses = 1;
  std::string ttl;  // empty: 24h for enrollment tokens, no expiry for API tokens
  std::vector<std::string> labels;
  std::string host;      // --enroll --host: for that host only (re-imaging it)
  bool install = false;  // --install: print the one-line installer even when not on a TTY
  bool json = false;
  bool ls_json = false;
  std::string revoke_id;
};

// Adds "ttl" (or "ttl_ms": 0 for "0") to `body`; kExitOk, or kExitUsage when malformed.
int addTtl(const std::string& ttl, json::object* body) {
  if (ttl.empty()) return kExitOk;
  if (ttl == "0") {
    (*body)["ttl_ms"] = 0;
    return kExitOk;
  }
  auto ms = common::parseDurationMsInRange("--ttl", ttl, 0, common::kMaxTokenTtlMs);
  if (!ms.ok()) return reportUsage(std::string(ms.status().message()));
  (*body)["ttl"] = ttl;
  return kExitOk;
}

int createEnrollToken(const ClientConfig& config, const TokenOptions& o) {
  if (!o.name.empty()) return reportUsage("--name is for API tokens (--role), not --enroll");
  json::object body;
  body["kind"] = "enroll";
  body["uses"] = o.uses;
  if (int rc = addTtl(o.ttl.empty() ? "24h" : o.ttl, &body); rc != kExitOk) return rc;
  json::object labels;
  for (const auto& label : o.labels) {
    size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      return reportUsage("--label wants key=value, got '" + label + "'");
    }
    labels[label.substr(0, eq)] = label.substr(eq + 1);
  }
  body["labels"] = std::move(labels);
  if (!o.host.empty()) body["host"] = o.host;

  HttpClient client(config);
  auto token = client.post("/api/v1/tokens", body);
  if (!token.ok()) return reportError(token.status());
  if (o.json) {
    printJson(std::cout, *token);
    return kExitOk;
  }
  std::cout << field(*token, "token") << "\n";
  std::string expires = field(*token, "expires_at");
  std::cerr << "enrollment token " << field(*token, "id") << ": "
            << (o.uses < 0 ? std::string("unlimited uses") : absl::StrCat(o.uses, " use(s)"))
            << ", " << (expires.empty() ? "never expires" : "expires " + expires)
            << (o.host.empty() ? ""
                               : ", for host " + o.host + " only (it may replace its credential)")
            << ". Start an agent with: muster-agent --enroll-token <token> --server HOST:PORT"
            << (o.host.empty() ? "" : " --id " + o.host) << "\n";
  // The line holds the token: printed to a terminal (or on request), not into the logs of
  // a script that captured the token from stdout.
  std::string install = field(*token, "install_command");
  if (!install.empty() && (o.install || ::isatty(STDERR_FILENO))) {
    std::cerr << "Or install and enroll one on a host that has curl, in one line (drop sudo "
                 "when root; the token shows in ps while it runs):\n  "
              << install << "\n";
  } else if (o.install) {
    std::cerr << "musterd serves no agent installer: start it with --agent-binary PATH\n";
  }
  return kExitOk;
}

int createApiToken(const ClientConfig& config, const TokenOptions& o) {
  if (!o.labels.empty()) return reportUsage("--label is for enrollment tokens (--enroll)");
  if (!o.host.empty()) return reportUsage("--host is for enrollment tokens (--enroll)");
  json::object body;
  body["kind"] = "api";
  body["role"] = o.role;
  if (!o.name.empty()) body["name"] = o.name;
  if (int rc = addTtl(o.ttl, &body); rc != kExitOk) return rc;

  HttpClient client(config);
  auto token = client.post("/api/v1/tokens", body);
  if (!token.ok()) return reportError(token.status());
  if (o.json) {
    printJson(std::cout, *token);
    return kExitOk;
  }
  std::cout << field(*token, "token") << "\n";
  std::string expires = field(*token, "expires_at");
  std::cerr << o.role << " token " << field(*token, "id") << " (" << field(*token, "name") << "), "
            << (expires.empty() ? "never expires" : "expires " + expires)
            << ". It is shown only now: store it, then use it with --token or MUSTER_TOKEN; "
               "revoke it with `muster token revoke "
            << field(*token, "id") << "`\n";
  return kExitOk;
}

int createToken(const ClientConfig& config, const TokenOptions& o) {
  if (o.enroll == !o.role.empty()) {
    return reportUsage(o.enroll ? "give either --enroll or --role, not both"
                                : "say which kind of token: --enroll (for agents) or --role "
                                  "viewer|operator|admin (for people and scripts)");
  }
  return o.enroll ? createEnrollToken(config, o) : createApiToken(config, o);
}

std::string usesText(const json::value& token) {
  int64_t uses = intField(token, "uses_left", 0);
  return uses < 0 ? "unlimited" : absl::StrCat(uses, " left");
}

int listTokens(const ClientConfig& config, bool as_json) {
  HttpClient client(config);
  auto tokens = client.get("/api/v1/tokens");
  if (!tokens.ok()) return reportError(tokens.status());
  if (as_json) {
    printJson(std::cout, *tokens);
    return kExitOk;
  }
  Table table({"ID", "KIND", "ROLE/USES", "NAME/LABELS", "STATE", "EXPIRES", "CREATED-BY"});
  if (const json::value* api = member(*tokens, "api"); api && api->is_array()) {
    for (const auto& t : api->as_array()) {
      std::string expires = field(t, "expires_at");
      table.add({field(t, "id"), "api", field(t, "role"), field(t, "name"), field(t, "state"),
                 expires.empty() ? "never" : expires, field(t, "created_by")});
    }
  }
  if (const json::value* enroll = member(*tokens, "enroll"); enroll && enroll->is_array()) {
    for (const auto& t : enroll->as_array()) {
      std::vector<std::string> labels;
      if (const json::value* l = member(t, "labels"); l && l->is_object()) {
        for (const auto& kv : l->as_object()) {
          labels.push_back(absl::StrCat(std::string(kv.key()), "=", scalarText(kv.value())));
        }
      }
      std::string expires = field(t, "expires_at");
      std::string host = field(t, "host");
      if (!host.empty()) labels.insert(labels.begin(), "host:" + host);
      table.add({field(t, "id"), "enroll", usesText(t), absl::StrJoin(labels, ","),
                 field(t, "state"), expires.empty() ? "never" : expires, field(t, "created_by")});
    }
  }
  if (table.empty()) {
    std::cout << "no tokens\n";
    return kExitOk;
  }
  table.print(std::cout);
  return kExitOk;
}

int revokeToken(const ClientConfig& config, const std::string& id) {
  HttpClient client(config);
  auto revoked = client.del("/api/v1/tokens/" + urlEscape(id));
  if (!revoked.ok()) return reportError(revoked.status());
  bool api = field(*revoked, "kind") == "api";
  std::cout << (api ? "API token " : "enrollment token ") << id << " revoked"
            << (api ? ": requests with it are refused from now on\n"
                    : ": agents can no longer enroll with it (hosts enrolled with it stay)\n");
  return kExitOk;
}

}  // namespace

void registerTokenCommands(CLI::App& app, std::vector<Runner>* runners) {
  auto opts = std::make_shared<TokenOptions>();
  auto* token = app.add_subcommand("token", "Create, list and revoke tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand(
      "create", "Create a token (printed once): --enroll for agents, --role ROLE for operators");
  create->add_flag("--enroll", opts->enroll, "a token agents use to enroll");
  create
      ->add_option("--role", opts->role,
                   "an API token: viewer (read), operator (+ run and cancel), admin (+ tokens "
                   "and hosts)")
      ->check(CLI::IsMember({"viewer", "operator", "admin"}));
  create->add_option("--name", opts->name,
                     "who or what uses the API token (recorded as creator "
                     "of what it does)");
  create->add_option("--uses", opts->uses, "how many agents may enroll with it (-1: unlimited)");
  create->add_option("--ttl", opts->ttl,
                     "valid for this long (e.g. 24h, 30d; 0: forever). Default: 24h for "
                     "--enroll, forever for --role");
  create->add_option("--label", opts->labels, "label k=v applied to hosts that enroll with it")
      ->allow_extra_args(false);
  create->add_option("--host", opts->host,
                     "enrollment token for this host id only: enrolls it even while it is "
                     "enrolled (a re-imaged machine), replacing its credential");
  create->add_flag("--install", opts->install,
                   "print the one-line agent installer (on stderr; printed anyway on a terminal)");
  create->add_flag("--json", opts->json, "print JSON");
  runners->push_back({create, [opts](const ClientConfig& c) { return createToken(c, *opts); }});

  auto* ls = token->add_subcommand("ls", "List tokens (never their secrets)");
  ls->add_flag("--json", opts->ls_json, "print JSON");
  runners->push_back({ls, [opts](const ClientConfig& c) { return listTokens(c, opts->ls_json); }});

  auto* revoke = token->add_subcommand("revoke", "Revoke an API or enrollment token");
  revoke->add_option("id", opts->revoke_id, "token id (from `muster token ls`)")->required();
  runners->push_back(
      {revoke, [opts](const ClientConfig& c) { return revokeToken(c, opts->revoke_id); }});
}

}  // namespace muster::cli
