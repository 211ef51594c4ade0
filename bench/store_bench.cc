// The durable steps of a fan-out, measured on the real SQLite store: inserting a run of N
// commands, marking them dispatched, and storing N results (as the group-commit writer gets
// them: one mutation each, batched into few transactions). Prints Google Benchmark's table.
//   build/bench/muster-store-bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <filesystem>

#include "common/ids.h"
#include "store/sqlite/sqlite_store.h"

namespace {
using namespace muster;

struct TempStore {
  std::filesystem::path dir;
  std::unique_ptr<store::SqliteStore> store;
  TempStore() {
    dir = std::filesystem::temp_directory_path() / ("muster-store-bench-" + common::newUlid(0));
    std::filesystem::create_directories(dir);
    auto opened = store::SqliteStore::open((dir / "muster.db").string());
    if (!opened.ok()) std::abort();
    store = std::move(*opened);
  }
  ~TempStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

store::InsertRun makeRun(int n, int64_t now) {
  store::InsertRun insert;
  insert.run = store::Run{common::newUlid(now), "", "fingerprint", "bench", now, {}};
  for (int i = 0; i < n; ++i) {
    model::Command c;
    c.id = common::newUlid(now);
    c.run_id = insert.run.id;
    c.host_id = "sim-" + std::to_string(i);
    c.exec.argv = {"true"};
    c.exec.timeout_ms = 3'600'000;
    c.exec.kill_grace_ms = 10'000;
    c.created_by = "bench";
    c.created_at_ms = now;
    c.expires_at_ms = now + 86'400'000;
    insert.commands.push_back(std::move(c));
  }
  return insert;
}

void BM_InsertRun(benchmark::State& state) {
  TempStore t;
  int n = static_cast<int>(state.range(0));
  int64_t now = 1'700'000'000'000;
  for (auto _ : state) {
    state.PauseTiming();
    auto run = makeRun(n, now++);
    state.ResumeTiming();
    auto r = t.store->writeAndWait(std::move(run));
    if (!r.status.ok()) state.SkipWithError(std::string(r.status.message()).c_str());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// Dispatch marks (optional) and results of one run, queued as the server queues them.
void BM_DispatchAndResults(benchmark::State& state) {
  TempStore t;
  int n = static_cast<int>(state.range(0));
  int64_t now = 1'700'000'000'000;
  for (auto _ : state) {
    state.PauseTiming();
    auto run = makeRun(n, now++);
    std::vector<model::Command> commands = run.commands;
    (void)t.store->writeAndWait(std::move(run));
    state.ResumeTiming();
    for (size_t begin = 0; state.range(1) != 0 && begin < commands.size(); begin += 256) {
      store::MarkDispatched mark{{}, now};
      for (size_t i = begin; i < std::min(commands.size(), begin + 256); ++i) {
        mark.command_ids.push_back(commands[i].id);
      }
      t.store->write(std::move(mark), {});
    }
    for (auto& c : commands) {
      c.state = model::CommandState::kSucceeded;
      c.exit_code = 0;
      c.finished_at_ms = now;
      t.store->write(
          store::UpdateCommand{c,
                               {model::CommandState::kQueued, model::CommandState::kDispatched,
                                model::CommandState::kRunning}},
          {});
    }
    if (auto st = t.store->flush(); !st.ok()) state.SkipWithError("flush failed");
  }
  state.SetItemsProcessed(state.iterations() * n);
}

BENCHMARK(BM_InsertRun)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();
// Second argument: 1 with the dispatch marks, 0 results only.
BENCHMARK(BM_DispatchAndResults)
    ->Args({1000, 1})
    ->Args({10000, 1})
    ->Args({10000, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
