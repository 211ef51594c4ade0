// muster-loadgen: N simulated agents against a real musterd it starts itself, with the
// scenarios connect, idle, fanout, throughput, reconnect-storm and smoke. Each scenario
// prints one JSON line on stdout and a human summary on stderr.
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "bench/loadgen/proc.h"
#include "bench/loadgen/sim_agent.h"
#include "crypto/certs.h"
#include "muster/v1/agent.pb.h"

namespace muster::bench {
namespace {

// This process's CPU time (user + system), seconds.
double selfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

namespace json = boost::json;

struct Options {
  std::string musterd;
  std::string work_dir = "/tmp/muster-loadgen";
  int agents = 100;
  std::string scenario = "smoke";
  int heartbeat_s = 30;
  int fanout_rounds = 5;
  int idle_seconds = 60;
  int settle_seconds = 12;
  int throughput_seconds = 10;
  int throughput_clients = 8;
  int addresses = 1;  // loopback addresses musterd listens on (127.0.0.1 .. 127.0.0.N)
  std::vector<std::string> musterd_args;  // passed to musterd as they are
  // plaintext (musterd --insecure-plaintext), tls, or old (a musterd from before TLS).
  std::string link = "plaintext";
  bool tls_resume = true;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

void emit(const std::string& scenario, json::object figures, const std::string& human) {
  figures["scenario"] = scenario;
  std::cout << json::serialize(figures) << std::endl;
  std::cerr << "[" << scenario << "] " << human << std::endl;
}

bool waitUntil(const std::function<bool()>& done, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

class LoadGen {
 public:
  explicit LoadGen(Options o) : o_(std::move(o)) {}

  int run() {
    raiseFdLimit();
    if (o_.scenario == "smoke") std::filesystem::remove_all(o_.work_dir);  // counts must be exact
    std::filesystem::create_directories(o_.work_dir);
    int grpc_port = freeTcpPort();
    std::vector<std::string> extra{"--heartbeat-interval", std::to_string(o_.heartbeat_s) + "s"};
    std::vector<std::string> targets{"127.0.0.1:" + std::to_string(grpc_port)};
    // More destination addresses, more 4-tuples: each gives agents ~28k ephemeral ports.
    for (int k = 2; k <= o_.addresses; ++k) {
      targets.push_back("127.0.0." + std::to_string(k) + ":" + std::to_string(grpc_port));
      extra.insert(extra.end(), {"--grpc-listen", targets.back()});
    }
    if (o_.link == "plaintext") extra.push_back("--insecure-plaintext");
    if (o_.link == "mtls") extra.push_back("--require-client-certs");
    extra.insert(extra.end(), o_.musterd_args.begin(), o_.musterd_args.end());
    server_ = std::make_unique<ServerProcess>(o_.musterd, o_.work_dir + "/data", freeTcpPort(),
                                              grpc_port, extra);
    bool tls = o_.link == "tls" || o_.link == "mtls";
    server_->setTls(tls);
    setHttpCaFile(tls ? server_->caFile() : "");
    security_.plaintext = !tls;
    server_->start();
    if (tls) {
      std::ifstream in(server_->caFile());
      security_.ca_pem.assign(std::istreambuf_iterator<char>(in), {});
    }
    token_ = server_->adminToken();
    auto ids = identities();
    if (ids.size() != static_cast<size_t>(o_.agents)) return fail("enrollment failed");
    for (const auto& [id, cred] : ids) host_ids_.push_back(id);
    baseline_ = sampleProc(server_->pid());
    SimOptions sim{targets, 1000, 60'000};
    sim.security = security_;
    sim.tls_resume = o_.tls_resume;
    sim.client_certs = client_certs_;
    fleet_ = std::make_unique<SimFleet>(sim, ids);
    int rc = 0;
    // "all", one scenario, or several separated by commas ("fanout,reconnect-storm").
    auto want = [&](const char* s) {
      if (o_.scenario == "all") return true;
      std::string list = "," + o_.scenario + ",";
      return list.find("," + std::string(s) + ",") != std::string::npos;
    };
    rc |= connect();
    if (rc) return rc;
    if (o_.scenario == "smoke") return smoke();
    // Heartbeats for the whole run, as real agents send them (the server drops a link
    // after three missed intervals): each agent once per interval, the fleet spread evenly
    // over it (one slice every 100 ms), since real agents' timers start whenever each one
    // connected. (All at once, a 30 s burst landed inside a 60 s idle window once or twice
    // depending on timing, and the idle figure swung by half.)
    std::atomic<bool> stop_beats{false};
    std::thread beats([&] {
      const size_t ticks = static_cast<size_t>(std::max(1, o_.heartbeat_s * 10));
      const size_t per_tick = (fleet_->size() + ticks - 1) / ticks;
      auto next = std::chrono::steady_clock::now();
      for (size_t tick = 0; !stop_beats; tick = (tick + 1) % ticks) {
        fleet_->heartbeat(tick * per_tick, (tick + 1) * per_tick);
        next += std::chrono::milliseconds(100);
        std::this_thread::sleep_until(next);
      }
    });
    struct Joiner {
      std::atomic<bool>& stop;
      std::thread& t;
      ~Joiner() {
        stop = true;
        if (t.joinable()) t.join();
      }
    } joiner{stop_beats, beats};
    if (want("idle")) rc |= idle();
    if (want("fanout")) rc |= fanout();
    if (want("throughput")) rc |= throughput();
    if (want("reconnect-storm")) rc |= reconnectStorm();
    stop_beats = true;
    beats.join();
    beats = std::thread();  // the joiner then has nothing to join
    fleet_.reset();
    server_->stop();
    return rc;
  }

 private:
  int fail(const std::string& why) {
    std::cerr << "muster-loadgen: " << why << std::endl;
    return 1;
  }

  // PEM kept on one line of the credentials file.
  static std::string oneLine(std::string pem) {
    std::replace(pem.begin(), pem.end(), '\n', '|');
    return pem;
  }
  static std::string fromOneLine(std::string text) {
    std::replace(text.begin(), text.end(), '|', '\n');
    return text;
  }

  // Enrolls N agents once; credentials (and, for mTLS, keys and client certificates) are
  // saved and reused across runs.
  std::vector<std::pair<std::string, std::string>> identities() {
    const bool mtls = o_.link == "mtls";
    std::string path = o_.work_dir + (mtls ? "/credentials-mtls.txt" : "/credentials.txt");
    std::vector<std::pair<std::string, std::string>> out;
    std::ifstream in(path);
    std::string id, cred, key, cert;
    while (in >> id >> cred && out.size() < static_cast<size_t>(o_.agents)) {
      out.emplace_back(id, cred);
      if (mtls && in >> key >> cert)
        client_certs_.emplace_back(fromOneLine(key), fromOneLine(cert));
    }
    if (out.size() == static_cast<size_t>(o_.agents) &&
        (!mtls || client_certs_.size() == out.size())) {
      return out;
    }
    out.clear();
    client_certs_.assign(mtls ? o_.agents : 0, {});
    auto r = httpRequest("POST", server_->http() + "/api/v1/tokens", token_,
                         R"({"kind":"enroll","uses":-1,"ttl":"1h"})");
    std::string enroll_token(json::parse(r.body).at("token").as_string());
    if (size_t dot = enroll_token.find('.'); dot != std::string::npos) enroll_token.resize(dot);
    agent::ChannelOptions copt;
    copt.target = server_->grpc();
    copt.security = security_;
    auto channel = agent::makeChannel(copt);
    out.resize(o_.agents);
    std::atomic<int> next{0}, failures{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 8; ++w) {
      workers.emplace_back([&] {
        for (int i = next++; i < o_.agents; i = next++) {
          muster::v1::EnrollRequest req;
          req.set_token(enroll_token);
          req.set_agent_id("sim-" + std::to_string(i));
          (*req.mutable_labels())["loadgen"] = "1";
          absl::StatusOr<crypto::KeyAndCert> key = absl::UnavailableError("no mTLS");
          if (mtls) {
            key = crypto::createKeyAndCsr(req.agent_id());
            if (!key.ok()) {
              failures++;
              continue;
            }
            req.set_csr_pem(key->cert_pem);
          }
          auto resp = agent::enroll(channel, req, 30'000);
          if (!resp.ok() || (mtls && resp->client_cert_pem().empty())) {
            failures++;
            continue;
          }
          out[i] = {req.agent_id(), resp->credential()};
          if (mtls) client_certs_[i] = {key->key_pem, resp->client_cert_pem()};
        }
      });
    }
    for (auto& t : workers) t.join();
    if (failures > 0) return {};
    std::ofstream save(path, std::ios::trunc);
    for (size_t i = 0; i < out.size(); ++i) {
      save << out[i].first << " " << out[i].second;
      if (mtls) {
        save << " " << oneLine(client_certs_[i].first) << " " << oneLine(client_certs_[i].second);
      }
      save << "\n";
    }
    return out;
  }

  size_t onlineFromApi() {
    size_t online = 0;
    std::string cursor;
    while (true) {
      auto r = httpRequest("GET",
                           server_->http() + "/api/v1/hosts?status=online&limit=1000" +
                               (cursor.empty() ? "" : "&cursor=" + cursor),
                           token_);
      if (r.status != 200) return online;
      auto v = json::parse(r.body);
      online += v.at("hosts").as_array().size();
      auto* next = v.as_object().if_contains("next_cursor");
      if (!next || !next->is_string() || next->as_string().empty()) return online;
      cursor = std::string(next->as_string());
    }
  }

  int connect() {
    auto t0 = std::chrono::steady_clock::now();
    fleet_->connectAll();
    bool ok = waitUntil([&] { return fleet_->welcomedCount() == host_ids_.size(); }, 600) &&
              waitUntil([&] { return onlineFromApi() == host_ids_.size(); }, 120);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto perAgentKb = [&](const ProcSample& s) {
      return (static_cast<double>(s.rss_bytes) - static_cast<double>(baseline_.rss_bytes)) /
             1024.0 / static_cast<double>(host_ids_.size());
    };
    // RSS the moment the last agent is online still holds the burst's garbage; what an idle
    // fleet costs is measured once the server has had a few quiet seconds (musterd gives
    // free heap pages back after a burst, common/heap_trim.h).
    const double online_kb = perAgentKb(sampleProc(server_->pid()));
    std::this_thread::sleep_for(std::chrono::seconds(o_.settle_seconds));
    auto after = sampleProc(server_->pid());
    double per_agent_kb = perAgentKb(after);
    json::object f{{"agents", o_.agents},
                   {"seconds", secs},
                   {"ok", ok},
                   {"rss_before_mb", baseline_.rss_bytes / 1048576.0},
                   {"rss_after_mb", after.rss_bytes / 1048576.0},
                   {"rss_per_agent_kb", per_agent_kb},
                   {"rss_online_per_agent_kb", online_kb},
                   {"settle_seconds", o_.settle_seconds},
                   {"threads_before", baseline_.threads},
                   {"threads_after", after.threads}};
    char human[320];
    std::snprintf(human, sizeof human,
                  "%d agents online in %.2f s; server RSS %.1f -> %.1f MB (%.1f KB/agent %d s "
                  "later, %.1f when the last came online), threads %d -> %d",
                  o_.agents, secs, baseline_.rss_bytes / 1048576.0, after.rss_bytes / 1048576.0,
                  per_agent_kb, o_.settle_seconds, online_kb, baseline_.threads, after.threads);
    emit("connect", f, human);
    return ok ? 0 : fail("not every agent came online");
  }

  int idle() {
    auto a = sampleProc(server_->pid());
    std::this_thread::sleep_for(std::chrono::seconds(o_.idle_seconds));
    auto b = sampleProc(server_->pid());
    double cpu = 100.0 * (b.cpu_ticks - a.cpu_ticks) / ticksPerSecond() / o_.idle_seconds;
    char human[160];
    std::snprintf(human, sizeof human, "server CPU %.2f %% of one core over %d s, %d agents", cpu,
                  o_.idle_seconds, o_.agents);
    emit("idle", {{"agents", o_.agents}, {"seconds", o_.idle_seconds}, {"cpu_pct", cpu}}, human);
    return 0;
  }

  // One sample of musterd's /metrics (-1 when absent).
  double metric(const std::string& name) {
    auto metrics = httpRequest("GET", server_->http() + "/metrics", token_).body;
    auto pos = metrics.find("\n" + name + " ");
    return pos == std::string::npos ? -1 : std::stod(metrics.substr(pos + name.size() + 2));
  }

  struct Round {
    bool ok = false;
    std::vector<double> latencies_ms;  // per agent: POST sent -> its ResultAck
    double create_ms = 0, total_ms = 0, server_cpu_ms = 0, loadgen_cpu_ms = 0;
    double store_transactions = 0;
  };

  // One no-op command to every agent; latency = POST sent -> that agent's ResultAck (sent by
  // the server only after the result is committed).
  Round fanoutRound() {
    Round round;
    const double txn_before = metric("muster_store_transactions_total");
    auto server_before = sampleProc(server_->pid());
    auto self_before = sampleProc(getpid());
    // As an operator would: a selector, and no per-command list in the reply.
    json::object body{{"argv", json::array{"true"}}, {"selector", "loadgen=1"}};
    std::string payload = json::serialize(body);
    uint64_t acks_before = fleet_->stats().acks.load();
    int64_t t0 = steadyMs();
    auto r =
        httpRequest("POST", server_->http() + "/api/v1/commands?view=summary", token_, payload);
    round.create_ms = static_cast<double>(steadyMs() - t0);
    if (r.status != 201) {
      std::cerr << "create failed: " << r.status << " " << r.body.substr(0, 300) << "\n";
      return round;
    }
    boost::system::error_code ec;
    auto created = json::parse(r.body, ec);
    const json::value* total = nullptr;
    if (!ec && created.is_object()) {
      if (auto* summary = created.as_object().if_contains("summary");
          summary && summary->is_object())
        total = summary->as_object().if_contains("total");
    }
    if (total == nullptr || !total->is_int64() ||
        total->as_int64() != static_cast<int64_t>(host_ids_.size())) {
      std::cerr << "run does not target every simulated agent: " << r.body.substr(0, 300) << "\n";
      return round;
    }
    round.ok = waitUntil(
        [&] { return fleet_->stats().acks.load() - acks_before >= host_ids_.size(); }, 120);
    round.total_ms = static_cast<double>(steadyMs() - t0);
    const double ms_per_tick = 1000.0 / ticksPerSecond();
    round.server_cpu_ms =
        (sampleProc(server_->pid()).cpu_ticks - server_before.cpu_ticks) * ms_per_tick;
    round.loadgen_cpu_ms = (sampleProc(getpid()).cpu_ticks - self_before.cpu_ticks) * ms_per_tick;
    round.store_transactions = metric("muster_store_transactions_total") - txn_before;
    for (int64_t t : fleet_->lastAckMs()) round.latencies_ms.push_back(static_cast<double>(t - t0));
    return round;
  }

  int fanout() {
    json::array rounds;
    std::vector<double> p99s;
    bool all_ok = true;
    for (int i = 0; i < o_.fanout_rounds; ++i) {
      Round r = fanoutRound();
      all_ok = all_ok && r.ok;
      const auto& lat = r.latencies_ms;
      json::object round{{"create_ms", r.create_ms},
                         {"p50_ms", percentile(lat, 0.5)},
                         {"p99_ms", percentile(lat, 0.99)},
                         {"max_ms", percentile(lat, 1.0)},
                         {"total_ms", r.total_ms},
                         {"server_cpu_ms", r.server_cpu_ms},
                         {"loadgen_cpu_ms", r.loadgen_cpu_ms},
                         {"store_transactions", r.store_transactions},
                         {"ok", r.ok}};
      p99s.push_back(percentile(lat, 0.99));
      rounds.push_back(round);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    char human[200];
    std::snprintf(human, sizeof human,
                  "%d agents, %d rounds: median p99 %.0f ms (best %.0f, worst %.0f)", o_.agents,
                  o_.fanout_rounds, percentile(p99s, 0.5), percentile(p99s, 0.0),
                  percentile(p99s, 1.0));
    emit("fanout",
         {{"agents", o_.agents}, {"rounds", rounds}, {"median_p99_ms", percentile(p99s, 0.5)}},
         human);
    return all_ok ? 0 : fail("a fan-out round did not complete");
  }

  int throughput() {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> created{0}, errors{0};
    uint64_t acks_before = fleet_->stats().acks.load();
    std::vector<std::thread> clients;
    auto t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < o_.throughput_clients; ++c) {
      clients.emplace_back([&, c] {
        for (size_t i = c; !stop; i += o_.throughput_clients) {
          std::string body =
              R"({"argv":["true"],"hosts":[")" + host_ids_[i % host_ids_.size()] + R"("]})";
          auto r = httpRequest("POST", server_->http() + "/api/v1/commands", token_, body);
          (r.status == 201 ? created : errors)++;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::seconds(o_.throughput_seconds));
    stop = true;
    for (auto& t : clients) t.join();
    waitUntil([&] { return fleet_->stats().acks.load() - acks_before >= created.load(); }, 60);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    uint64_t done = fleet_->stats().acks.load() - acks_before;
    double rate = done / secs;
    const double batch = metric("muster_store_batch_size");
    const double commit_ms = metric("muster_store_commit_seconds") * 1000;
    char human[220];
    std::snprintf(human, sizeof human,
                  "%.0f commands/s create->dispatch->result->persisted (%llu in %.1f s, %d "
                  "clients, %llu errors); last store batch %.0f, commit %.2f ms",
                  rate, static_cast<unsigned long long>(done), secs, o_.throughput_clients,
                  static_cast<unsigned long long>(errors.load()), batch, commit_ms);
    emit("throughput",
         {{"commands_per_s", rate},
          {"completed", done},
          {"errors", errors.load()},
          {"store_batch_size", batch},
          {"store_commit_ms", commit_ms}},
         human);
    return errors.load() == 0 ? 0 : fail("some creates failed");
  }

  int reconnectStorm() {
    std::array<uint64_t, 17> closed_before{};
    for (size_t c = 0; c < 17; ++c) closed_before[c] = fleet_->stats().closed_by_code[c].load();
    server_->kill9();
    fleet_->resetAttempts();
    auto t0 = std::chrono::steady_clock::now();
    const double tool_cpu0 = selfCpuSeconds();
    waitUntil([&] { return fleet_->welcomedCount() == 0; }, 60);
    auto restart_t0 = std::chrono::steady_clock::now();
    server_->start();
    // From exec to /healthz answering: the part of the storm when there is no server.
    double restart_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - restart_t0).count();
    double peak = 0;
    auto last = sampleProc(server_->pid());
    auto last_t = std::chrono::steady_clock::now();
    bool ok = waitUntil(
        [&] {
          auto now = std::chrono::steady_clock::now();
          double dt = std::chrono::duration<double>(now - last_t).count();
          if (dt >= 0.5) {
            auto s = sampleProc(server_->pid());
            peak = std::max(peak, 100.0 * (s.cpu_ticks - last.cpu_ticks) / ticksPerSecond() / dt);
            last = s;
            last_t = now;
          }
          return fleet_->welcomedCount() == host_ids_.size();
        },
        300);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The restarted server's own CPU for taking the fleet back: with the load tool on the
    // same two cores, the wall time above is partly the tool's; this part is musterd's.
    double server_cpu_s = sampleProc(server_->pid()).cpu_ticks / ticksPerSecond();
    // The load tool's own CPU over the storm (its 10,000 clients' reconnects and handshakes
    // run on the same cores as musterd).
    const double tool_cpu_s = selfCpuSeconds() - tool_cpu0;
    // Streams of the restarted server by TLS handshake (0 and 0 in plaintext; -1: a musterd
    // without the metric).
    double resumed = metric("muster_agent_tls_streams_total{handshake=\"resumed\"}");
    double full = metric("muster_agent_tls_streams_total{handshake=\"full\"}");
    char human[480];
    std::snprintf(human, sizeof human,
                  "%d agents re-registered in %.2f s after kill -9 + restart; peak server CPU "
                  "%.0f %%; restart %.2f s; server CPU %.1f s (%.2f ms per agent); %llu connection "
                  "attempts, at "
                  "most %llu per agent, shortest retry gap %lld ms, %llu sooner than the backoff "
                  "allows; TLS sessions resumed %.0f, full handshakes %.0f; load tool CPU "
                  "%.1f s",
                  o_.agents, secs, peak, restart_s, server_cpu_s, 1000.0 * server_cpu_s / o_.agents,
                  static_cast<unsigned long long>(fleet_->stats().connect_attempts.load()),
                  static_cast<unsigned long long>(fleet_->maxAttemptsPerAgent()),
                  static_cast<long long>(fleet_->minRetryGapMs()),
                  static_cast<unsigned long long>(fleet_->stats().early_retries.load()), resumed,
                  full, tool_cpu_s);
    emit("reconnect-storm",
         {{"agents", o_.agents},
          {"seconds", secs},
          {"peak_cpu_pct", peak},
          {"server_cpu_s", server_cpu_s},
          {"restart_s", restart_s},
          {"attempts", fleet_->stats().connect_attempts.load()},
          {"max_attempts_per_agent", fleet_->maxAttemptsPerAgent()},
          {"min_retry_gap_ms", fleet_->minRetryGapMs()},
          {"early_retries", fleet_->stats().early_retries.load()},
          {"tls_resumed", resumed},
          {"tls_full", full},
          {"tool_cpu_s", tool_cpu_s},
          {"ok", ok}},
         human);
    std::string codes;
    for (size_t c = 0; c < 17; ++c) {
      uint64_t n = fleet_->stats().closed_by_code[c].load() - closed_before[c];
      if (n > 0)
        codes += " " + absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) + "=" +
                 std::to_string(n);
    }
    std::cerr << "[reconnect-storm] streams ended by status:" << codes << "\n";
    if (!ok) return fail("not every agent re-registered");
    if (fleet_->stats().early_retries.load() > 0) {
      return fail("an agent retried sooner than its backoff allows");
    }
    return 0;
  }

  // Every simulated agent gets exactly one command and its result is persisted exactly once.
  int smoke() {
    Round round = fanoutRound();
    if (!round.ok) return fail("fan-out did not complete");
    for (uint64_t n : fleet_->commandsPerAgent()) {
      if (n != 1) return fail("an agent received " + std::to_string(n) + " commands, want 1");
    }
    auto r = httpRequest("GET", server_->http() + "/api/v1/commands?limit=1000", token_);
    auto list = json::parse(r.body).at("commands").as_array();
    std::map<std::string, int> per_host;
    for (const auto& c : list) {
      if (c.at("state").as_string() != "succeeded") return fail("a command did not succeed");
      per_host[std::string(c.at("host_id").as_string())]++;
    }
    if (per_host.size() != host_ids_.size()) return fail("not every host has a stored result");
    for (const auto& [h, n] : per_host) {
      if (n != 1) return fail(h + " has " + std::to_string(n) + " stored results");
    }
    emit("smoke",
         {{"agents", o_.agents}, {"p99_ms", percentile(round.latencies_ms, 0.99)}, {"ok", true}},
         std::to_string(o_.agents) + " agents: one command each, every result stored once");
    std::cout << "1 passed, 0 failed" << std::endl;
    fleet_.reset();
    server_->stop();
    return 0;
  }

  Options o_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<SimFleet> fleet_;
  std::string token_;
  agent::LinkSecurity security_;
  std::vector<std::pair<std::string, std::string>> client_certs_;  // mTLS, by agent index
  std::vector<std::string> host_ids_;
  ProcSample baseline_;
};

}  // namespace
}  // namespace muster::bench

int main(int argc, char** argv) {
  // Debian's abseil checks every Mutex acquisition for lock-order cycles; with 10,000 gRPC
  // channels that alone took ~10 % of the machine. Same as musterd and muster-agent.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Thousands of channels are dropped and made again in a reconnect storm; glibc would hand
  // the freed heap back and fault it in again page by page (a third of the load tool's CPU
  // in a 10,000-agent storm). Keep it: this process stands in for 10,000 machines.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
  muster::bench::Options o;
  CLI::App app{"muster-loadgen: simulated agents against a real musterd"};
  app.add_option("--musterd", o.musterd, "path to the musterd binary")->required();
  app.add_option("--work-dir", o.work_dir, "data dir and saved credentials")->capture_default_str();
  app.add_option("--agents", o.agents, "simulated agents")->capture_default_str();
  app.add_option("--scenario", o.scenario,
                 "smoke, connect, idle, fanout, throughput, reconnect-storm, several of them "
                 "separated by commas, or all")
      ->capture_default_str();
  app.add_option("--heartbeat-seconds", o.heartbeat_s)->capture_default_str();
  app.add_option("--musterd-arg", o.musterd_args,
                 "one more musterd argument, e.g. --musterd-arg=--reconnect-rate=2000 "
                 "(repeatable)");
  app.add_option("--link", o.link,
                 "plaintext (musterd --insecure-plaintext), tls, mtls (--require-client-certs, "
                 "each agent with its client certificate), or old (a musterd from before TLS, "
                 "plaintext by default)")
      ->check(CLI::IsMember({"plaintext", "tls", "mtls", "old"}))
      ->capture_default_str();
  app.add_option("--tls-resume", o.tls_resume,
                 "agents resume their TLS session on reconnect (true/false)")
      ->capture_default_str();
  app.add_option("--fanout-rounds", o.fanout_rounds)->capture_default_str();
  app.add_option("--idle-seconds", o.idle_seconds)->capture_default_str();
  app.add_option("--settle-seconds", o.settle_seconds,
                 "after connect: seconds to wait before the memory figure")
      ->capture_default_str()
      ->check(CLI::Range(0, 600));
  app.add_option("--throughput-seconds", o.throughput_seconds)->capture_default_str();
  app.add_option("--throughput-clients", o.throughput_clients)->capture_default_str();
  app.add_option("--addresses", o.addresses,
                 "spread agents over 127.0.0.1..127.0.0.N (past 28k ports per address)")
      ->capture_default_str()
      ->check(CLI::Range(1, 250));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "muster-loadgen: " << e.what() << "\n";
    return 2;
  }
  try {
    return muster::bench::LoadGen(o).run();
  } catch (const std::exception& e) {
    std::cerr << "muster-loadgen: " << e.what() << "\n";
    return 1;
  }
}
