// `muster token create --enroll [--uses N] [--ttl 24h] [--label k=v]`.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "common/duration.h"

namespace muster::cli {
namespace {
namespace json = boost::json;

struct TokenOptions {
  bool enroll = false;
  int64_t uses = 1;
  std::string ttl = "24h";
  std::vector<std::string> labels;
  bool json = false;
};

int createToken(const ClientConfig& config, const TokenOptions& o) {
  if (!o.enroll) {
    // TODO(issue 3): --role admin|operator|viewer.
    return reportUsage("say which kind of token: --enroll (operator tokens with roles come later)");
  }
  json::object body;
  body["kind"] = "enroll";
  body["uses"] = o.uses;
  if (o.ttl != "0") {
    auto ms = common::parseDurationMs(o.ttl);
    if (!ms.ok()) return reportUsage(absl::StrCat("--ttl: ", ms.status().message()));
    body["ttl"] = o.ttl;
  } else {
    body["ttl_ms"] = 0;
  }
  json::object labels;
  for (const auto& label : o.labels) {
    size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      return reportUsage("--label wants key=value, got '" + label + "'");
    }
    labels[label.substr(0, eq)] = label.substr(eq + 1);
  }
  body["labels"] = std::move(labels);

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
            << ". Start an agent with: muster-agent --enroll-token <token> --server HOST:PORT\n";
  return kExitOk;
}

}  // namespace

void registerTokenCommands(CLI::App& app, std::vector<Runner>* runners) {
  auto opts = std::make_shared<TokenOptions>();
  auto* token = app.add_subcommand("token", "Manage tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand("create", "Create a token (printed once)");
  create->add_flag("--enroll", opts->enroll, "a token agents use to enroll");
  create->add_option("--uses", opts->uses, "how many agents may enroll with it (-1: unlimited)");
  create->add_option("--ttl", opts->ttl, "valid for this long (e.g. 24h, 7d; 0: forever)");
  create->add_option("--label", opts->labels, "label k=v applied to hosts that enroll with it")
      ->allow_extra_args(false);
  create->add_flag("--json", opts->json, "print JSON");
  runners->push_back({create, [opts](const ClientConfig& c) { return createToken(c, *opts); }});
}

}  // namespace muster::cli
