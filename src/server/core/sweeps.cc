// CommandService: the periodic sweeps — deferred dispatch marks, retries of failed slices,
// expiry of commands nobody took, and server-side timeouts of commands nobody reported.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "server/core/command_service.h"

namespace muster::server {

void CommandService::tick() {
  topUpRedeliveries();
  storeDispatchMarks();
  retryFailedSlices();
  sweepDeadlines();
}

void CommandService::sweepDeadlines() {
  const int64_t now = clock_.nowMs();
  std::vector<OpenCommands::Applied> ended;
  open_.with([&](OpenCommands::Tx& tx) {
    struct Due {
      std::string id;
      CommandEvent event;
      std::string why;
    };
    std::vector<Due> due;
    tx.forEach([&](const model::Command& c) {
      if (next(c.state, CommandEvent::kExpire) && c.expires_at_ms > 0 && now >= c.expires_at_ms) {
        due.push_back({c.id, CommandEvent::kExpire,
                       "expired before the host took it (host offline or busy until the "
                       "deadline)"});
        return;
      }
      const int64_t hard_deadline = c.started_at_ms + c.exec.timeout_ms + c.exec.kill_grace_ms +
                                    config_.server_timeout_grace_ms;
      if (next(c.state, CommandEvent::kServerTimeout) && c.exec.timeout_ms > 0 &&
          now >= hard_deadline) {
        due.push_back({c.id, CommandEvent::kServerTimeout,
                       absl::StrCat("no result from the agent within the timeout (",
                                    c.exec.timeout_ms, " ms) plus grace; the host may be down")});
      }
    });
    for (const Due& d : due) {
      OpenCommands::Applied c = tx.apply(d.id, d.event, {.now_ms = now, .reason = d.why});
      if (c.ok()) ended.push_back(std::move(c));
    }
  });
  for (auto& c : ended) {
    spdlog::warn("command {} on {}: {}", c.command.id, c.command.host_id, c.command.error);
    storeTerminal(std::move(c.command), c.from, std::move(c.only_if), nullptr);
  }
}

}  // namespace muster::server
