// A ControlPlane on a real SQLite store in a scratch directory, with a FakeClock and an
// inline slow path (as tests/unit/server/control_plane_test.cc builds it), for the targets
// that feed the core; kept across inputs.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/worker_pool.h"
#include "server/core/control_plane.h"
#include "store/sqlite/sqlite_store.h"

namespace muster::fuzz {

// A session that counts what the core sends instead of keeping it: fuzzers send millions
// of messages.
class CountingSession final : public server::Session {
 public:
  CountingSession(std::string agent_id, std::string session_id)
      : agent_id_(std::move(agent_id)), session_id_(std::move(session_id)) {}
  const std::string& agentId() const override { return agent_id_; }
  const std::string& sessionId() const override { return session_id_; }
  bool send(server::ServerEvent event) override {
    if (closed_.load()) return false;
    sent_++;
    return true;
  }
  void close(absl::Status why) override { closed_ = true; }
  bool closed() const { return closed_.load(); }
  uint64_t sent() const { return sent_.load(); }

 private:
  const std::string agent_id_, session_id_;
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> sent_{0};
};

inline void fixtureCheck(const absl::Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "fuzz fixture: %s failed: %s\n", what, std::string(st.message()).c_str());
  std::abort();
}

class PlaneFixture {
 public:
  PlaneFixture(const std::string& dir, server::CoreConfig config) {
    auto store = store::SqliteStore::open(dir + "/muster.db");
    fixtureCheck(store.status(), "opening the store");
    store_ = *std::move(store);
    plane_ = std::make_unique<server::ControlPlane>(*store_, inline_, clock_, config);
    fixtureCheck(plane_->start(), "starting the control plane");
  }
  ~PlaneFixture() {
    plane_.reset();
    store_.reset();
  }

  server::ControlPlane& plane() { return *plane_; }
  store::SqliteStore& store() { return *store_; }
  common::FakeClock& clock() { return clock_; }

  // Enrolls `id` and returns its credential.
  std::string enroll(const std::string& id, model::StringMap labels = {}) {
    auto token = plane_->enrollment().createToken(1, 0, std::move(labels), "fuzz");
    fixtureCheck(token.status(), "creating an enrollment token");
    auto credential = plane_->enrollment().enroll({.token = token->secret, .agent_id = id});
    fixtureCheck(credential.status(), "enrolling a host");
    return *credential;
  }
  // A run of one command on `host`; returns the command's id.
  std::string runOn(const std::string& host) {
    server::CreateRunRequest request;
    request.host_ids = {host};
    request.exec.argv = {"true"};
    request.created_by = "fuzz";
    auto run = plane_->commands().createRun(request);
    fixtureCheck(run.status(), "creating a run");
    return run->commands.at(0).id;
  }

 private:
  common::FakeClock clock_;
  common::InlineExecutor inline_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<server::ControlPlane> plane_;
};

}  // namespace muster::fuzz
