// Fork/exec of one command in its own process group, and the thread that watches it to the end.
#include "agent/exec/process_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace muster::agent {
namespace {

std::atomic<bool> g_use_pidfd{true};

constexpr int64_t kNever = INT64_MAX;
// Upper bound on one poll() so an injected clock's jumps are noticed.
constexpr int64_t kPollCapMs = 250;
// Without a pidfd nothing wakes poll() when the leader exits, so look often.
constexpr int64_t kNoPidfdPollMs = 20;
constexpr const char* kDefaultPath = "/bin:/usr/bin";

// What the child writes to the exec-error pipe when it cannot exec (8 bytes: one atomic write).
enum ChildStage : int32_t { kStageSetup = 1, kStageChdir = 2, kStageExec = 3 };
struct ChildError {
  int32_t stage;
  int32_t err;
};

std::string errnoText(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof buf));  // GNU variant: returns the text
}

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Keeps the child's ends off 0..2 so the dup2() calls in the child cannot clobber each other.
bool moveAboveStdio(UniqueFd& fd) {
  if (fd.get() > 2) return true;
  int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return false;
  fd.reset(moved);
  return true;
}

bool makePipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return true;
}

void setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Everything the child needs, built before fork() because the child may only make
// async-signal-safe calls (no allocation) until it execs.
struct ChildPlan {
  std::vector<std::string> args;
  std::vector<char*> argv;
  std::vector<std::string> env;
  std::vector<char*> envp;
  std::vector<std::string> candidates;  // paths to try, in PATH order
  std::vector<char*> sh_argv;           // for a candidate without #! (ENOEXEC), as execvp does
  const char* cwd = nullptr;
  int dev_null = -1;
  int out_w = -1;
  int err_w = -1;
  int error_w = -1;
  unsigned max_fd = 0;  // close loop bound when close_range() is missing
};

[[noreturn]] void childFail(int fd, int32_t stage, int err) {
  ChildError message{stage, err};
  const char* p = reinterpret_cast<const char*>(&message);
  size_t left = sizeof message;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  _exit(127);
}

void childCloseRange(unsigned first, unsigned last, unsigned max_fd) {
  if (first > last) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, first, last, 0) == 0) return;
#endif
  for (unsigned fd = first; fd <= std::min(last, max_fd); ++fd) ::close(static_cast<int>(fd));
}

// Runs in the forked child: async-signal-safe calls only.
[[noreturn]] void runChild(ChildPlan& plan) {
  const int error_w = plan.error_w;
  // Own group: the runner signals -pgid and so reaches every descendant that stays in it.
  if (setpgid(0, 0) != 0) childFail(error_w, kStageSetup, errno);

  // Ignored signals survive exec (the agent ignores SIGPIPE); commands expect defaults.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  if (dup2(plan.dev_null, 0) < 0 || dup2(plan.out_w, 1) < 0 || dup2(plan.err_w, 2) < 0) {
    childFail(error_w, kStageSetup, errno);
  }
  if (plan.cwd != nullptr && chdir(plan.cwd) != 0) childFail(error_w, kStageChdir, errno);
  // Whatever the agent's libraries leaked without O_CLOEXEC must not reach the command.
  childCloseRange(3, static_cast<unsigned>(error_w) - 1, plan.max_fd);
  childCloseRange(static_cast<unsigned>(error_w) + 1, UINT_MAX, plan.max_fd);

  // execvp's search rules, with the PATH of the command's environment.
  int last_err = ENOENT;
  bool saw_eacces = false;
  for (std::string& candidate : plan.candidates) {
    execve(candidate.c_str(), plan.argv.data(), plan.envp.data());
    int err = errno;
    if (err == ENOEXEC) {
      plan.sh_argv[1] = candidate.data();
      execve("/bin/sh", plan.sh_argv.data(), plan.envp.data());
      childFail(error_w, kStageExec, errno);
    }
    switch (err) {
      case EACCES: saw_eacces = true; [[fallthrough]];
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ENODEV:
      case ETIMEDOUT: last_err = err; continue;
      default: childFail(error_w, kStageExec, err);
    }
  }
  childFail(error_w, kStageExec, saw_eacces ? EACCES : last_err);
}

