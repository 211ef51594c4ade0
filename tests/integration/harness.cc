// Integration harness implementation.
#include "tests/integration/harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "testing/http_call.h"

namespace muster::itest {

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

int freePort() { return testkit::freeTcpPort(); }

void sendRaw(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    timeval tv{0, 300'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    (void)::recv(fd, buf, sizeof buf, 0);
  }
  ::close(fd);
}

std::string readFileOr(const std::string& path, const std::string& fallback) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fallback;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() /
          ("muster-it-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  if (!getenv("MUSTER_KEEP_TEST_DIRS")) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

Process::Process(std::vector<std::string> argv, std::string log_prefix)
    : log_prefix_(std::move(log_prefix)) {
  std::string out = log_prefix_ + ".out", err = log_prefix_ + ".err";
  pid_ = ::fork();
  if (pid_ == 0) {
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (running()) {
    signal(SIGKILL);
    wait(std::chrono::seconds(10));
  }
}

bool Process::running() {
  if (reaped_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

void Process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

int Process::wait(std::chrono::milliseconds timeout) {
  if (!waitFor([&] { return !running(); }, timeout)) return -1;
  return status_;
}

std::string Process::out() const { return readFileOr(log_prefix_ + ".out"); }
std::string Process::err() const { return readFileOr(log_prefix_ + ".err"); }

boost::json::value HttpResponse::json() const {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  return ec ? boost::json::value() : v;
}

namespace {
HttpResponse request(const std::string& method, const std::string& url, const std::string& token,
                     const std::string* body, const std::string& ca_file,
                     const std::vector<std::string>& headers = {}) {
  auto r = testkit::httpCall(method, url, token, body, 30, ca_file, headers);
  return HttpResponse{r.status, std::move(r.body)};
}

std::string str(const boost::json::value& v, const char* key) {
  if (!v.is_object()) return "";
  auto* p = v.as_object().if_contains(key);
  return p && p->is_string() ? std::string(p->as_string()) : "";
}
}  // namespace

Musterd::Musterd(const TempDir& dir, std::vector<std::string> extra_args,
                 std::vector<std::string> launcher)
    : dir_(dir),
      data_dir_(dir.sub("server")),
      launcher_(std::move(launcher)),
      extra_args_(std::move(extra_args)),
      grpc_port_(freePort()),
      http_port_(freePort()) {
  for (const auto& arg : extra_args_) plaintext_ = plaintext_ || arg == "--insecure-plaintext";
  start();
}

Musterd::~Musterd() {
  if (process_ && process_->running()) stop();
}

void Musterd::start() {
  std::vector<std::string> argv = {MUSTERD_BIN,
                                   "--data-dir",
                                   data_dir_,
                                   "--http-listen",
                                   "127.0.0.1:" + std::to_string(http_port_),
                                   "--grpc-listen",
                                   "127.0.0.1:" + std::to_string(grpc_port_)};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  argv.insert(argv.begin(), launcher_.begin(), launcher_.end());
  process_ = std::make_unique<Process>(argv, dir_.sub("musterd-" + std::to_string(starts_++)));
  bool up = waitFor([&] {
    if (!process_->running()) return true;
    return get("/healthz").status == 200;
  });
  if (!up || !process_->running()) {
    throw std::runtime_error("musterd did not start: " + process_->err());
  }
  admin_token_ = readFileOr(data_dir_ + "/admin.token");
  while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
}

void Musterd::kill9() {
  process_->signal(SIGKILL);
  process_->wait();
}

int Musterd::stop() {
  process_->signal(SIGTERM);
  return process_->wait();
}

HttpResponse Musterd::get(const std::string& path) const {
  return request("GET", httpBase() + path, admin_token_, nullptr, caFile());
}

HttpResponse Musterd::get(const std::string& path, const std::vector<std::string>& headers) const {
  return request("GET", httpBase() + path, admin_token_, nullptr, caFile(), headers);
}

HttpResponse Musterd::del(const std::string& path) const {
  return request("DELETE", httpBase() + path, admin_token_, nullptr, caFile());
}

HttpResponse Musterd::post(const std::string& path, const std::string& body) const {
  return request("POST", httpBase() + path, admin_token_, &body, caFile());
}

std::string Musterd::enrollToken() {
  auto r = post("/api/v1/tokens", R"({"kind":"enroll","uses":-1,"ttl":"1h"})");
  if (r.status != 201) throw std::runtime_error("cannot create enroll token: " + r.body);
  return str(r.json(), "token");
}

boost::json::value Musterd::host(const std::string& id) const {
  auto r = get("/api/v1/hosts/" + id);
  return r.status == 200 ? r.json() : boost::json::value();
}

boost::json::value Musterd::command(const std::string& id) const {
  auto r = get("/api/v1/commands/" + id);
  return r.status == 200 ? r.json() : boost::json::value();
}

std::string Musterd::hostStatus(const std::string& id) const { return str(host(id), "status"); }
std::string Musterd::commandState(const std::string& id) const { return str(command(id), "state"); }

boost::json::value Musterd::run(const std::vector<std::string>& hosts, const std::string& script,
                                const std::string& timeout) {
  boost::json::object body;
  boost::json::array h;
  for (const auto& id : hosts) h.emplace_back(id);
  body["hosts"] = h;
  body["script"] = script;
  if (!timeout.empty()) body["timeout"] = timeout;
  auto r = post("/api/v1/commands", boost::json::serialize(body));
  if (r.status != 201) throw std::runtime_error("run failed: " + r.body);
  return r.json();
}

std::string Musterd::output(const std::string& command_id, const std::string& stream) const {
  auto r = get("/api/v1/commands/" + command_id + "/output");
  return str(r.json(), stream.c_str());
}

AgentProc::AgentProc(const TempDir& dir, const Musterd& server, std::string id, std::string token,
                     std::vector<std::string> extra_args)
    : dir_(dir),
      server_(server),
      id_(std::move(id)),
      token_(std::move(token)),
      state_dir_(dir.sub("agent-" + id_)),
      extra_args_(std::move(extra_args)) {
  start();
}

void AgentProc::start() {
  std::vector<std::string> argv = {
      AGENT_BIN,        "--server", server_.grpcTarget(), "--state-dir", state_dir_, "--id", id_,
      "--enroll-token", token_,     "--backoff-cap",      "2s"};
  if (server_.plaintext()) argv.push_back("--insecure-plaintext");
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  process_ =
      std::make_unique<Process>(argv, dir_.sub("agent-" + id_ + "-" + std::to_string(starts_++)));
}

int AgentProc::stop() {
  process_->signal(SIGTERM);
  return process_->wait();
}

}  // namespace muster::itest
