// Tests of the agent's process runner against real /bin/sh children.
#include "agent/exec/process_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace muster::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Generous: the machine may be busy with a build, and sanitizers slow fork/exec down.
constexpr milliseconds kBound{20'000};

// Records everything the runner reports and lets the test wait for it with a bound.
class Collector {
 public:
  ProcessRunner::OutputFn outputFn() {
    return [this](OutputStream stream, std::string_view data) {
      std::lock_guard lock(mu_);
      max_chunk_ = std::max(max_chunk_, data.size());
      (stream == OutputStream::kStdout ? out_ : err_).append(data);
      if (exit_calls_ > 0) output_after_exit_ = true;
      cv_.notify_all();
    };
  }
  ProcessRunner::ExitFn exitFn() {
    return [this](const ProcessExit& exit) {
      std::lock_guard lock(mu_);
      exit_ = exit;
      ++exit_calls_;
      cv_.notify_all();
    };
  }
  bool waitExit(milliseconds bound = kBound) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return exit_calls_ > 0; });
  }
  bool waitStdout(std::string_view needle, milliseconds bound = kBound) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound,
                        [&] { return out_.find(needle) != std::string::npos || exit_calls_; });
  }
  std::string out() {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string err() {
    std::lock_guard lock(mu_);
    return err_;
  }
  ProcessExit exit() {
    std::lock_guard lock(mu_);
    return exit_;
  }
  int exitCalls() {
    std::lock_guard lock(mu_);
    return exit_calls_;
  }
  size_t maxChunk() {
    std::lock_guard lock(mu_);
    return max_chunk_;
  }
  bool outputAfterExit() {
    std::lock_guard lock(mu_);
    return output_after_exit_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;
  std::string err_;
  ProcessExit exit_;
  int exit_calls_ = 0;
  size_t max_chunk_ = 0;
  bool output_after_exit_ = false;
};

ProcessSpec script(std::string text) {
  ProcessSpec spec;
  spec.script = std::move(text);
  return spec;
}

std::unique_ptr<ProcessRunner> startOrDie(ProcessSpec spec, Collector& collector) {
  auto runner = ProcessRunner::start(std::move(spec), collector.outputFn(), collector.exitFn());
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? std::move(*runner) : nullptr;
}

// A process that has exited counts as gone even before its new parent reaps it.
bool processGone(pid_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool waitUntilGone(pid_t pid, milliseconds bound = kBound) {
  const auto deadline = steady_clock::now() + bound;
  while (!processGone(pid)) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));  // polling a condition, with a bound
  }
  return true;
}

pid_t firstLineAsPid(const std::string& out) {
  return static_cast<pid_t>(std::stol(out.substr(0, out.find('\n'))));
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "muster-runner-XXXXXX");
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string writeFile(const std::string& name, const std::string& content, mode_t mode) {
    std::string file = path_ + "/" + name;
    std::ofstream(file) << content;
    chmod(file.c_str(), mode);
    return file;
  }

 private:
  std::string path_;
};

TEST(ProcessRunnerTest, CapturesStdoutAndStderrSeparately) {
  Collector c;
  auto runner = startOrDie(script("echo out1; echo err1 >&2; echo out2; exit 3"), c);
  ASSERT_TRUE(c.waitExit());
  ProcessExit exit = c.exit();
  EXPECT_EQ(exit.kind, ExitKind::kExited);
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_EQ(exit.error, "");
  EXPECT_GE(exit.finished_at_ms, exit.started_at_ms);
  EXPECT_GT(exit.started_at_ms, 0);
  EXPECT_EQ(c.out(), "out1\nout2\n");
  EXPECT_EQ(c.err(), "err1\n");
  runner.reset();
  EXPECT_EQ(c.exitCalls(), 1);
  EXPECT_FALSE(c.outputAfterExit());
}

TEST(ProcessRunnerTest, CapturesLargeOutputCompletely) {
  Collector c;
  auto runner = startOrDie(script("head -c 5242880 /dev/zero | tr '\\0' x & "
                                  "head -c 3000000 /dev/zero | tr '\\0' y >&2; wait"),
                           c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kExited);
  EXPECT_EQ(c.exit().exit_code, 0);
  EXPECT_EQ(c.out(), std::string(5242880, 'x'));
  EXPECT_EQ(c.err(), std::string(3000000, 'y'));
  EXPECT_LE(c.maxChunk(), ProcessRunner::kMaxChunk);
}