absl::Status validate(const ProcessSpec& spec) {
  if (spec.argv.empty() && spec.script.empty()) {
    return absl::InvalidArgumentError("command has neither argv nor script; set exactly one");
  }
  if (!spec.argv.empty() && !spec.script.empty()) {
    return absl::InvalidArgumentError("command has both argv and script; set exactly one");
  }
  if (!spec.argv.empty() && spec.argv[0].empty()) {
    return absl::InvalidArgumentError("command argv[0] is empty; expected a program name or path");
  }
  for (size_t i = 0; i < spec.argv.size(); ++i) {
    if (spec.argv[i].find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("command argv[", i, "] contains a NUL byte"));
    }
  }
  if (spec.script.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("command script contains a NUL byte");
  }
  if (spec.cwd.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("command cwd contains a NUL byte");
  }
  for (const auto& [name, value] : spec.env) {
    if (name.empty() || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "environment variable name '", name, "' is invalid: it must be non-empty without '='"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", name, " contains a NUL byte"));
    }
  }
  if (spec.timeout_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("command timeout_ms must be >= 0 (0: none), got ", spec.timeout_ms));
  }
  if (spec.kill_grace_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("command kill_grace_ms must be >= 0, got ", spec.kill_grace_ms));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view exitKindName(ExitKind kind) {
  switch (kind) {
    case ExitKind::kExited: return "exited";
    case ExitKind::kSignaled: return "signaled";
    case ExitKind::kTimedOut: return "timed_out";
    case ExitKind::kCancelled: return "cancelled";
    case ExitKind::kStartFailed: return "start_failed";
  }
  return "unknown";
}

void ProcessRunner::setUsePidfdForTest(bool use) { g_use_pidfd = use; }

ProcessRunner::ProcessRunner(ProcessSpec spec, OutputFn on_output, ExitFn on_exit,
                             const common::Clock& clock)
    : spec_(std::move(spec)),
      on_output_(std::move(on_output)),
      on_exit_(std::move(on_exit)),
      clock_(clock) {}

