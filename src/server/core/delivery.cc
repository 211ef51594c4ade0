// CommandService: what the server sends agents — delivery of open commands (new ones,
// fan-outs, redelivery on reconnect), the deferred dispatch marks, and result acks.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>

#include "common/fmt_absl.h"
#include "server/core/command_service.h"

namespace muster::server {
namespace {
using model::CommandState;

// A first send (queued -> dispatched) past the command's deadline is not made: tick()
// expires it. Later sends of a command the agent may already have are made regardless.
bool firstSendPastDeadline(const model::Command& c, int64_t now) {
  const CommandTransition* row = findTransition(c.state, CommandEvent::kDispatch);
  return row != nullptr && row->action == CommandAction::kFirstSend && c.expires_at_ms > 0 &&
         now >= c.expires_at_ms;
}
}  // namespace

void CommandService::deliverRange(const model::Command* first, const model::Command* last) {
  // One registry lock and one table lock per slice, then the sends outside both.
  int64_t now = clock_.nowMs();
  auto sessions = hosts_.sessionsFor(first, last);
  std::vector<std::pair<Session*, ServerEvent>> events;
  std::vector<std::string> dispatched;
  open_.with([&](OpenCommands::Tx& tx) {
    for (const model::Command* c = first; c != last; ++c) {
      Session* session = sessions[c - first].get();
      if (session == nullptr) continue;
      // Nothing for a command finished or cancelled meanwhile.
      if (auto event = deliveryEvent(tx, c->id, c->host_id, now, &dispatched)) {
        events.emplace_back(session, *std::move(event));
      }
    }
  });
  for (auto& [session, event] : events) session->send(std::move(event));
  markDispatched(std::move(dispatched), now);
}

void CommandService::deliverAll(const std::vector<model::Command>& commands) {
  constexpr size_t kChunk = 256;
  const model::Command* base = commands.data();
  if (!fanout_ || commands.size() <= kChunk) {
    deliverRange(base, base + commands.size());
    return;
  }
  // Split across the fanout workers; wait, so the reply shows the dispatched states.
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = (commands.size() + kChunk - 1) / kChunk;
  for (size_t begin = 0; begin < commands.size(); begin += kChunk) {
    size_t end = std::min(commands.size(), begin + kChunk);
    fanout_->post([&, begin, end] {
      deliverRange(base + begin, base + end);
      std::lock_guard lock(mu);
      if (--pending == 0) cv.notify_one();
    });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return pending == 0; });
}

std::optional<ServerEvent> CommandService::deliveryEvent(OpenCommands::Tx& tx,
                                                         const std::string& id,
                                                         const std::string& agent_id, int64_t now,
                                                         std::vector<std::string>* first_sends) {
  const model::Command* c = tx.find(id);
  if (c == nullptr || c->host_id != agent_id) return std::nullopt;
  if (firstSendPastDeadline(*c, now)) return std::nullopt;
  if (c->cancel_requested) return CancelMsg{c->id, "cancelled by an operator"};
  OpenCommands::Applied sent = tx.apply(id, CommandEvent::kDispatch, {.now_ms = now});
  if (!sent.ok()) return std::nullopt;  // not reached: every open state has a kDispatch row
  if (sent.action == CommandAction::kFirstSend) first_sends->push_back(id);
  return DispatchMsg{std::move(sent.command)};
}

bool CommandService::deliver(const std::shared_ptr<Session>& session,
                             const std::vector<std::string>& ids) {
  int64_t now = clock_.nowMs();
  std::vector<ServerEvent> events;
  std::vector<std::string> dispatched;
  open_.with([&](OpenCommands::Tx& tx) {
    for (const auto& id : ids) {
      if (auto event = deliveryEvent(tx, id, session->agentId(), now, &dispatched)) {
        events.push_back(*std::move(event));
      }
    }
  });
  bool open = true;
  for (auto& e : events) {
    if (!session->send(std::move(e))) {
      open = false;
      break;
    }
  }
  // Marked even if the link closed meanwhile: dispatched commands are redelivered on the next
  // link like queued ones, and the agent's journal runs each once.
  markDispatched(std::move(dispatched), now);
  return open;
}

void CommandService::markDispatched(std::vector<std::string> ids, int64_t now) {
  // Stored later by tick(), and only for commands still waiting then: a quick command's
  // result stores its dispatch time itself, so a fan-out of quick commands costs the store
  // one write per command, not two. Losing a mark in a crash is harmless: queued and
  // dispatched commands are both redelivered when their host connects.
  if (ids.empty()) return;
  int64_t steady = clock_.steadyMs();  // the delay is timed on the steady clock
  std::lock_guard lock(marks_mu_);
  for (auto& id : ids) deferred_marks_.push_back({std::move(id), now, steady});
}

