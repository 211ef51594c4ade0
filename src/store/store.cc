// Blocking helper shared by every Store implementation.
#include "store/store.h"

#include <future>

namespace muster::store {

WriteResult Store::writeAndWait(Mutation mutation) {
  std::promise<WriteResult> promise;
  auto future = promise.get_future();
  write(std::move(mutation), [&promise](WriteResult r) { promise.set_value(std::move(r)); });
  return future.get();
}

}  // namespace muster::store