absl::StatusOr<std::unique_ptr<ProcessRunner>> ProcessRunner::start(ProcessSpec spec,
                                                                    OutputFn on_output,
                                                                    ExitFn on_exit,
                                                                    const common::Clock& clock) {
  if (!on_exit) return absl::InvalidArgumentError("process runner needs an on_exit callback");
  if (absl::Status status = validate(spec); !status.ok()) return status;

  std::unique_ptr<ProcessRunner> runner(
      new ProcessRunner(std::move(spec), std::move(on_output), std::move(on_exit), clock));
  runner->spawn();
  try {
    runner->thread_ = std::thread([r = runner.get()] { r->run(); });
  } catch (const std::system_error& e) {
    if (runner->pid_ > 0) {
      kill(-runner->pid_, SIGKILL);
      while (waitpid(runner->pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    return absl::ResourceExhaustedError(absl::StrCat("cannot start '", runner->display_name_,
                                                     "': no thread to watch it: ", e.what()));
  }
  return runner;
}

void ProcessRunner::spawn() {
  started_at_ms_ = clock_.nowMs();
  started_steady_ms_ = clock_.steadyMs();

  ChildPlan plan;
  plan.args =
      spec_.argv.empty() ? std::vector<std::string>{"/bin/sh", "-c", spec_.script} : spec_.argv;
  display_name_ = plan.args[0];

  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view kv(*entry);
    size_t eq = kv.find('=');
    if (eq != std::string_view::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  for (const auto& [name, value] : spec_.env) env[name] = value;
  for (const auto& [name, value] : env) plan.env.push_back(absl::StrCat(name, "=", value));

  const std::string& file = plan.args[0];
  if (file.find('/') != std::string::npos) {
    plan.candidates.push_back(file);
  } else {
    auto path = env.find("PATH");
    searched_path_ = path != env.end() ? path->second : kDefaultPath;
    size_t begin = 0;
    for (;;) {
      size_t end = searched_path_.find(':', begin);
      std::string dir = searched_path_.substr(begin, end == std::string::npos ? end : end - begin);
      plan.candidates.push_back(absl::StrCat(dir.empty() ? "." : dir, "/", file));
      if (end == std::string::npos) break;
      begin = end + 1;
    }
  }
  for (std::string& arg : plan.args) plan.argv.push_back(arg.data());
  plan.argv.push_back(nullptr);
  for (std::string& kv : plan.env) plan.envp.push_back(kv.data());
  plan.envp.push_back(nullptr);
  plan.sh_argv.push_back(const_cast<char*>("/bin/sh"));
  plan.sh_argv.push_back(nullptr);  // the candidate, filled in by the child
  for (size_t i = 1; i < plan.args.size(); ++i) plan.sh_argv.push_back(plan.args[i].data());
  plan.sh_argv.push_back(nullptr);
  if (!spec_.cwd.empty()) plan.cwd = spec_.cwd.c_str();

  struct rlimit limit {};
  plan.max_fd = 65535;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    plan.max_fd = static_cast<unsigned>(std::min<rlim_t>(limit.rlim_cur, 1 << 20));
  }

  auto fail = [this](const char* what) {
    const std::string why = errnoText(errno);
    start_error_ = absl::StrCat("cannot start '", display_name_, "': ", what, ": ", why,
                                "; check the agent's file descriptor and "
                                "process limits");
  };
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return fail("cannot create eventfd");
  UniqueFd dev_null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (dev_null.get() < 0) return fail("cannot open /dev/null");
  UniqueFd out_r, out_w, err_r, err_w, error_r, error_w;
  if (!makePipe(out_r, out_w) || !makePipe(err_r, err_w) || !makePipe(error_r, error_w)) {
    return fail("cannot create pipe");
  }
  if (!moveAboveStdio(dev_null) || !moveAboveStdio(out_w) || !moveAboveStdio(err_w) ||
      !moveAboveStdio(error_w)) {
    return fail("cannot duplicate file descriptor");
  }
  plan.dev_null = dev_null.get();
  plan.out_w = out_w.get();
  plan.err_w = err_w.get();
  plan.error_w = error_w.get();

  // Signals stay blocked across fork so no agent handler runs in the child before it resets them.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) runChild(plan);
  int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    errno = fork_errno;
    return fail("fork failed");
  }
  pid_ = pid;
  // Also done by the child; doing it here too means -pid_ is a valid group once start() returns.
  // EACCES (the child already exec'd) is fine.
  setpgid(pid, pid);

  stdout_fd_ = out_r.release();
  stderr_fd_ = err_r.release();
  exec_error_fd_ = error_r.release();
  setNonBlocking(stdout_fd_);
  setNonBlocking(stderr_fd_);
  setNonBlocking(exec_error_fd_);
  if (g_use_pidfd) {
#ifdef SYS_pidfd_open
    int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));  // always CLOEXEC
    pidfd_ = fd >= 0 ? fd : -1;
#endif
  }
}

void ProcessRunner::signalGroup(int sig) {
  if (pid_ <= 0) return;
  kill(-pid_, sig);
  if (sig == SIGTERM) kill(-pid_, SIGCONT);  // a stopped process would never see the TERM
}

void ProcessRunner::closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

