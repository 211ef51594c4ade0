// Hosts: list (selector, status, pages), get, set/remove labels, decommission.
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/selector.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {

absl::StatusOr<int> limitParam(const Context& ctx, int fallback, int max_limit) {
  const std::string* text = ctx.param("limit");
  if (!text) return fallback;
  int limit = 0;
  if (!absl::SimpleAtoi(*text, &limit) || limit < 1 || limit > max_limit) {
    return absl::InvalidArgumentError(absl::StrCat("invalid limit '", text->substr(0, 32),
                                                   "': use a number from 1 to ", max_limit));
  }
  return limit;
}

ApiReply listHosts(Context& ctx) {
  auto limit = limitParam(ctx, 100, 1000);
  if (!limit.ok()) return errorReply(limit.status());
  std::optional<model::HostStatus> status;
  if (const std::string* text = ctx.param("status"); text && !text->empty()) {
    model::HostStatus parsed;
    if (!model::parseHostStatus(*text, &parsed)) {
      return errorReply(absl::InvalidArgumentError(absl::StrCat(
          "invalid status '", text->substr(0, 32), "': use online, offline or revoked")));
    }
    status = parsed;
  }
  std::optional<model::Selector> selector;
  if (const std::string* text = ctx.param("selector"); text && !text->empty()) {
    std::string error;
    selector = model::Selector::parse(*text, &error);
    if (!selector) return errorReply(422, "invalid_selector", error);
  }
  std::string cursor;
  if (const std::string* c = ctx.param("cursor"); c && !c->empty()) {
    if (auto st = checkId("host", *c); !st.ok()) {
      return errorReply(
          absl::InvalidArgumentError(absl::StrCat("query parameter cursor: ", st.message())));
    }
    cursor = *c;
  }

  // Sorted by id.
  std::vector<model::Host> hosts =
      ctx.plane.hosts().select(selector ? &*selector : nullptr, status ? &*status : nullptr);
  boost::json::array items;
  std::string last_id;
  bool more = false;
  for (const auto& host : hosts) {
    if (!cursor.empty() && host.id <= cursor) continue;
    if (static_cast<int>(items.size()) == *limit) {
      more = true;
      break;
    }
    items.push_back(hostJson(host));
    last_id = host.id;
  }
  boost::json::object body;
  body["hosts"] = std::move(items);
  if (more) {
    body["next_cursor"] = last_id;
  } else {
    body["next_cursor"] = nullptr;
  }
  return jsonReply(200, body);
}

ApiReply getHost(Context& ctx, const std::string& id) {
  auto host = ctx.plane.hosts().get(id);
  if (!host) {
    return errorReply(absl::NotFoundError(absl::StrCat(
        "no host with id '", id.substr(0, 140), "': `muster hosts` lists the enrolled hosts")));
  }
  return jsonReply(200, hostJson(*host));
}

ApiReply setHostLabels(Context& ctx, const std::string& id) {
  auto change = parseLabelBody(ctx.request.body);
  if (!change.ok()) return errorReply(change.status());
  model::StringMap detail;
  for (const auto& [k, v] : change->set)
    absl::StrAppend(&detail["set"], detail["set"].empty() ? "" : ",", k, "=", v);
  if (!change->remove.empty()) detail["remove"] = absl::StrJoin(change->remove, ",");
  auto host = ctx.plane.hosts().setLabels(id, change->set, change->remove);
  ApiReply reply = host.ok() ? jsonReply(200, hostJson(*host)) : errorReply(host.status());
  reply.audit_detail = std::move(detail);
  return reply;
}

ApiReply deleteHost(Context& ctx, const std::string& id) {
  auto host = ctx.plane.decommission(
      id,
      Actor{.name = ctx.principal.name, .id = ctx.principal.token_id, .source = ctx.request.peer});
  if (!host.ok()) return errorReply(host.status());
  return jsonReply(200, hostJson(*host));
}

}  // namespace muster::server::http
