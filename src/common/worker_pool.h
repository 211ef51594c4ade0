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
};

class WorkerPool final : public Executor {
 public:
  WorkerPool(int threads, std::string name);
  ~WorkerPool() override;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void post(std::function<void()> fn) override;
  // Runs what is queued, then joins. Later posts run inline.
  void shutdown();

 private:
  void run();

  std::mutex mu_;
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