TEST(ProcessRunnerTest, ReportsSignalThatKilledCommand) {
  Collector c;
  auto runner = startOrDie(script("kill -9 $$"), c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kSignaled);
  EXPECT_EQ(c.exit().signal, SIGKILL);
  EXPECT_FALSE(c.exit().exit_code.has_value());
}

TEST(ProcessRunnerTest, TimeoutKillsWholeProcessGroup) {
  Collector c;
  ProcessSpec spec = script("sleep 60 & echo $!; wait");
  spec.timeout_ms = 1000;
  spec.kill_grace_ms = 5000;
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  ProcessExit exit = c.exit();
  EXPECT_EQ(exit.kind, ExitKind::kTimedOut);
  EXPECT_EQ(exit.signal, SIGTERM);
  EXPECT_NE(exit.error.find("timed out after 1000 ms"), std::string::npos) << exit.error;
  EXPECT_GE(exit.finished_at_ms - exit.started_at_ms, 1000);
  ASSERT_FALSE(c.out().empty()) << "the script never printed its grandchild's pid";
  EXPECT_TRUE(waitUntilGone(firstLineAsPid(c.out())));
}

TEST(ProcessRunnerTest, IgnoredTermEscalatesToKillAfterGrace) {
  Collector c;
  ProcessSpec spec = script("trap '' TERM; sleep 60 & echo $!; wait");
  spec.kill_grace_ms = 300;
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitStdout("\n"));
  runner->cancel("operator pressed stop");
  ASSERT_TRUE(c.waitExit());
  ProcessExit exit = c.exit();
  EXPECT_EQ(exit.kind, ExitKind::kCancelled);
  EXPECT_EQ(exit.error, "operator pressed stop");
  EXPECT_EQ(exit.signal, SIGKILL);
  EXPECT_GE(exit.finished_at_ms - exit.started_at_ms, 300);
  EXPECT_TRUE(waitUntilGone(firstLineAsPid(c.out())));
}

TEST(ProcessRunnerTest, CancelTerminatesCommand) {
  Collector c;
  ProcessSpec spec;
  spec.argv = {"sleep", "60"};
  auto runner = startOrDie(spec, c);
  runner->cancel("stopped by operator");
  runner->cancel("a second reason is ignored", ExitKind::kTimedOut);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kCancelled);
  EXPECT_EQ(c.exit().error, "stopped by operator");
  EXPECT_EQ(c.exit().signal, SIGTERM);
  EXPECT_TRUE(processGone(runner->pid()));
}

TEST(ProcessRunnerTest, CancelReportsRequestedKind) {
  Collector c;
  ProcessSpec spec;
  spec.argv = {"sleep", "60"};
  auto runner = startOrDie(spec, c);
  runner->cancel("server-side deadline passed", ExitKind::kTimedOut);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kTimedOut);
  EXPECT_EQ(c.exit().error, "server-side deadline passed");
}

TEST(ProcessRunnerTest, CancelAfterExitKeepsOutcome) {
  Collector c;
  auto runner = startOrDie(script("exit 4"), c);
  ASSERT_TRUE(c.waitExit());
  runner->cancel("too late");
  EXPECT_EQ(c.exit().kind, ExitKind::kExited);
  EXPECT_EQ(c.exit().exit_code, 4);
  EXPECT_EQ(c.exitCalls(), 1);
}

TEST(ProcessRunnerTest, AppliesEnvAndCwd) {
  TempDir dir;
  setenv("MUSTER_TEST_INHERITED", "from-agent", 1);
  Collector c;
  ProcessSpec spec = script(
      "printf '%s|%s|%s\\n' \"$MUSTER_A\" \"$HOME\" \"$MUSTER_TEST_INHERITED\";"
      " pwd -P");
  spec.env = {{"MUSTER_A", "alpha beta"}, {"HOME", "/override"}};
  spec.cwd = dir.path();
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  unsetenv("MUSTER_TEST_INHERITED");
  EXPECT_EQ(c.exit().exit_code, 0) << c.err();
  EXPECT_EQ(c.out(), "alpha beta|/override|from-agent\n" +
                         std::filesystem::canonical(dir.path()).string() + "\n");
}

