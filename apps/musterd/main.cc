// musterd: wiring only. Parses flags (or a TOML config), builds the store, core and
// transports, runs until SIGINT/SIGTERM, then drains.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/byte_size.h"
#include "common/duration.h"
#include "common/fmt_absl.h"
#include "common/fs.h"
#include "common/heap_trim.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/net.h"
#include "common/worker_pool.h"
#include "crypto/server_identity.h"
#include "server/core/artifact_service.h"
#include "server/core/control_plane.h"
#include "server/grpc/agent_link_server.h"
#include "server/http/http_server.h"
#include "server/http/install.h"
#include "store/fs/fs_artifact_store.h"
#include "store/sqlite/sqlite_store.h"

namespace {
using namespace muster;

struct Flags {
  std::string data_dir = "./muster-data";
  std::string http_listen = "127.0.0.1:7080";
  std::vector<std::string> grpc_listen = {"127.0.0.1:7443"};
  std::string heartbeat_interval = "10s";
  std::string default_expiry = "24h";
  std::string events_retention = "90d";   // 0 or "forever": never swept
  std::string artifact_retention = "7d";  // 0 or "forever": never swept
  std::string artifact_quota = "80%";     // of the data dir's filesystem, or a size
  std::string artifact_max_bytes = "4GiB";
  std::vector<std::string> artifact_purpose_max;  // purpose=size
  int64_t artifact_upload_slots = 2;
  int64_t artifact_download_slots = 2;
  int64_t artifact_attempts = 3;
  std::string artifact_header_timeout = "5s";
  std::string artifact_progress_timeout = "30s";
  std::string artifact_transfer_timeout = "10m";
  int64_t max_agents = 0;  // 0: the descriptor limit minus a reserve
  int64_t reconnect_rate = 1000;
  // Bounds on what agents can fill (docs/architecture.md, "Bounds").
  std::string stuck_write_timeout = "60s";
  std::string idle_connection_timeout = "30s";
  int64_t max_send_queue = 4096;
  int64_t max_pending_enrolls = 256;
  int64_t max_store_backlog = 200'000;
  std::vector<std::string> agent_label_keys;  // empty: agents may set any label key
  // Bounds on what HTTP clients can fill (docs/api.md, "Limits"); HttpOptions' defaults.
  int64_t http_max_connections = 1024;
  int64_t http_max_followers = 512;
  int64_t http_follower_buffer_bytes = 8 << 20;
  int64_t http_max_body_bytes = 1 << 20;
  std::string http_header_timeout = "10s";
  std::string http_body_timeout = "30s";
  std::string http_idle_timeout = "60s";
  std::string log_format = "text";
  std::string log_level = "info";
  bool insecure_plaintext = false;
  // TLS (docs/architecture.md, "Trust"): names in musterd's own server certificate, or the
  // operator's certificate, key and CA.
  std::vector<std::string> advertise;
  std::string tls_cert, tls_key, tls_ca, tls_ca_key;
  int64_t tls_cert_days = 90;
  int64_t tls_renew_before_days = 30;
  std::string tls_refresh_interval = "1h";
  // mTLS: lifetime of agents' client certificates, and whether streams need one.
  std::string client_cert_lifetime = "30d";
  // The muster-agent binary the install one-liner fetches; empty: beside musterd.
  std::string agent_binary;
  bool require_client_certs = false;
};

// The muster-agent that GET /install/muster-agent serves: --agent-binary, else one beside
// musterd (an installed pair) or in the build tree's layout; "" when there is none.
std::string agentBinary(const std::string& flag) {
  if (!flag.empty()) return std::filesystem::absolute(flag).string();
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (const auto& candidate :
       {self.parent_path() / "muster-agent",
        self.parent_path().parent_path() / "muster-agent" / "muster-agent"}) {
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate.string();
  }
  return "";
}

// The names musterd's own server certificate carries: --advertise, else this host's name,
// localhost and the listen addresses (a wildcard stands for every interface's address).
std::vector<std::string> certificateNames(const Flags& flags) {
  if (!flags.advertise.empty()) return flags.advertise;
  std::vector<std::string> names;
  auto add = [&](const std::string& name) {
    if (!name.empty() && std::find(names.begin(), names.end(), name) == names.end()) {
      names.push_back(name);
    }
  };
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) add(host);
  add("localhost");
  std::vector<std::string> listens = flags.grpc_listen;
  listens.push_back(flags.http_listen);
  bool wildcard = false;
  for (const auto& listen : listens) {
    auto hp = common::splitHostPort(listen);
    if (!hp.ok()) continue;
    if (hp->host.empty() || hp->host == "0.0.0.0" || hp->host == "::") {
      wildcard = true;
    } else {
      add(hp->host);
    }
  }
  add("127.0.0.1");
  add("::1");
  if (wildcard) {
    ifaddrs* addrs = nullptr;
    if (getifaddrs(&addrs) == 0) {
      for (ifaddrs* a = addrs; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr) continue;
        char buf[INET6_ADDRSTRLEN] = {0};
        if (a->ifa_addr->sa_family == AF_INET) {
          inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf,
                    sizeof buf);
        } else if (a->ifa_addr->sa_family == AF_INET6) {
          auto* in6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
          if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;  // needs a zone id
          inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        } else {
          continue;
        }
        add(buf);
      }
      freeifaddrs(addrs);
    }
  }
  return names;
}

