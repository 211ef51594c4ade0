// A fixed pool of threads for blocking work (store reads, disk), so network threads never block.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace muster::common {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual void post(std::function<void()> fn) = 0;
  // Queues `fn` unless `max_queued` tasks already wait (a peer-driven flood): false then, and
  // `fn` is dropped unrun, so the caller refuses the request instead of queueing hours of it.
  virtual bool tryPost(std::function<void()> fn, size_t max_queued) {
    post(std::move(fn));
    return true;
  }
  // Tasks waiting to start (0 where unknown).
  virtual size_t queued() const { return 0; }
};

class WorkerPool final : public Executor {
 public:
  WorkerPool(int threads, std::string name);
  ~WorkerPool() override;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void post(std::function<void()> fn) override;
  bool tryPost(std::function<void()> fn, size_t max_queued) override;
  size_t queued() const override;
  // Runs what is queued, then joins. Later posts run inline.
  void shutdown();

 private:
  void run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::string name_;
};

// Runs posted work immediately on the caller's thread (tests).
class InlineExecutor final : public Executor {
 public:
  void post(std::function<void()> fn) override { fn(); }
};

}  // namespace muster::common