TEST(ProcessRunnerTest, LooksUpArgvInCommandPath) {
  TempDir dir;
  dir.writeFile("muster-hello", "#!/bin/sh\necho hello \"$1\"\n", 0755);
  Collector c;
  ProcessSpec spec;
  spec.argv = {"muster-hello", "world"};
  spec.env = {{"PATH", "/nonexistent:" + dir.path() + ":/usr/bin:/bin"}};
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kExited) << c.exit().error;
  EXPECT_EQ(c.out(), "hello world\n");
}

TEST(ProcessRunnerTest, RunsFileWithoutShebangThroughShell) {
  TempDir dir;
  std::string file = dir.writeFile("plain", "echo plain \"$1\"\n", 0755);
  Collector c;
  ProcessSpec spec;
  spec.argv = {file, "arg"};
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kExited) << c.exit().error;
  EXPECT_EQ(c.out(), "plain arg\n");
}

TEST(ProcessRunnerTest, MissingExecutableFailsToStart) {
  Collector c;
  ProcessSpec spec;
  spec.argv = {"muster-no-such-binary"};
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  ProcessExit exit = c.exit();
  EXPECT_EQ(exit.kind, ExitKind::kStartFailed);
  EXPECT_EQ(
      exit.error.rfind("cannot execute 'muster-no-such-binary': No such file or directory", 0), 0u)
      << exit.error;
  EXPECT_NE(exit.error.find("searched PATH="), std::string::npos) << exit.error;
  EXPECT_FALSE(exit.exit_code.has_value());
  EXPECT_EQ(c.out() + c.err(), "");
}

TEST(ProcessRunnerTest, NonExecutableFileFailsToStart) {
  TempDir dir;
  std::string file = dir.writeFile("not-exec", "echo no\n", 0644);
  Collector c;
  ProcessSpec spec;
  spec.argv = {file};
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kStartFailed);
  EXPECT_EQ(c.exit().error, "cannot execute '" + file + "': Permission denied");
}

TEST(ProcessRunnerTest, MissingCwdFailsToStart) {
  Collector c;
  ProcessSpec spec = script("echo never");
  spec.cwd = "/nonexistent/muster";
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kStartFailed);
  EXPECT_EQ(c.exit().error,
            "cannot change to working directory '/nonexistent/muster' for '/bin/sh': "
            "No such file or directory");
  EXPECT_EQ(c.out(), "");
}

TEST(ProcessRunnerTest, BackgroundGrandchildHoldingStdoutDoesNotHang) {
  Collector c;
  auto runner = startOrDie(script("sleep 60 & echo $!; echo bye >&2"), c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().kind, ExitKind::kExited);
  EXPECT_EQ(c.exit().exit_code, 0);
  EXPECT_EQ(c.err(), "bye\n");
  EXPECT_TRUE(waitUntilGone(firstLineAsPid(c.out())));
}

TEST(ProcessRunnerTest, StdinIsDevNull) {
  Collector c;
  auto runner = startOrDie(script("cat; echo done"), c);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.out(), "done\n");
}

TEST(ProcessRunnerTest, AgentFdsAndIgnoredSignalsDoNotLeakIntoCommand) {
  int leaked = open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaked, 0);
  auto old_pipe = signal(SIGPIPE, SIG_IGN);
  Collector c;
  ProcessSpec spec;
  spec.argv = {"sh", "-c",
               "[ -e /proc/self/fd/" + std::to_string(leaked) +
                   " ] && echo leaked || echo closed; exec grep SigIgn /proc/self/status"};
  auto runner = startOrDie(spec, c);
  ASSERT_TRUE(c.waitExit());
  signal(SIGPIPE, old_pipe);
  close(leaked);
  EXPECT_EQ(c.out(), "closed\nSigIgn:\t0000000000000000\n");
}

TEST(ProcessRunnerTest, RunsInOwnProcessGroup) {
  Collector c;
  auto runner = startOrDie(script("echo $$; cut -d' ' -f5 /proc/$$/stat"), c);
  ASSERT_TRUE(c.waitExit());
  std::string out = c.out();
  pid_t pid = firstLineAsPid(out);
  EXPECT_EQ(pid, runner->pid());
  std::string pgid = out.substr(out.find('\n') + 1);
  EXPECT_EQ(std::stol(pgid), pid);
}