// The HTTP flags as HttpOptions; false (after saying why) when one is out of range.
bool httpOptionsFrom(const Flags& flags, server::http::HttpOptions* out) {
  out->listen = flags.http_listen;
  out->max_connections = static_cast<size_t>(flags.http_max_connections);
  out->sse_max_followers = static_cast<size_t>(flags.http_max_followers);
  out->sse_max_queued_bytes = static_cast<uint64_t>(flags.http_follower_buffer_bytes);
  out->max_body_bytes = static_cast<uint64_t>(flags.http_max_body_bytes);
  if (flags.http_max_followers > flags.http_max_connections) {
    std::cerr << "musterd: --http-max-followers " << flags.http_max_followers
              << " is above --http-max-connections " << flags.http_max_connections
              << ": event streams are connections too; lower it or raise the other\n";
    return false;
  }
  for (auto [flag, text, ms, max_ms] :
       {std::tuple{"--http-header-timeout", &flags.http_header_timeout, &out->header_timeout_ms,
                   10 * common::kMinuteMs},
        std::tuple{"--http-body-timeout", &flags.http_body_timeout, &out->body_timeout_ms,
                   common::kHourMs},
        std::tuple{"--http-idle-timeout", &flags.http_idle_timeout, &out->idle_timeout_ms,
                   common::kHourMs}}) {
    auto parsed = common::parseDurationMsInRange(flag, *text, 100, max_ms);
    if (!parsed.ok()) {
      std::cerr << "musterd: " << parsed.status().message() << "\n";
      return false;
    }
    *ms = *parsed;
  }
  return true;
}

