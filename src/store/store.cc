// Blocking helper shared by every Store implementation.
#include "store/store.h"

#include <future>

namespace muster::store {

UpdateCommand UpdateCommand::of(const model::Command& c, std::vector<model::CommandState> only_if) {
  UpdateCommand out;
  out.command.id = c.id;
  out.command.state = c.state;
  out.command.dispatched_at_ms = c.dispatched_at_ms;
  out.command.started_at_ms = c.started_at_ms;
  out.command.finished_at_ms = c.finished_at_ms;
  out.command.exit_code = c.exit_code;
  out.command.signal = c.signal;
  out.command.error = c.error;
  out.command.output_truncated = c.output_truncated;
  out.command.stdout_bytes = c.stdout_bytes;
  out.command.stderr_bytes = c.stderr_bytes;
  out.command.cancel_requested = c.cancel_requested;
  out.command.result_source = c.result_source;
  out.only_if_state_in = std::move(only_if);
  return out;
}

WriteResult Store::writeAndWait(Mutation mutation) {
  std::promise<WriteResult> promise;
  auto future = promise.get_future();
  write(std::move(mutation), [&promise](WriteResult r) { promise.set_value(std::move(r)); });
  return future.get();
}

}  // namespace muster::store
