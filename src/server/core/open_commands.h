// The open commands (queued, dispatched, running) in memory, by id and by host, and the one
// way their state changes: apply(), which runs the transition table (command_states.h) under
// this table's lock and hands back what the store needs. Agent messages are handled with
// lookups here, without I/O on transport threads; a command leaves the table as it ends.
//
// Lock order: the host registry's lock is never taken under this one (callers look sessions
// up first), and nobody sends to a Session or waits for the store while holding it — nor
// inside with(). Queueing a store write (Store::write never blocks) under it is allowed: it
// orders an output chunk before the result that ends its command.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "model/command.h"
#include "server/core/command_states.h"

namespace muster::server {

class OpenCommands {
 public:
  enum class Outcome {
    kApplied,
    kNotOpen,      // not in the table: ended, or never known here (read the store)
    kOtherHost,    // the command belongs to another host than the agent reporting it
    kNotAccepted,  // the table has no row for the event in the command's state
  };
  struct Applied {
    Outcome outcome = Outcome::kNotOpen;
    CommandEvent event{};    // the event applied (applyFirst picks one)
    CommandAction action{};  // the row's action
    model::CommandState from{};
    // The command after the transition: moved out of the table if it ended, else a copy.
    model::Command command;
    // The store's guard for the transition, storeGuard(event); empty for kDispatch, whose
    // store mark is deferred and carries its own guard (store::MarkDispatched).
    std::vector<model::CommandState> only_if;

    bool ok() const { return outcome == Outcome::kApplied; }
    bool ended() const { return ok() && model::isTerminal(command.state); }
  };

  // The table under its lock, for work that sees many commands at once (a run, a host, a
  // sweep, a delivery batch). Exists only inside with(); see the lock order above. (Its
  // methods skip the thread-safety analysis, which cannot see that with() holds mu_.)
  class Tx {
   public:
    // `agent_id` set: the event comes from that agent, refused (kOtherHost) for another
    // host's command.
    Applied apply(const std::string& id, CommandEvent event, const EventInput& in,
                  std::string_view agent_id = {});
    // Applies the first of `events` that the table accepts in the command's state.
    Applied applyFirst(const std::string& id, std::initializer_list<CommandEvent> events,
                       const EventInput& in,
                       std::string_view agent_id = {}) ABSL_NO_THREAD_SAFETY_ANALYSIS;
    const model::Command* find(const std::string& id) const ABSL_NO_THREAD_SAFETY_ANALYSIS;
    // Adds `bytes` to the output received for open command `id`; returns the new total.
    uint64_t countOutput(const std::string& id, uint64_t bytes) ABSL_NO_THREAD_SAFETY_ANALYSIS;
    std::vector<std::string> idsOfHost(const std::string& host_id) const
        ABSL_NO_THREAD_SAFETY_ANALYSIS;
    std::vector<std::string> idsOfRun(const std::string& run_id) const
        ABSL_NO_THREAD_SAFETY_ANALYSIS;
    // f(const model::Command&) for every open command; f must not apply anything.
    template <class F>
    void forEach(F&& f) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
      for (const auto& [id, entry] : table_.open_) f(entry.command);
    }

   private:
    friend class OpenCommands;
    explicit Tx(OpenCommands& table) : table_(table) {}
    OpenCommands& table_;
  };

  // Runs f(Tx&) under the table's lock and returns what it returns.
  template <class F>
  decltype(auto) with(F&& f) {
    std::lock_guard lock(mu_);
    Tx tx(*this);
    return std::forward<F>(f)(tx);
  }
  // with() for one command.
  Applied apply(const std::string& id, CommandEvent event, const EventInput& in,
                std::string_view agent_id = {});
  Applied applyFirst(const std::string& id, std::initializer_list<CommandEvent> events,
                     const EventInput& in, std::string_view agent_id = {});

  // Commands stored as open (created, or loaded at start).
  void add(const model::Command* first, const model::Command* last);
  void add(std::vector<model::Command> commands);
  // A command whose end could not be stored is still open in the store: it is open here
  // again, in the state it ended from (`from`, open) with the end's fields cleared, so
  // sweeps, resends and cancels apply to it as before. Nothing if it is open already or
  // `from` is an end (it stays ended in the store).
  void reopen(model::Command command, model::CommandState from);

  std::optional<model::Command> get(const std::string& id) const;
  // Replaces each command that is open by its copy here (memory is ahead of the store).
  void refresh(std::vector<model::Command>& commands) const;
  std::vector<std::string> idsOfHost(const std::string& host_id) const;
  size_t size() const;
  // Open commands by state (index: model::CommandState value).
  std::array<uint64_t, 8> countByState() const;

 private:
  struct Entry {
    model::Command command;
    uint64_t received_bytes = 0;  // output taken, resends included
  };
  using Map = std::unordered_map<std::string, Entry>;
  void addLocked(model::Command command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `host_id`: the command's host (passed in, as the command may have been moved out).
  void removeLocked(Map::iterator it, const std::string& host_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::mutex mu_;
  Map open_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::set<std::string>> by_host_ ABSL_GUARDED_BY(mu_);
};

}  // namespace muster::server