int run(const Flags& flags) {
  // The agent link carries the heartbeat interval as uint32 milliseconds: keep far below.
  auto heartbeat = common::parseDurationMsInRange("--heartbeat-interval", flags.heartbeat_interval,
                                                  100, common::kHourMs);
  auto expiry = common::parseDurationMsInRange("--default-expiry", flags.default_expiry,
                                               common::kSecondMs, common::kMaxExpiryMs);
  // The janitor sweeps hourly: less than a day of audit log would be gone before anyone
  // looked at it.
  auto retention =
      flags.events_retention == "0" || flags.events_retention == "forever"
          ? absl::StatusOr<int64_t>(0)
          : common::parseDurationMsInRange("--events-retention", flags.events_retention,
                                           common::kDayMs, common::kMaxDurationMs);
  auto artifact_retention =
      flags.artifact_retention == "0" || flags.artifact_retention == "forever"
          ? absl::StatusOr<int64_t>(0)
          : common::parseDurationMsInRange("--artifact-retention", flags.artifact_retention,
                                           common::kHourMs, common::kMaxDurationMs);
  auto header_timeout = common::parseDurationMsInRange(
      "--artifact-header-timeout", flags.artifact_header_timeout, 100, common::kHourMs);
  auto progress_timeout = common::parseDurationMsInRange(
      "--artifact-progress-timeout", flags.artifact_progress_timeout, 100, common::kHourMs);
  auto transfer_timeout =
      common::parseDurationMsInRange("--artifact-transfer-timeout", flags.artifact_transfer_timeout,
                                     common::kSecondMs, common::kDayMs);
  for (const auto* parsed : {&heartbeat, &expiry, &retention, &artifact_retention, &header_timeout,
                             &progress_timeout, &transfer_timeout}) {
    if (!parsed->ok()) {
      std::cerr << "musterd: " << parsed->status().message() << "\n";
      return 2;
    }
  }
  if (!flags.agent_binary.empty() && !std::filesystem::is_regular_file(flags.agent_binary)) {
    std::cerr << "musterd: --agent-binary " << flags.agent_binary
              << ": not a file (give the muster-agent binary the installer serves)\n";
    return 2;
  }
  auto tls_refresh = common::parseDurationMsInRange(
      "--tls-refresh-interval", flags.tls_refresh_interval, common::kSecondMs, common::kDayMs);
  if (!tls_refresh.ok()) {
    std::cerr << "musterd: " << tls_refresh.status().message() << "\n";
    return 2;
  }
  // Agents renew when a third of the lifetime is left, checking at every heartbeat.
  auto client_cert_lifetime =
      common::parseDurationMsInRange("--client-cert-lifetime", flags.client_cert_lifetime,
                                     10 * common::kSecondMs, 825 * common::kDayMs);
  if (!client_cert_lifetime.ok()) {
    std::cerr << "musterd: " << client_cert_lifetime.status().message() << "\n";
    return 2;
  }
  if (flags.require_client_certs && flags.insecure_plaintext) {
    std::cerr << "musterd: --require-client-certs needs TLS: drop --insecure-plaintext\n";
    return 2;
  }
  if (flags.require_client_certs && !flags.tls_ca.empty() && flags.tls_ca_key.empty()) {
    std::cerr << "musterd: --require-client-certs with --tls-ca needs --tls-ca-key, to sign "
                 "agents' client certificates\n";
    return 2;
  }
  // Listen addresses are checked before anything is created (a typo must not leave a CA).
  std::vector<std::pair<const char*, std::string>> listens = {{"--http-listen", flags.http_listen}};
  for (const auto& l : flags.grpc_listen) listens.emplace_back("--grpc-listen", l);
  for (const auto& [flag, listen] : listens) {
    auto hp = common::splitHostPort(listen);
    absl::Status st = hp.status();
    if (hp.ok() && !hp->host.empty()) {
      auto resolved = common::resolveHost(hp->host);
      st = resolved.status();
    }
    if (!st.ok()) {
      std::cerr << "musterd: " << flag << " " << listen << ": " << st.message() << "\n";
      return 2;
    }
  }
  if (flags.insecure_plaintext &&
      !(flags.tls_cert.empty() && flags.tls_key.empty() && flags.tls_ca.empty())) {
    std::cerr << "musterd: --insecure-plaintext turns TLS off: drop it or the --tls-* flags\n";
    return 2;
  }
  if (flags.tls_renew_before_days >= flags.tls_cert_days) {
    std::cerr << "musterd: --tls-renew-before-days must be below --tls-cert-days\n";
    return 2;
  }
  server::http::HttpOptions http_options;
  if (!httpOptionsFrom(flags, &http_options)) return 2;
  if (auto st = common::makeDirs(flags.data_dir, 0700); !st.ok()) {
    spdlog::error("cannot create data dir: {}", st.message());
    return 1;
  }
  std::shared_ptr<crypto::ServerIdentity> tls;
  if (flags.insecure_plaintext) {
    spdlog::warn(
        "--insecure-plaintext: agents and the REST API are served WITHOUT TLS; credentials, "
        "commands and output cross the network in the clear");
  } else {
    crypto::ServerIdentity::Options tls_options;
    tls_options.dir = flags.data_dir + "/tls";
    tls_options.names = certificateNames(flags);
    tls_options.cert_file = flags.tls_cert;
    tls_options.key_file = flags.tls_key;
    tls_options.ca_file = flags.tls_ca;
    tls_options.ca_key_file = flags.tls_ca_key;
    tls_options.server_cert_days = static_cast<int>(flags.tls_cert_days);
    tls_options.renew_before_days = static_cast<int>(flags.tls_renew_before_days);
    auto opened = crypto::ServerIdentity::open(tls_options, common::SystemClock::instance());
    if (!opened.ok()) {
      spdlog::error("TLS: {}", opened.status().message());
      return 1;
    }
    tls = std::move(*opened);
    spdlog::info("TLS on the agent port and the REST API; CA sha256 {} (enrollment tokens pin it)",
                 tls->current()->ca_sha256);
  }
  auto store = store::SqliteStore::open(flags.data_dir + "/muster.db");
  if (!store.ok()) {
    spdlog::error("cannot open the store: {}", store.status().message());
    return 1;
  }
  // "0" turns a timeout off.
  auto timeoutOrOff = [](const std::string& text) -> absl::StatusOr<int64_t> {
    if (text == "0") return 0;
    return common::parseDurationMs(text);
  };
  auto stuck_write = timeoutOrOff(flags.stuck_write_timeout);
  auto idle_connection = timeoutOrOff(flags.idle_connection_timeout);
  if (!stuck_write.ok() || !idle_connection.ok() || *idle_connection > 24 * 3600'000LL ||
      *stuck_write > 24 * 3600'000LL) {
    std::cerr << "musterd: invalid --stuck-write-timeout or --idle-connection-timeout (a "
                 "duration up to 24h, e.g. 60s; 0 turns the check off)\n";
    return 2;
  }
  server::CoreConfig config;
  config.max_store_backlog = static_cast<size_t>(flags.max_store_backlog);
  for (const auto& key : flags.agent_label_keys) {
    if (!common::isValidLabelKey(key)) {
      std::cerr << "musterd: invalid --agent-label-keys key '" << key
                << "': keys are [A-Za-z0-9._/-]{1,63}\n";
      return 2;
    }
    config.agent_label_keys.insert(key);
  }
  // Redelivery stays well inside the send-queue bound (else a host with many open commands
  // would overflow it on every reconnect).
  config.redelivery_window_messages = std::min<size_t>(
      config.redelivery_window_messages, static_cast<size_t>(flags.max_send_queue) / 2);
  config.heartbeat_interval_ms = *heartbeat;
  config.default_expiry_ms = *expiry;
  config.events_retention_ms = *retention;
  config.reconnect_rate_per_s = flags.reconnect_rate;
  if (tls) config.ca_sha256 = tls->current()->ca_sha256;
  config.require_client_certs = flags.require_client_certs;
  // Every agent link is a descriptor: raise the soft limit to the hard one and keep a reserve
  // for the store, HTTP clients and logs, so the agent port never runs the process dry.
  rlimit fds{};
  int64_t fd_limit = 1024;
  if (getrlimit(RLIMIT_NOFILE, &fds) == 0) {
    fds.rlim_cur = fds.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &fds) != 0) {
      spdlog::warn("cannot raise the descriptor limit: {}", std::strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0) {
      fd_limit = fds.rlim_cur == RLIM_INFINITY
                     ? (1 << 20)
                     : static_cast<int64_t>(std::min<rlim_t>(fds.rlim_cur, 1 << 30));
    }
  }
  int64_t fd_budget = fd_limit - 1000;
  config.max_agents = static_cast<size_t>(std::max<int64_t>(
      100, flags.max_agents > 0 ? std::min(flags.max_agents, fd_budget) : fd_budget));
  spdlog::info("accepting up to {} agents (descriptor limit {})", config.max_agents, fd_limit);
  common::WorkerPool blocking(4, "musterd-work");
  common::WorkerPool slow_path(1, "musterd-slow");
  common::WorkerPool fanout(2, "musterd-fanout");
  common::WorkerPool janitor(1, "musterd-janitor");
  server::ControlPlane plane(**store, slow_path, common::SystemClock::instance(), config);
  // Artifacts: content-addressed under DATA/artifacts, admitted per command expectation.
  server::ArtifactConfig artifact_config;
  store::fs::FsArtifactStoreOptions artifact_store_options{.dir = flags.data_dir + "/artifacts"};
  {
    auto max = common::parseByteSize("--artifact-max-bytes", flags.artifact_max_bytes);
    if (!max.ok()) {
      std::cerr << "musterd: " << max.status().message() << "\n";
      return 2;
    }
    artifact_config.max_artifact_bytes = *max;
    for (const auto& item : flags.artifact_purpose_max) {
      size_t eq = item.find('=');
      model::ArtifactPurpose purpose{};
      auto size = common::parseByteSize("--artifact-purpose-max",
                                        eq == std::string::npos ? "" : item.substr(eq + 1));
      if (eq == std::string::npos || !model::parseArtifactPurpose(item.substr(0, eq), &purpose) ||
          !size.ok()) {
        std::cerr << "musterd: --artifact-purpose-max " << item
                  << ": give PURPOSE=SIZE, e.g. package=8GiB (purposes: logs, bundle, file, "
                     "package, shipment)\n";
        return 2;
      }
      artifact_config.max_bytes_by_purpose[purpose] = *size;
    }
    const std::string& quota = flags.artifact_quota;
    if (!quota.empty() && quota.back() == '%') {
      double pct = 0;
      if (!absl::SimpleAtod(quota.substr(0, quota.size() - 1), &pct) || pct <= 0 || pct > 100) {
        std::cerr << "musterd: --artifact-quota " << quota
                  << ": give a percentage of the data dir's filesystem (1-100%) or a size\n";
        return 2;
      }
      artifact_store_options.quota_fraction = pct / 100;
    } else {
      auto bytes = common::parseByteSize("--artifact-quota", quota);
      if (!bytes.ok() || *bytes == 0) {
        std::cerr << "musterd: --artifact-quota " << quota
                  << ": give a percentage of the data dir's filesystem (1-100%) or a size\n";
        return 2;
      }
      artifact_store_options.quota_bytes = *bytes;
    }
  }
  artifact_config.retention_ms = *artifact_retention;
  artifact_config.upload_slots_per_agent = static_cast<size_t>(flags.artifact_upload_slots);
  artifact_config.download_slots_per_agent = static_cast<size_t>(flags.artifact_download_slots);
  artifact_config.max_attempts = static_cast<int>(flags.artifact_attempts);
  artifact_config.header_timeout_ms = *header_timeout;
  artifact_config.progress_timeout_ms = *progress_timeout;
  artifact_config.transfer_timeout_ms = *transfer_timeout;
  store::fs::FsArtifactStore artifact_store(artifact_store_options,
                                            common::SystemClock::instance());
  server::ArtifactService artifacts(artifact_store, plane.commands(),
                                    common::SystemClock::instance(), artifact_config);
  plane.setArtifacts(&artifacts);
  plane.commands().setArtifactResolver(
      [&artifacts](std::vector<model::ArtifactExpectation>& e) { return artifacts.resolve(e); });
  plane.commands().setResultCheck(
      [&artifacts](const std::string& command_id) { return artifacts.missingUploads(command_id); });
  if (artifact_config.retention_ms > 0) {
    plane.janitor().add(server::SweepTask{.name = "artifacts",
                                          .retention_ms = artifact_config.retention_ms,
                                          .sweep_batch =
                                              [&artifacts](int64_t cutoff_ms, int64_t max_rows) {
                                                return artifacts.sweepBatch(cutoff_ms, max_rows);
                                              },
                                          .batch_rows = 100});
  }
  plane.commands().setFanoutExecutor(&fanout);
  plane.janitor().setExecutor(&janitor);
  if (tls && tls->canSignClients()) {
    // Agents' CSRs are signed with musterd's CA for the agent id they enroll as.
    plane.enrollment().setCertificateSigner(
        [tls, lifetime_s = *client_cert_lifetime / 1000](
            const std::string& csr_pem,
            const std::string& agent_id) -> absl::StatusOr<server::IssuedCertificate> {
          auto pem = tls->signClient(csr_pem, agent_id, lifetime_s);
          if (!pem.ok()) return pem.status();
          auto info = crypto::inspectCert(*pem);
          if (!info.ok()) return info.status();
          return server::IssuedCertificate{.cert_pem = *std::move(pem),
                                           .sha256_hex = info->sha256_hex,
                                           .serial_hex = info->serial_hex,
                                           .not_after_ms = info->not_after_s * 1000};
        });
  }
  if (auto st = plane.start(); !st.ok()) {
    spdlog::error("cannot load state: {}", st.message());
    return 1;
  }
  if (auto st = artifacts.start(); !st.ok()) {
    spdlog::error("cannot open the artifact store in {}/artifacts: {}", flags.data_dir,
                  st.message());
    return 1;
  }
  std::string admin_token_path = flags.data_dir + "/admin.token";
  if (auto st = plane.auth().bootstrapAdmin(admin_token_path); !st.ok()) {
    spdlog::error("cannot set up the admin API token in {}: {}", admin_token_path, st.message());
    return 1;
  }
  spdlog::info("admin API token: {} (mode 0600; create more with `muster token create --role`)",
               std::filesystem::absolute(admin_token_path).string());
  server::grpcadapter::AgentLinkOptions link_options;
  link_options.listen = flags.grpc_listen;
  // Connections (with or without a Hello yet) stop being accepted this close to the limit;
  // what is left serves the store, HTTP clients and logs.
  link_options.fd_ceiling = static_cast<int>(fd_limit - std::min<int64_t>(256, fd_limit / 4));
  link_options.stuck_write_timeout_ms = *stuck_write;
  link_options.max_connection_idle_ms = *idle_connection;
  link_options.max_send_queue_messages = static_cast<size_t>(flags.max_send_queue);
  link_options.max_pending_enrolls = static_cast<size_t>(flags.max_pending_enrolls);
  link_options.tls = tls;
  link_options.artifacts = &artifacts;
  http_options.tls = tls;
  auto link = server::grpcadapter::AgentLinkServer::start(plane, blocking, link_options);
  if (!link.ok()) {
    spdlog::error("{}", link.status().message());
    return 1;
  }
  {
    auto install = std::make_shared<server::http::AgentInstall>();
    install->binary_path = agentBinary(flags.agent_binary);
    install->agent_port = (*link)->port();
    if (auto hp = common::splitHostPort(flags.http_listen); hp.ok()) install->http_port = hp->port;
    install->public_name = certificateNames(flags).front();
    install->tls = tls;
    if (install->binary_path.empty()) {
      spdlog::info(
          "no muster-agent binary beside musterd: the install one-liner is off "
          "(--agent-binary PATH turns it on)");
    }
    http_options.install = std::move(install);
  }
  auto http = server::http::HttpServer::start(plane, blocking, http_options);
  if (!http.ok()) {
    spdlog::error("{}", http.status().message());
    return 1;
  }
  spdlog::info("musterd ready: API {}://{}:{} agents {}:{} ({}) data {}", tls ? "https" : "http",
               flags.http_listen.substr(0, flags.http_listen.rfind(':')), (*http)->port(),
               flags.grpc_listen[0].substr(0, flags.grpc_listen[0].rfind(':')), (*link)->port(),
               tls ? "TLS" : "plaintext", std::filesystem::absolute(flags.data_dir).string());
  // One line for scripts and tests that started us on port 0.
  std::cout << "musterd listening http=" << (*http)->port() << " grpc=" << (*link)->port()
            << std::endl;

  std::atomic<bool> stop{false};
  std::mutex tick_mu;
  std::condition_variable tick_cv;
  std::thread ticker([&] {
    std::unique_lock lock(tick_mu);
    int64_t next_tls_refresh = common::SystemClock::instance().steadyMs() + *tls_refresh;
    // After a burst of connections settles (a reconnect storm, a fleet coming up), the holes
    // its handshakes left are given back to the kernel (docs/benchmarks.md: ~3 KB per TLS agent).
    common::HeapTrimPolicy trim_policy;
    const auto& streams_opened = plane.commands().metrics().streams_opened;
    while (!tick_cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return stop.load(); })) {
      plane.tick();
      artifacts.tick();
      int64_t now = common::SystemClock::instance().steadyMs();
      if (trim_policy.due(streams_opened.load(std::memory_order_relaxed), now)) {
        spdlog::debug("gave free heap pages back after a burst of connections in {:.1f} ms",
                      common::trimHeap());
      }
      if (tls && now >= next_tls_refresh) {
        // Renew the server certificate before it expires (or reload the operator's files):
        // new handshakes get the new one, links already up are not dropped.
        next_tls_refresh = now + *tls_refresh;
        if (auto renewed = tls->refresh(); !renewed.ok()) {
          spdlog::error("TLS: cannot renew the server certificate: {} (retrying in {})",
                        renewed.status().message(), flags.tls_refresh_interval);
        }
      }
    }
  });

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
  plane.stopAccepting();
  plane.janitor().stop();
  (*http)->shutdown();
  (*link)->shutdown(2000);
  {
    std::lock_guard lock(tick_mu);
    stop = true;
  }
  tick_cv.notify_all();
  ticker.join();
  plane.flush();
  slow_path.shutdown();
  fanout.shutdown();
  janitor.shutdown();
  blocking.shutdown();
  if (auto st = (*store)->flush(); !st.ok()) spdlog::error("final flush: {}", st.message());
  spdlog::info("musterd stopped");
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  // gRPC 1.51's "tcp_read_chunks" experiment reads into fixed 8 KB slices, one of them held
  // by every idle agent connection. Without it a read starts at 1 KB (the agent port's
  // GRPC_ARG_TCP_READ_CHUNK_SIZE) and grows with the traffic: 5 KB less per agent at
  // 10,000 agents (docs/benchmarks.md). Set before gRPC reads its configuration; an
  // operator's own GRPC_EXPERIMENTS wins.
  setenv("GRPC_EXPERIMENTS", "-tcp_read_chunks", /*overwrite=*/0);
  // Two malloc arenas instead of glibc's 8 per core: every connection's handshake leaves
  // short-lived buffers between long-lived ones, and fewer arenas leave fewer holes (about
  // 4 KB less per TLS agent at 4,000 agents, docs/benchmarks.md); small allocations stay in
  // per-thread caches. An operator's MALLOC_ARENA_MAX wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Signals are taken by sigwait in main; every thread created later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app{"musterd: the Muster control plane"};
  app.set_config("--config", "", "TOML file with any of the flags below (flag names as keys)");
  app.allow_config_extras(CLI::config_extras_mode::error);
  Flags flags;
  app.add_option("--data-dir", flags.data_dir, "SQLite database, admin token, artifacts")
      ->capture_default_str();
  app.add_option("--http-listen", flags.http_listen, "REST API and web UI, HOST:PORT")
      ->capture_default_str();
  app.add_option("--grpc-listen", flags.grpc_listen,
                 "agent link, HOST:PORT (repeatable: e.g. 127.0.0.1 and 127.0.0.2 on one port "
                 "give agents twice the ephemeral ports)")
      ->capture_default_str();
  app.add_option("--heartbeat-interval", flags.heartbeat_interval,
                 "agents heartbeat this often; 3 missed mark a host offline")
      ->capture_default_str();
  app.add_option("--max-agents", flags.max_agents,
                 "live agent links at most (default and ceiling: descriptor limit - 1000)");
  app.add_option("--reconnect-rate", flags.reconnect_rate,
                 "agents per second to take back after a restart: agents spread their first "
                 "reconnect over (enrolled hosts / this) seconds, 1-60 s (with "
                 "--require-client-certs the default is 250)")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--default-expiry", flags.default_expiry,
                 "how long a command waits for an offline host")
      ->capture_default_str();
  app.add_option("--events-retention", flags.events_retention,
                 "audit events are kept this long (at least 1d), swept hourly; 0 or forever "
                 "keeps them all")
      ->capture_default_str();
  app.add_option("--artifact-retention", flags.artifact_retention,
                 "artifacts are kept this long (at least 1h; pinned ones and those an open "
                 "command needs are kept), swept hourly; 0 or forever keeps them all")
      ->capture_default_str();
  app.add_option("--artifact-quota", flags.artifact_quota,
                 "total size of stored artifacts: a percentage of the data dir's filesystem "
                 "or a size (500GiB)")
      ->capture_default_str();
  app.add_option("--artifact-max-bytes", flags.artifact_max_bytes, "largest artifact accepted")
      ->capture_default_str();
  app.add_option("--artifact-purpose-max", flags.artifact_purpose_max,
                 "largest artifact of one purpose, PURPOSE=SIZE (repeatable; package=8GiB)");
  app.add_option("--artifact-upload-slots", flags.artifact_upload_slots,
                 "uploads one agent may run at once")
      ->check(CLI::Range(int64_t{1}, int64_t{64}))
      ->capture_default_str();
  app.add_option("--artifact-download-slots", flags.artifact_download_slots,
                 "downloads one agent may run at once")
      ->check(CLI::Range(int64_t{1}, int64_t{64}))
      ->capture_default_str();
  app.add_option("--artifact-attempts", flags.artifact_attempts,
                 "transfers a command may attempt per expected artifact")
      ->check(CLI::Range(int64_t{1}, int64_t{100}))
      ->capture_default_str();
  app.add_option("--artifact-header-timeout", flags.artifact_header_timeout,
                 "a transfer call must send its header within this")
      ->capture_default_str();
  app.add_option("--artifact-progress-timeout", flags.artifact_progress_timeout,
                 "a transfer with no chunk received (or sent and read) this long is cut off")
      ->capture_default_str();
  app.add_option("--artifact-transfer-timeout", flags.artifact_transfer_timeout,
                 "a transfer taking longer than this is cut off")
      ->capture_default_str();
  app.add_option("--stuck-write-timeout", flags.stuck_write_timeout,
                 "an agent stream whose write makes no progress this long is cancelled (0: off)")
      ->capture_default_str();
  app.add_option("--idle-connection-timeout", flags.idle_connection_timeout,
                 "an agent connection with no stream open this long is closed (0: off)")
      ->capture_default_str();
  app.add_option("--max-send-queue", flags.max_send_queue,
                 "messages queued for one agent before its stream ends (it reconnects)")
      ->check(CLI::Range(int64_t{16}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--max-pending-enrolls", flags.max_pending_enrolls,
                 "Enroll calls waiting for a worker before more get RESOURCE_EXHAUSTED")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--agent-label-keys", flags.agent_label_keys,
                 "label keys agents may set for themselves, comma-separated (default: any); "
                 "labels from an enrollment token or an operator are never replaced by agents")
      ->delimiter(',');
  app.add_option("--max-store-backlog", flags.max_store_backlog,
                 "store writes queued before agents' results wait in their outboxes")
      ->check(CLI::Range(int64_t{1'000}, int64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--http-max-connections", flags.http_max_connections,
                 "HTTP connections open at once (event streams included); one more is "
                 "answered 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--http-max-followers", flags.http_max_followers,
                 "live output streams (?follow=1, `muster run`) at once; one more is answered "
                 "503")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--http-follower-buffer-bytes", flags.http_follower_buffer_bytes,
                 "output one stream may fall behind before it is dropped (told how to resume)")
      ->check(CLI::Range(int64_t{64} << 10, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--http-max-body-bytes", flags.http_max_body_bytes,
                 "largest request body; larger ones get 413")
      ->check(CLI::Range(int64_t{1} << 10, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--http-header-timeout", flags.http_header_timeout,
                 "a request's headers must arrive within this (slowloris); 100ms-10m")
      ->capture_default_str();
  app.add_option("--http-body-timeout", flags.http_body_timeout,
                 "a request's body must arrive within this after its headers; 100ms-1h")
      ->capture_default_str();
  app.add_option("--http-idle-timeout", flags.http_idle_timeout,
                 "a keep-alive connection without a request, or a client not reading our "
                 "answer, is closed after this; 100ms-1h")
      ->capture_default_str();
  app.add_flag("--insecure-plaintext", flags.insecure_plaintext,
               "serve agents and the REST API WITHOUT TLS (agents need the same flag)");
  app.add_option("--advertise", flags.advertise,
                 "name or address agents reach musterd by, put in its own server certificate "
                 "(repeatable; default: host name, localhost and the listen addresses)");
  app.add_option("--tls-cert", flags.tls_cert,
                 "the operator's server certificate (PEM, chain); with --tls-key and --tls-ca "
                 "musterd makes none of its own and reloads these files when they change");
  app.add_option("--tls-key", flags.tls_key, "the key of --tls-cert (PEM)");
  app.add_option("--tls-ca", flags.tls_ca, "the CA agents pin (PEM)");
  app.add_option("--tls-ca-key", flags.tls_ca_key,
                 "the key of --tls-ca, to sign agents' client certificates (optional)");
  app.add_option("--tls-cert-days", flags.tls_cert_days,
                 "lifetime of the server certificate musterd issues itself")
      ->check(CLI::Range(int64_t{1}, int64_t{825}))
      ->capture_default_str();
  app.add_option("--tls-renew-before-days", flags.tls_renew_before_days,
                 "renew the server certificate when fewer days than this are left")
      ->check(CLI::Range(int64_t{0}, int64_t{824}))
      ->capture_default_str();
  app.add_option("--tls-refresh-interval", flags.tls_refresh_interval,
                 "how often the certificate's expiry (or the operator's files) is checked")
      ->capture_default_str();
  app.add_option("--client-cert-lifetime", flags.client_cert_lifetime,
                 "lifetime of the client certificates musterd signs for agents (mTLS); agents "
                 "renew with a third of it left; 10s-825d")
      ->capture_default_str();
  app.add_option("--agent-binary", flags.agent_binary,
                 "the muster-agent binary served at /install/muster-agent for the one-line "
                 "installer `muster token create --enroll` prints (default: beside musterd)");
  app.add_flag("--require-client-certs", flags.require_client_certs,
               "refuse agent streams without the client certificate musterd issued to that "
               "agent (mTLS)");
  app.add_option("--log-format", flags.log_format, "text or json")->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error (last wins)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "musterd: " << e.what() << "\nRun 'musterd --help' for the flags.\n";
    return 2;
  }
  // An mTLS handshake costs musterd more than twice a TLS one (the client's chain and
  // signature verified, its certificate in every resumed session): at 1,000 agents a second,
  // a restart's storm of 10,000 mTLS agents outran the 10 s handshake deadline on two cores
  // and timed-out handshakes were retried and paid again (212 s); at 250 a second, 41 s
  // (docs/benchmarks.md). The operator's own rate wins.
  if (flags.require_client_certs && app.count("--reconnect-rate") == 0) {
    flags.reconnect_rate = 250;
  }
  if (auto st = common::setupLogging(flags.log_format, flags.log_level); !st.ok()) {
    std::cerr << "musterd: " << st.message() << "\n";
    return 2;
  }
  return run(flags);
}