TEST(ProcessRunnerTest, InvalidSpecIsRejected) {
  Collector c;
  auto start = [&](ProcessSpec spec) {
    return ProcessRunner::start(std::move(spec), c.outputFn(), c.exitFn()).status();
  };
  EXPECT_EQ(start(ProcessSpec{}).code(), absl::StatusCode::kInvalidArgument);
  ProcessSpec both = script("true");
  both.argv = {"true"};
  EXPECT_EQ(start(both).code(), absl::StatusCode::kInvalidArgument);
  ProcessSpec bad_env = script("true");
  bad_env.env = {{"A=B", "c"}};
  EXPECT_EQ(start(bad_env).code(), absl::StatusCode::kInvalidArgument);
  ProcessSpec negative = script("true");
  negative.timeout_ms = -1;
  EXPECT_EQ(start(negative).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ProcessRunner::start(script("true"), nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.exitCalls(), 0);
}

TEST(ProcessRunnerTest, DestructorKillsRunningCommandAndReportsOnce) {
  Collector c;
  auto runner = startOrDie(script("sleep 60 & echo $!; wait"), c);
  ASSERT_TRUE(c.waitStdout("\n"));
  pid_t leader = runner->pid();
  runner.reset();
  ASSERT_EQ(c.exitCalls(), 1);  // reported before the destructor returned
  EXPECT_EQ(c.exit().kind, ExitKind::kCancelled);
  EXPECT_EQ(c.exit().signal, SIGKILL);
  EXPECT_TRUE(processGone(leader));
  EXPECT_TRUE(waitUntilGone(firstLineAsPid(c.out())));
}

TEST(ProcessRunnerTest, CanBeDestroyedFromOnExit) {
  std::mutex mu;
  std::condition_variable cv;
  std::unique_ptr<ProcessRunner> holder;
  bool destroyed = false;
  ProcessSpec spec;
  spec.argv = {"sleep", "60"};
  auto runner = ProcessRunner::start(spec, nullptr, [&](const ProcessExit&) {
    std::unique_ptr<ProcessRunner> doomed;
    {
      std::lock_guard lock(mu);
      doomed = std::move(holder);
    }
    doomed.reset();
    std::lock_guard lock(mu);
    destroyed = true;
    cv.notify_all();
  });
  ASSERT_TRUE(runner.ok()) << runner.status();
  {
    std::lock_guard lock(mu);
    holder = std::move(*runner);
    holder->cancel("done with it");
  }
  std::unique_lock lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, kBound, [&] { return destroyed; }));
}

TEST(ProcessRunnerTest, WorksWithoutPidfd) {
  ProcessRunner::setUsePidfdForTest(false);
  Collector c;
  auto runner = startOrDie(script("echo out; echo err >&2; exit 3"), c);
  Collector t;
  ProcessSpec spec = script("sleep 60");
  spec.timeout_ms = 200;
  auto timed = startOrDie(spec, t);
  ProcessRunner::setUsePidfdForTest(true);
  ASSERT_TRUE(c.waitExit());
  EXPECT_EQ(c.exit().exit_code, 3);
  EXPECT_EQ(c.out(), "out\n");
  EXPECT_EQ(c.err(), "err\n");
  ASSERT_TRUE(t.waitExit());
  EXPECT_EQ(t.exit().kind, ExitKind::kTimedOut);
}

TEST(ProcessRunnerTest, ManyConcurrentRunnersReapOnlyTheirOwnChild) {
  constexpr int kCount = 16;
  std::vector<Collector> collectors(kCount);
  std::vector<std::unique_ptr<ProcessRunner>> runners;
  for (int i = 0; i < kCount; ++i) {
    runners.push_back(startOrDie(
        script("echo " + std::to_string(i) + "; exit " + std::to_string(i)), collectors[i]));
  }
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(collectors[i].waitExit());
    EXPECT_EQ(collectors[i].exit().exit_code, i);
    EXPECT_EQ(collectors[i].out(), std::to_string(i) + "\n");
  }
}

}  // namespace
}  // namespace muster::agent
