// Signals to a foreground `microvm run` reach the workload as themselves, as
// with Docker's sig-proxy: Ctrl-C typed on the CLI's terminal is SIGINT in
// the guest, SIGUSR1 is SIGUSR1, and the hard stop still follows a second
// Ctrl-C.
#include <gtest/gtest.h>
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

// The workload sleeps in short steps: a trap runs once the shell's current
// foreground command is done.
std::string waitingScript(const std::string& traps) {
  return traps + "; echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; exit 9";
}

TEST(SignalTest, CtrlCOnTheTerminalIsSigintToTheWorkload) {
  PtyCli cli(runArgs({}, {"/bin/sh", "-c", waitingScript("trap 'echo got-int; exit 42' INT")}),
             winsize{24, 80, 0, 0});
  ASSERT_TRUE(cli.waitFor("ready", seconds(120))) << cli.output();
  cli.type("\x03");
  EXPECT_TRUE(cli.waitFor("got-int", seconds(60))) << cli.output();
  // 42, not 143 (SIGTERM in its place) nor 137 (the runner or QEMU taking
  // the terminal's SIGINT too and stopping the VM hard).
  EXPECT_EQ(cli.wait(seconds(60)), 42) << cli.output();
}

TEST(SignalTest, ASecondCtrlCStillStopsTheVmHard) {
  PtyCli cli(runArgs({"--stop-timeout", "600"}, {"/bin/sh", "-c", waitingScript("trap 'echo got-int' INT")}),
             winsize{24, 80, 0, 0});
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
