// An entry of the audit log: a mutating API call or a security event of the agent link.
#pragma once

#include <cstdint>
#include <string>

#include "model/host.h"

namespace muster::model {

// Kinds are `<origin>.<object>.<verb>` for the API (api.command.create, api.host.delete) and
// `link.<what happened>` for the agent link (link.enrolled, link.refused); the full list is
// in server/core/audit.h and docs/api.md. A family is any dot-separated prefix ("link",
// "api.token").
struct Event {
  std::string id;  // ULID: ordered by creation, across one musterd's life and restarts
  int64_t at_ms = 0;
  std::string kind;
  std::string actor;     // API token name ("admin") or, for link events, the agent id
  std::string actor_id;  // the API token's id; empty for link events and unauthenticated calls
  std::string source;    // peer address ("127.0.0.1:53412"), empty when unknown
  std::string target;    // what was acted on: host, command, run or token id
  std::string host_id;   // the one host the event concerns, if any (for ?host=)
  std::string result;    // "ok", an HTTP status ("201", "403") or a refusal reason
  StringMap detail;      // small: a message, a role, a count
};

// A page of the audit log. Newest first unless `after_id` is set (oldest first from there:
// an event stream resuming). Empty fields do not filter.
struct EventQuery {
  std::string kind;  // a kind, or a family matching every kind under it
  std::string host_id;
  std::string actor;      // the actor: a token name or an agent id
  int64_t since_ms = 0;   // at_ms >= since_ms (0: no bound)
  int64_t until_ms = 0;   // at_ms < until_ms (0: no bound)
  std::string before_id;  // newest first, ids below this (the cursor)
  std::string after_id;   // oldest first, ids above this (Last-Event-ID)
  int limit = 100;
};

}  // namespace muster::model
