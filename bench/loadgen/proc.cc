// Process and REST helpers for the load generator.
#include "bench/loadgen/proc.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "testing/http_call.h"

namespace muster::bench {

ProcSample sampleProc(pid_t pid) {
  ProcSample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_bytes = std::stoull(line.substr(6)) * 1024;
    if (line.rfind("Threads:", 0) == 0) s.threads = std::stoi(line.substr(8));
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), {});
  auto close = all.rfind(')');
  if (close != std::string::npos) {
    std::istringstream in(all.substr(close + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    s.cpu_ticks = utime + stime;
  }
  return s;
}

double ticksPerSecond() { return static_cast<double>(sysconf(_SC_CLK_TCK)); }

void raiseFdLimit() {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int freeTcpPort() { return testkit::freeTcpPort(); }

ServerProcess::ServerProcess(std::string binary, std::string data_dir, int http_port, int grpc_port,
                             std::vector<std::string> extra)
    : binary_(std::move(binary)),
      data_dir_(std::move(data_dir)),
      http_port_(http_port),
      grpc_port_(grpc_port),
      extra_(std::move(extra)) {}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) stop();
}

void ServerProcess::start() {
  std::vector<std::string> argv = {binary_,
                                   "--data-dir",
                                   data_dir_,
                                   "--http-listen",
                                   "127.0.0.1:" + std::to_string(http_port_),
                                   "--grpc-listen",
                                   "127.0.0.1:" + std::to_string(grpc_port_),
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  std::string log = data_dir_ + ".log";
  // posix_spawn, not fork: this process holds 10,000 channels, and a fork would mark all of
  // its memory copy-on-write, so every later write faults a page back in (seen in profiles of
  // the reconnect storm). glibc's posix_spawn shares the memory until the exec.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot start " + binary_ + ": " + std::strerror(rc));
  }
  for (int i = 0; i < 600; ++i) {
    if (httpRequest("GET", http() + "/healthz", "").status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("musterd did not become healthy; see " + log);
}

void ServerProcess::kill9() {
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void ServerProcess::stop() {
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string ServerProcess::adminToken() const {
  std::ifstream in(data_dir_ + "/admin.token");
  std::string token;
  std::getline(in, token);
  return token;
}

namespace {
std::string& httpCaFile() {
  static std::string ca_file;
  return ca_file;
}
}  // namespace

void setHttpCaFile(std::string ca_file) { httpCaFile() = std::move(ca_file); }

Http httpRequest(const std::string& method, const std::string& url, const std::string& token,
                 const std::string& body) {
  auto r = testkit::httpCall(method, url, token, body.empty() ? nullptr : &body, 120, httpCaFile());
  return Http{r.status, std::move(r.body)};
}

}  // namespace muster::bench
