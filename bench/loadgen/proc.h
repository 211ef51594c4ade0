// Process helpers for the load generator: start musterd, read its RSS/threads/CPU from /proc,
// and a tiny REST client.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace muster::bench {

struct ProcSample {
  uint64_t rss_bytes = 0;
  int threads = 0;
  uint64_t cpu_ticks = 0;  // utime + stime
};
ProcSample sampleProc(pid_t pid);
double ticksPerSecond();
void raiseFdLimit();

class ServerProcess {
 public:
  ServerProcess(std::string binary, std::string data_dir, int http_port, int grpc_port,
                std::vector<std::string> extra);
  ~ServerProcess();
  void start();
  void kill9();
  void stop();
  pid_t pid() const { return pid_; }
  // https:// unless musterd runs with --insecure-plaintext (or predates TLS).
  std::string http() const {
    return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(http_port_);
  }
  bool tls() const { return tls_; }
  void setTls(bool tls) { tls_ = tls; }
  std::string caFile() const { return data_dir_ + "/tls/ca.crt"; }
  std::string grpc() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string adminToken() const;

 private:
  std::string binary_, data_dir_;
  int http_port_, grpc_port_;
  std::vector<std::string> extra_;
  bool tls_ = false;
  pid_t pid_ = -1;
};

struct Http {
  long status = 0;
  std::string body;
};
// The CA https:// requests are verified with (the loadgen talks to one musterd at a time).
void setHttpCaFile(std::string ca_file);
Http httpRequest(const std::string& method, const std::string& url, const std::string& token,
                 const std::string& body = "");
int freeTcpPort();

}  // namespace muster::bench