void ProcessRunner::run() {
  ProcessExit result;
  result.started_at_ms = started_at_ms_;
  auto report = [this, &result] {
    result.finished_at_ms = clock_.nowMs();
    ExitFn on_exit = std::move(on_exit_);
    on_exit(result);  // may destroy *this: touch nothing afterwards
  };
  if (pid_ < 0) {
    result.kind = ExitKind::kStartFailed;
    result.error = start_error_;
    closeFd(stdout_fd_);
    closeFd(stderr_fd_);
    closeFd(exec_error_fd_);
    return report();
  }

  const int64_t timeout_at = spec_.timeout_ms > 0 ? started_steady_ms_ + spec_.timeout_ms : kNever;
  int64_t kill_at = kNever;      // SIGKILL escalation, once SIGTERM went out
  int64_t drain_until = kNever;  // set when the leader exits
  bool killed = false;
  bool escalated = false;
  std::optional<ExitKind> forced_kind;
  std::string forced_error;
  bool cancel_seen = false;
  bool leader_exited = false;
  bool leader_status_known = true;
  siginfo_t leader{};
  std::string buf(kMaxChunk, '\0');

  for (;;) {
    const int64_t now = clock_.steadyMs();

    // Peek without reaping: the zombie keeps the pid, hence the pgid, from being reused while
    // we may still signal the group.
    if (!leader_exited) {
      siginfo_t info{};
      int rc;
      do {
        rc = waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
      } while (rc < 0 && errno == EINTR);
      if (rc == 0 && info.si_pid == pid_) {
        leader_exited = true;
        leader = info;
      } else if (rc < 0) {
        leader_exited = true;  // ECHILD: reaped behind our back (SIGCHLD ignored?)
        leader_status_known = false;
      }
      if (leader_exited) drain_until = now + kDrainAfterExitMs;
    }

    bool cancel_now = false;
    bool destroying = false;
    std::string cancel_reason;
    ExitKind cancel_kind = ExitKind::kCancelled;
    {
      std::lock_guard lock(mu_);
      if (cancel_requested_ && !cancel_seen) {
        cancel_seen = cancel_now = true;
        cancel_reason = cancel_reason_;
        cancel_kind = cancel_kind_;
      }
      destroying = destroying_;
    }

    if (!leader_exited) {
      if (destroying && !killed) {
        if (!forced_kind) {
          forced_kind = ExitKind::kCancelled;
          forced_error = "runner destroyed while the command was running (agent shutting down)";
        }
        signalGroup(SIGKILL);
        killed = true;
      }
      if (cancel_now && !forced_kind) {
        forced_kind = cancel_kind;
        forced_error = std::move(cancel_reason);
        signalGroup(SIGTERM);
        kill_at = now + spec_.kill_grace_ms;
      }
      if (!forced_kind && now >= timeout_at) {
        forced_kind = ExitKind::kTimedOut;
        forced_error = absl::StrCat("timed out after ", spec_.timeout_ms,
                                    " ms; sent SIGTERM to the process group");
        signalGroup(SIGTERM);
        kill_at = now + spec_.kill_grace_ms;
      }
      if (!killed && now >= kill_at) {
        signalGroup(SIGKILL);
        killed = escalated = true;
      }
    } else if (destroying || cancel_now) {
      drain_until = std::min(drain_until, now);  // finished already: just stop waiting
    }

    if (leader_exited && stdout_fd_ < 0 && stderr_fd_ < 0 && exec_error_fd_ < 0) break;
    if (leader_exited && now >= drain_until) {
      // Descendants still hold the pipes. The unreaped leader pins the pgid, so this is safe.
      signalGroup(SIGKILL);
      closeFd(stdout_fd_);
      closeFd(stderr_fd_);
      closeFd(exec_error_fd_);
      break;
    }

    int64_t wake_at = drain_until;
    if (!leader_exited) {
      if (!forced_kind) wake_at = std::min(wake_at, timeout_at);
      if (!killed) wake_at = std::min(wake_at, kill_at);
    }
    const bool watch_pidfd = pidfd_ >= 0 && !leader_exited;
    const int64_t cap = (pidfd_ >= 0 || leader_exited) ? kPollCapMs : kNoPidfdPollMs;
    const int wait_ms =
        static_cast<int>(std::clamp<int64_t>(wake_at == kNever ? cap : wake_at - now, 0, cap));

    struct pollfd fds[5];
    nfds_t count = 0;
    auto add = [&](int fd) {
      if (fd >= 0) fds[count++] = pollfd{fd, POLLIN, 0};
    };
    add(stdout_fd_);
    add(stderr_fd_);
    add(exec_error_fd_);
    add(wake_fd_);
    if (watch_pidfd) add(pidfd_);
    if (poll(fds, count, wait_ms) < 0) continue;  // EINTR; nothing else is expected here

    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      const int fd = fds[i].fd;
      if (fd == wake_fd_) {
        uint64_t value;
        while (::read(wake_fd_, &value, sizeof value) < 0 && errno == EINTR) {
        }
      } else if (fd == exec_error_fd_) {
        ChildError message{};
        ssize_t n;
        do {
          n = ::read(exec_error_fd_, &message, sizeof message);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN) continue;
        if (n == static_cast<ssize_t>(sizeof message)) {
          std::string why = errnoText(message.err);
          if (message.stage == kStageExec) {
            start_error_ = absl::StrCat("cannot execute '", display_name_, "': ", why);
            if (!searched_path_.empty()) {
              absl::StrAppend(&start_error_, " (searched PATH=", searched_path_, ")");
            }
          } else if (message.stage == kStageChdir) {
            start_error_ = absl::StrCat("cannot change to working directory '", spec_.cwd,
                                        "' for '", display_name_, "': ", why);
          } else {
            start_error_ =
                absl::StrCat("cannot set up the process for '", display_name_, "': ", why);
          }
        }
        closeFd(exec_error_fd_);  // EOF (exec succeeded), the message, or an error: done
      } else if (fd == stdout_fd_ || fd == stderr_fd_) {
        ssize_t n;
        do {
          n = ::read(fd, buf.data(), buf.size());
        } while (n < 0 && errno == EINTR);
        if (n > 0) {
          if (on_output_) {
            on_output_(fd == stdout_fd_ ? OutputStream::kStdout : OutputStream::kStderr,
                       std::string_view(buf.data(), static_cast<size_t>(n)));
          }
        } else if (n == 0 || errno != EAGAIN) {
          closeFd(fd == stdout_fd_ ? stdout_fd_ : stderr_fd_);
        }
      }
      // pidfd readable: the leader exited; the waitid() at the top of the loop takes it.
    }
  }

  if (leader_status_known) {
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    if (leader.si_code == CLD_EXITED) {
      result.exit_code = leader.si_status;
    } else {
      result.signal = leader.si_status;
    }
  }
  closeFd(pidfd_);

  if (!start_error_.empty()) {
    result.kind = ExitKind::kStartFailed;
    result.error = start_error_;
    result.exit_code.reset();
    result.signal = 0;
  } else if (forced_kind) {
    result.kind = *forced_kind;
    result.error = forced_error;
    if (escalated && result.kind == ExitKind::kTimedOut) {
      absl::StrAppend(&result.error, "; still running ", spec_.kill_grace_ms,
                      " ms later, killed with SIGKILL");
    }
  } else if (!leader_status_known) {
    result.kind = ExitKind::kExited;
    result.error =
        "exit status unavailable: the process was reaped elsewhere (is SIGCHLD ignored?)";
  } else {
    result.kind = result.exit_code ? ExitKind::kExited : ExitKind::kSignaled;
  }
  report();
}

void ProcessRunner::cancel(std::string reason, ExitKind kind) {
  {
    std::lock_guard lock(mu_);
    if (cancel_requested_) return;
    cancel_requested_ = true;
    cancel_reason_ = std::move(reason);
    cancel_kind_ = kind;
  }
  uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

ProcessRunner::~ProcessRunner() {
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();  // destroyed from on_exit: run() touches nothing after it returns
    } else {
      {
        std::lock_guard lock(mu_);
        destroying_ = true;
      }
      uint64_t one = 1;
      while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
      }
      thread_.join();
    }
  }
  closeFd(pidfd_);
  closeFd(stdout_fd_);
  closeFd(stderr_fd_);
  closeFd(exec_error_fd_);
  closeFd(wake_fd_);
}

}  // namespace muster::agent
