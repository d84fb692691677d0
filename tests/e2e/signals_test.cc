// Signals to a foreground `microvm run` reach the workload as themselves, as
// with Docker's sig-proxy: Ctrl-C typed on the CLI's terminal is SIGINT in
// the guest, SIGUSR1 is SIGUSR1, and the hard stop still follows a second
// Ctrl-C.
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;

// `microvm ARGS...` with a pseudo-terminal as its controlling terminal, in
// its foreground process group, as a user's shell runs it: a ^C written to
// the master makes the terminal driver send SIGINT to that group.
class PtyRun {
 public:
  explicit PtyRun(const std::vector<std::string>& args) {
    std::string binary = (binDir() / "microvm").string();
    std::string home_env = "MICROVM_HOME=" + home().string();
    winsize size{24, 80, 0, 0};
    pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
    if (pid_ == 0) {
      ::putenv(home_env.data());
      std::vector<char*> argv = {binary.data()};
      for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(126);
    }
  }
  PtyRun(const PtyRun&) = delete;
  PtyRun& operator=(const PtyRun&) = delete;
  ~PtyRun() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) ::close(master_);
  }

  void type(const std::string& text) { (void)!::write(master_, text.data(), text.size()); }

  // Reads until `needle` appears in the output or `limit` passes.
  bool waitFor(const std::string& needle, seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (output_.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      pollfd watch{master_, POLLIN, 0};
      if (::poll(&watch, 1, 100) <= 0) continue;
      char buffer[4096];
      ssize_t got = ::read(master_, buffer, sizeof buffer);
      if (got <= 0) return output_.find(needle) != std::string::npos;
      output_.append(buffer, static_cast<size_t>(got));
    }
    return true;
  }

  // The exit status (128+N if killed by signal N); -1 if still running at `limit`.
  int wait(seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      waitFor("\x01never\x01", seconds(0));  // drain output so the CLI never blocks
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string output_;
};

// The workload sleeps in short steps: a trap runs once the shell's current
// foreground command is done.
std::string waitingScript(const std::string& traps) {
  return traps + "; echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; exit 9";
}

TEST(SignalTest, CtrlCOnTheTerminalIsSigintToTheWorkload) {
  PtyRun cli(runArgs({}, {"/bin/sh", "-c", waitingScript("trap 'echo got-int; exit 42' INT")}));
  ASSERT_TRUE(cli.waitFor("ready", seconds(120))) << cli.output();
  cli.type("\x03");
  EXPECT_TRUE(cli.waitFor("got-int", seconds(60))) << cli.output();
  // 42, not 143 (SIGTERM in its place) nor 137 (the runner or QEMU taking
  // the terminal's SIGINT too and stopping the VM hard).
  EXPECT_EQ(cli.wait(seconds(60)), 42) << cli.output();
}

TEST(SignalTest, ASecondCtrlCStillStopsTheVmHard) {
  PtyRun cli(runArgs({"--stop-timeout", "600"}, {"/bin/sh", "-c", waitingScript("trap 'echo got-int' INT")}));
  ASSERT_TRUE(cli.waitFor("ready", seconds(120))) << cli.output();
  cli.type("\x03");
  ASSERT_TRUE(cli.waitFor("got-int", seconds(60))) << cli.output();
  cli.type("\x03");
  EXPECT_EQ(cli.wait(seconds(60)), 137) << cli.output();
}

TEST(SignalTest, Sigusr1IsDeliveredAndStartsNoStop) {
  Cli cli(runArgs({"--stop-timeout", "1"},
                  {"/bin/sh", "-c", waitingScript("trap 'echo got-usr1' USR1; trap 'echo got-hup; exit 43' HUP")}));
  ASSERT_TRUE(cli.waitForStdout("ready", seconds(120)));
  ::kill(cli.pid(), SIGUSR1);
  ASSERT_TRUE(cli.waitForStdout("got-usr1", seconds(60)));
  // Past the stop timeout the workload still runs: SIGUSR1 is no stop.
  std::this_thread::sleep_for(seconds(3));
  ::kill(cli.pid(), SIGHUP);
  auto result = cli.finish(seconds(60));
  EXPECT_EQ(result.exit_code, 43) << result.err;
  EXPECT_EQ(result.out, "ready\ngot-usr1\ngot-hup\n");
}

}  // namespace
}  // namespace microvm::e2e
