// Integration harness: real musterd and muster-agent processes on 127.0.0.1 with temporary
// directories, a small REST client, and bounded waits (never guessed sleeps). Both speak TLS
// (musterd's own CA, agents pinning it through their enrollment token) unless the server is
// given --insecure-plaintext, which the agents then get too.
#pragma once

#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace muster::itest {

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool waitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout = std::chrono::seconds(20));

int freePort();
// Connects to 127.0.0.1:port, writes `bytes`, waits briefly for the peer, closes.
void sendRaw(int port, const std::string& bytes);

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

class Process {
 public:
  // stdout and stderr go to `log_prefix`.out / .err.
  Process(std::vector<std::string> argv, std::string log_prefix);
  ~Process();
  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits for exit; returns the exit status (or 128+signal), -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
  std::string log_prefix_;
};

struct HttpResponse {
  long status = 0;
  std::string body;
  boost::json::value json() const;
};

std::string readFileOr(const std::string& path, const std::string& fallback = "");

class Musterd {
 public:
  // `launcher` goes before the binary (e.g. {"prlimit", "--nofile=300"}).
  Musterd(const TempDir& dir, std::vector<std::string> extra_args = {},
          std::vector<std::string> launcher = {});
  ~Musterd();
  void start();
  void kill9();
  // SIGTERM and wait; returns the exit status.
  int stop();
  Process& process() { return *process_; }

  std::string grpcTarget() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  // https:// unless started with --insecure-plaintext.
  std::string httpBase() const {
    return (plaintext_ ? "http://127.0.0.1:" : "https://127.0.0.1:") + std::to_string(http_port_);
  }
  bool plaintext() const { return plaintext_; }
  // musterd's own CA (empty when plaintext): what agents pin and clients verify with.
  std::string caFile() const { return plaintext_ ? "" : data_dir_ + "/tls/ca.crt"; }
  std::string caPem() const { return plaintext_ ? "" : readFileOr(caFile()); }
  int httpPort() const { return http_port_; }
  const std::string& adminToken() const { return admin_token_; }
  std::string dataDir() const { return data_dir_; }

  HttpResponse get(const std::string& path) const;
  // GET with extra request headers ("Range: bytes=0-9").
  HttpResponse get(const std::string& path, const std::vector<std::string>& headers) const;
  HttpResponse del(const std::string& path) const;
  HttpResponse post(const std::string& path, const std::string& body) const;
  // Creates an enrollment token (any number of uses).
  std::string enrollToken();
  boost::json::value host(const std::string& id) const;  // null if unknown
  boost::json::value command(const std::string& id) const;
  std::string hostStatus(const std::string& id) const;
  std::string commandState(const std::string& id) const;
  // POST /api/v1/commands; returns the response JSON (run_id, commands).
  boost::json::value run(const std::vector<std::string>& hosts, const std::string& script,
                         const std::string& timeout = "");
  std::string output(const std::string& command_id, const std::string& stream = "stdout") const;

 private:
  const TempDir& dir_;
  std::string data_dir_;
  std::vector<std::string> launcher_;
  std::vector<std::string> extra_args_;
  int grpc_port_;
  int http_port_;
  bool plaintext_ = false;
  int starts_ = 0;
  std::string admin_token_;
  std::unique_ptr<Process> process_;
};

class AgentProc {
 public:
  AgentProc(const TempDir& dir, const Musterd& server, std::string id, std::string token,
            std::vector<std::string> extra_args = {});
  void start();
  void kill9() {
    process_->signal(9);
    process_->wait();
  }
  int stop();
  Process& process() { return *process_; }
  const std::string& id() const { return id_; }
  std::string stateDir() const { return state_dir_; }

 private:
  const TempDir& dir_;
  const Musterd& server_;
  std::string id_;
  std::string token_;
  std::string state_dir_;
  std::vector<std::string> extra_args_;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace muster::itest
