// Commands and runs: create, get, list, cancel.
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {
namespace {

boost::json::array commandsJson(const std::vector<model::Command>& commands) {
  boost::json::array out;
  out.reserve(commands.size());
  for (const auto& c : commands) out.push_back(commandJson(c));
  return out;
}

// ?view=summary leaves the per-command list out of a reply (large runs); ?view=full (the
// default) keeps it.
absl::StatusOr<bool> summaryView(const Context& ctx) {
  const std::string* view = ctx.param("view");
  if (view == nullptr || *view == "full") return false;
  if (*view == "summary") return true;
  return absl::InvalidArgumentError(
      absl::StrCat("invalid view '", view->substr(0, 32), "': use full or summary"));
}

boost::json::object summaryJson(const std::vector<model::Command>& commands) {
  boost::json::object summary;
  for (int i = 0; i <= static_cast<int>(model::CommandState::kExpired); ++i) {
    summary[model::toString(static_cast<model::CommandState>(i))] = 0;
  }
  for (const auto& c : commands) summary[model::toString(c.state)].as_int64() += 1;
  summary["total"] = static_cast<int64_t>(commands.size());
  return summary;
}

std::string cancelReason(const Context& ctx) {
  return absl::StrCat("cancelled by ", ctx.principal.name);
}

}  // namespace

ApiReply createCommands(Context& ctx) {
  auto summary_only = summaryView(ctx);
  if (!summary_only.ok()) return errorReply(summary_only.status());
  auto request =
      parseCreateRunBody(ctx.request.body, ctx.request.idempotency_key, ctx.principal.name);
  if (!request.ok()) return errorReply(request.status());
  // For the audit event: the targets, never the environment (secret_env).
  model::StringMap detail;
  if (!request->selector.empty()) detail["selector"] = request->selector;
  if (!request->host_ids.empty()) detail["hosts"] = absl::StrJoin(request->host_ids, ",");
  if (detail.count("hosts") && detail["hosts"].size() > 400) detail["hosts"].resize(400);
  std::string single_host = request->host_ids.size() == 1 ? request->host_ids[0] : "";
  auto result = ctx.plane.commands().createRun(*std::move(request));
  if (!result.ok()) {
    ApiReply reply = errorReply(result.status());
    reply.audit_detail = std::move(detail);
    reply.audit_host = std::move(single_host);
    return reply;
  }
  boost::json::object body;
  body["run_id"] = result->run_id;
  body["replayed"] = result->replayed;
  body["summary"] = summaryJson(result->commands);
  if (!*summary_only) body["commands"] = commandsJson(result->commands);
  ApiReply reply = jsonReply(result->replayed ? 200 : 201, body);
  reply.audit_target = result->run_id;
  reply.audit_host = std::move(single_host);
  detail["commands"] = absl::StrCat(result->commands.size());
  if (result->replayed) detail["replayed"] = "true";
  reply.audit_detail = std::move(detail);
  return reply;
}

ApiReply getCommand(Context& ctx, const std::string& id) {
  auto command = ctx.plane.commands().get(id);
  if (!command.ok()) return errorReply(command.status());
  return jsonReply(200, commandJson(*command));
}

ApiReply listCommands(Context& ctx) {
  auto limit = limitParam(ctx, 100, 1000);
  if (!limit.ok()) return errorReply(limit.status());
  CommandQuery filter;
  for (auto [key, kind, out] :
       {std::tuple{"run", "run", &filter.run_id}, std::tuple{"host", "host", &filter.host_id},
        std::tuple{"cursor", "command", &filter.before_id}}) {
    const std::string* value = ctx.param(key);
    if (!value || value->empty()) continue;
    if (auto st = checkId(kind, *value); !st.ok()) {
      return errorReply(
          absl::InvalidArgumentError(absl::StrCat("query parameter ", key, ": ", st.message())));
    }
    *out = *value;
  }
  if (const std::string* text = ctx.param("state"); text && !text->empty()) {
    model::CommandState state;
    if (!model::parseCommandState(*text, &state)) {
      return errorReply(absl::InvalidArgumentError(absl::StrCat(
          "invalid state '", text->substr(0, 32),
          "': use queued, dispatched, running, succeeded, failed, timed_out, cancelled or "
          "expired")));
    }
    filter.state = state;
  }
  filter.limit = *limit + 1;  // one more tells whether there is a next page
  auto page = ctx.plane.queries().commands(filter);
  if (!page.ok()) return errorReply(page.status());
  bool more = static_cast<int>(page->size()) > *limit;
  if (more) page->resize(*limit);
  boost::json::object body;
  body["commands"] = commandsJson(*page);
  if (more && !page->empty()) {
    body["next_cursor"] = page->back().id;
  } else {
    body["next_cursor"] = nullptr;
  }
  return jsonReply(200, body);
}

ApiReply cancelCommand(Context& ctx, const std::string& id) {
  auto command = ctx.plane.commands().cancel(id, cancelReason(ctx));
  if (!command.ok()) return errorReply(command.status());
  ApiReply reply = jsonReply(200, commandJson(*command));
  reply.audit_host = command->host_id;
  reply.audit_detail["state"] = std::string(model::toString(command->state));
  return reply;
}

ApiReply getRun(Context& ctx, const std::string& id) {
  auto summary_only = summaryView(ctx);
  if (!summary_only.ok()) return errorReply(summary_only.status());
  auto run = ctx.plane.queries().run(id);
  if (!run.ok()) return errorReply(run.status());
  boost::json::object body;
  body["run_id"] = run->id;
  body["created_by"] = run->created_by;
  body["created_at"] = rfc3339Ms(run->created_at_ms);
  body["summary"] = summaryJson(run->commands);
  // A large run still being stored in slices (or waiting for the store to take the rest):
  // how many hosts it targets in all; "summary" counts the commands stored so far.
  body["complete"] = run->complete;
  if (!run->complete) body["targets"] = run->targets;
  if (!*summary_only) body["commands"] = commandsJson(run->commands);
  return jsonReply(200, body);
}

ApiReply cancelRun(Context& ctx, const std::string& id) {
  auto cancelled = ctx.plane.commands().cancelRun(id, cancelReason(ctx));
  if (!cancelled.ok()) return errorReply(cancelled.status());
  boost::json::object body;
  body["run_id"] = id;
  body["commands"] = commandsJson(*cancelled);
  ApiReply reply = jsonReply(200, body);
  reply.audit_detail["cancelled"] = absl::StrCat(cancelled->size());
  return reply;
}

}  // namespace muster::server::http