void CommandService::storeDispatchMarks() {
  const int64_t steady = clock_.steadyMs();
  std::vector<DeferredMark> due;
  {
    std::lock_guard lock(marks_mu_);
    while (!deferred_marks_.empty() &&
           steady - deferred_marks_.front().steady_ms >= config_.dispatch_mark_delay_ms) {
      due.push_back(std::move(deferred_marks_.front()));
      deferred_marks_.pop_front();
    }
  }
  if (due.empty()) return;
  std::vector<store::MarkDispatched> marks;
  open_.with([&](OpenCommands::Tx& tx) {
    for (auto& mark : due) {
      // Only for commands still where their first send left them: any later transition
      // stores the dispatch time with its own update.
      const model::Command* c = tx.find(mark.id);
      if (c == nullptr || c->state != CommandState::kDispatched) continue;
      if (marks.empty() || marks.back().at_ms != mark.at_ms) marks.push_back({{}, mark.at_ms});
      marks.back().command_ids.push_back(std::move(mark.id));
    }
  });
  for (auto& m : marks) store_.write(std::move(m), {});
}

void CommandService::onAgentConnected(const std::shared_ptr<Session>& session) {
  std::vector<std::string> ids = open_.idsOfHost(session->agentId());
  if (ids.empty()) return;
  spdlog::info("agent {}: delivering {} open command(s)", session->agentId(), ids.size());
  // A window (messages and bytes) at a time, so the send queue never overflows: that would
  // end the stream and start the same redelivery again on the next one, for ever.
  session->setRedelivery(std::move(ids));
  topUpRedelivery(session);
  if (session->redeliveryLeft() == 0) return;
  std::lock_guard lock(redelivering_mu_);
  redelivering_.push_back(session);
}

void CommandService::topUpRedelivery(const std::shared_ptr<Session>& session) {
  // One top-up per link at a time (the tick and the link's reader both call this), so two
  // cannot each see room and fill it twice.
  Session::RedeliveryTurn turn(*session);
  if (!turn) return;
  const size_t window = std::max<size_t>(1, config_.redelivery_window_messages);
  const size_t window_bytes = config_.redelivery_window_bytes;
  // At most a window per call, also where the transport cannot tell its queue. A command's
  // size is known only once it is queued: one goes first, then batches (up to 16) of what the
  // room left holds at the size the last batch took. The overshoot is one batch's error.
  size_t sent = 0;
  size_t per_command = 0;  // bytes, learnt from the last batch; 0: not known yet
  while (sent < window && session->redeliveryLeft() > 0) {
    const size_t queued = session->queuedMessages();
    const size_t bytes = session->queuedBytes();
    if (queued >= window || bytes >= window_bytes) return;
    size_t batch = 16;
    if (per_command > 0) {
      batch = std::clamp<size_t>((window_bytes - bytes) / per_command, 1, 16);
    } else if (sent == 0) {
      batch = 1;
    }
    batch = std::min({batch, window - sent, window - queued});
    std::vector<std::string> ids = session->takeRedelivery(batch);
    if (ids.empty() || !deliver(session, ids)) return;
    sent += ids.size();
    const size_t after = session->queuedBytes();
    if (after > bytes) per_command = std::max<size_t>(1, (after - bytes) / ids.size());
  }
}

void CommandService::topUpRedeliveries() {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(redelivering_mu_);
    std::erase_if(redelivering_, [&](const std::weak_ptr<Session>& weak) {
      std::shared_ptr<Session> s = weak.lock();
      if (!s || s->redeliveryLeft() == 0) return true;
      sessions.push_back(std::move(s));
      return false;
    });
  }
  for (const auto& s : sessions) topUpRedelivery(s);
}

void CommandService::queueAck(std::shared_ptr<Session> session, std::string command_id) {
  if (!fanout_) {
    session->send(ResultAckMsg{std::move(command_id), false, ""});
    return;
  }
  // Acks released by one commit go out in slices of up to kAckSlice per task, so both fanout
  // workers share them without a task per ack.
  static constexpr size_t kAckSlice = 256;
  bool post = false;
  {
    std::lock_guard lock(ack_mu_);
    pending_acks_.emplace_back(std::move(session), std::move(command_id));
    // Invariant: the tasks posted and not yet started can take every pending ack.
    if (pending_acks_.size() > ack_tasks_ * kAckSlice) {
      ++ack_tasks_;
      post = true;
    }
  }
  if (!post) return;
  fanout_->post([this] {
    std::vector<std::pair<std::shared_ptr<Session>, std::string>> acks;
    {
      std::lock_guard lock(ack_mu_);
      --ack_tasks_;
      size_t n = std::min(kAckSlice, pending_acks_.size());
      for (size_t i = 0; i < n; ++i) {
        acks.push_back(std::move(pending_acks_.front()));
        pending_acks_.pop_front();
      }
    }
    for (auto& [s, id] : acks) s->send(ResultAckMsg{std::move(id), false, ""});
  });
}

}  // namespace muster::server
