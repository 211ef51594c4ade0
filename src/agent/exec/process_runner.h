// Runs one operator command on the host in its own process group, streaming its output.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/clock.h"

namespace muster::agent {

struct ProcessSpec {
  // Executed directly, argv[0] looked up in PATH (the PATH of the merged environment below)
  // unless it contains a '/'. Exactly one of `argv` and `script` must be set.
  std::vector<std::string> argv;
  // Run as `/bin/sh -c script` when `argv` is empty.
  std::string script;
  // Added to the agent's environment, overriding variables of the same name.
  std::map<std::string, std::string> env;
  // Working directory of the command; empty: the agent's.
  std::string cwd;
  // Time budget from start, measured on the monotonic clock; 0: none.
  int64_t timeout_ms = 0;
  // Delay between SIGTERM and SIGKILL to the process group (timeout, cancel).
  int64_t kill_grace_ms = 5000;
};

enum class ExitKind {
  kExited,       // the leader exited by itself: exit_code is set
  kSignaled,     // the leader died from a signal nobody here sent: signal is set
  kTimedOut,     // spec.timeout_ms elapsed (or cancel(..., kTimedOut))
  kCancelled,    // cancel() or the runner was destroyed; error holds the reason
  kStartFailed,  // nothing ran: bad executable, cwd, permissions, fork failure; see error
};
std::string_view exitKindName(ExitKind kind);

struct ProcessExit {
  ExitKind kind = ExitKind::kExited;
  // How the leader ended, when known (also for kTimedOut / kCancelled).
  std::optional<int> exit_code;
  int signal = 0;
  // Empty for kExited / kSignaled; otherwise written for the operator.
  std::string error;
  int64_t started_at_ms = 0;   // wall clock, Unix epoch ms
  int64_t finished_at_ms = 0;  // wall clock, when the output was drained
};

enum class OutputStream : int { kStdout = 1, kStderr = 2 };

// One running command. Threading: a single internal thread owns the child; it calls on_output
// for every read (at most kMaxChunk bytes, in order per stream) and then on_exit exactly once,
// after the leader has exited and its pipes are drained. Callbacks never run concurrently and
// never run inside start() or cancel(). The agent must not ignore SIGCHLD or reap with
// waitpid(-1): this class reaps only its own child.
class ProcessRunner {
 public:
  using OutputFn = std::function<void(OutputStream stream, std::string_view data)>;
  using ExitFn = std::function<void(const ProcessExit& exit)>;

  static constexpr size_t kMaxChunk = 64 * 1024;
  // After the leader exits, descendants still holding stdout/stderr get this long before the
  // group is killed and reading stops (`cmd &` would otherwise hang the runner).
  static constexpr int64_t kDrainAfterExitMs = 500;

  // Starts the command. Returns an error (InvalidArgument, ResourceExhausted) only when no
  // callback will ever run: malformed spec, missing on_exit, or no thread could be created.
  // Every failure on the host (executable not found, not executable, bad cwd, fork or pipe
  // failure) is instead reported through on_exit as kStartFailed, so callers handle one path.
  // on_output may be empty (output discarded). `clock` must outlive the runner.
  static absl::StatusOr<std::unique_ptr<ProcessRunner>> start(
      ProcessSpec spec, OutputFn on_output, ExitFn on_exit,
      const common::Clock& clock = common::SystemClock::instance());

  // Kills the group with SIGKILL if the command still runs, reports kCancelled through on_exit
  // ("runner destroyed ...") and joins. Because on_exit runs before this returns, do not destroy
  // the runner while holding a lock that on_exit takes. It may be destroyed from inside on_exit
  // (the thread is then detached), never from inside on_output.
  ~ProcessRunner();
  ProcessRunner(const ProcessRunner&) = delete;
  ProcessRunner& operator=(const ProcessRunner&) = delete;

  // Asks the command to stop: SIGTERM (and SIGCONT) to the whole group, SIGKILL after
  // spec.kill_grace_ms. on_exit then reports `kind` (normally kCancelled; kTimedOut for a
  // deadline kept elsewhere) with error = reason, and the exit code or signal if known. The
  // first cancel or timeout wins; later calls are no-ops. If the leader has already exited by
  // itself the outcome stays kExited/kSignaled and only the drain is cut short. Thread-safe.
  void cancel(std::string reason, ExitKind kind = ExitKind::kCancelled);

  // Leader pid, which is also the process group id; -1 if fork failed.
  pid_t pid() const { return pid_; }

  // Makes runners started afterwards poll with waitid(WNOHANG) instead of a pidfd, as on
  // kernels older than 5.3.
  static void setUsePidfdForTest(bool use);

 private:
  ProcessRunner(ProcessSpec spec, OutputFn on_output, ExitFn on_exit, const common::Clock& clock);

  // Creates pipes and forks; on failure leaves pid_ == -1 and sets start_error_.
  void spawn();
  // Body of the runner thread.
  void run();
  void signalGroup(int sig);
  void closeFd(int& fd);

  const ProcessSpec spec_;
  const OutputFn on_output_;
  ExitFn on_exit_;  // moved out by run() before the call, so on_exit may destroy *this
  const common::Clock& clock_;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  int exec_error_fd_ = -1;  // CLOEXEC pipe: EOF on successful exec, an errno otherwise
  int wake_fd_ = -1;        // eventfd: cancel() and the destructor wake the thread
  std::string start_error_;
  std::string display_name_;   // argv[0] or /bin/sh, for error messages
  std::string searched_path_;  // PATH used for the lookup; empty when argv[0] has a '/'
  int64_t started_at_ms_ = 0;
  int64_t started_steady_ms_ = 0;

  // std::mutex, not absl::Mutex: Debian's Abseil is built without TSan annotations, so the
  // sanitizer could not see what an absl::Mutex orders (races reported on guarded fields).
  std::mutex mu_;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string cancel_reason_ ABSL_GUARDED_BY(mu_);
  ExitKind cancel_kind_ ABSL_GUARDED_BY(mu_) = ExitKind::kCancelled;
  bool destroying_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace muster::agent
