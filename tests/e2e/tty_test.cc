// `microvm run -t`: the main workload on a pseudo-terminal in the guest,
// driven through a real pty of ours as a user's terminal would (PtyCli):
// `tty` names a /dev/pts device, `stty size` follows our terminal's size and
// its resizes, typed input reaches the shell, and the exit code comes back;
// booted cold and restored from a boot template, and detached then attached.
// The tests use a memory size of their own, so that the template is theirs.
#include <gtest/gtest.h>

#include <sys/ioctl.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;

const std::vector<std::string> kMemory = {"--memory", "376"};

std::string bootPath(const std::string& ref) { return inspect(ref)["boot"].value("path", ""); }

// A shell on the VM's tty, with `flags`, checked from the prompt to the exit.
void checkShellOnATty(const std::string& name, std::vector<std::string> flags) {
  flags.insert(flags.end(), kMemory.begin(), kMemory.end());
  std::vector<std::string> args = {"run", "-it", "--name", name, "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(), {"--", "/bin/sh"});
  PtyCli cli(args, winsize{33, 101, 0, 0});
  // An interactive busybox sh prompts "# " for root: only on a terminal.
  ASSERT_TRUE(cli.waitFor("# ", seconds(120))) << cli.output();
  // The echo of the typed line holds none of the answers: "term''set".
  cli.type("tty; stty size; test -n \"$TERM\" && echo term''set\r");
  ASSERT_TRUE(cli.waitFor("termset\r\n", seconds(30))) << cli.output();
  EXPECT_NE(cli.output().find("/dev/pts/"), std::string::npos) << cli.output();
  EXPECT_NE(cli.output().find("33 101\r\n"), std::string::npos) << cli.output();
  cli.resize(winsize{40, 120, 0, 0});
  // The resize travels CLI -> runner -> init; each `stty size` after it has
  // arrived shows it.
  bool resized = false;
  for (int attempt = 0; attempt < 20 && !resized; ++attempt) {
    cli.type("stty size\r");
    resized = cli.waitFor("40 120", seconds(3));
  }
  EXPECT_TRUE(resized) << cli.output();
  // Typed input runs; the guest's tty echoes it and converts \n to \r\n.
  cli.type("echo h\"\"i; exit 7\r");
  ASSERT_TRUE(cli.waitFor("hi\r\n", seconds(30))) << cli.output();
  EXPECT_EQ(cli.wait(seconds(60)), 7) << cli.output();
}

TEST(RunTtyTest, ColdBootGivesTheWorkloadATty) {
  (void)microvm({"rm", "-f", "tty-cold"});
  checkShellOnATty("tty-cold", {"--no-template"});
  EXPECT_EQ(bootPath("tty-cold"), "cold");
  EXPECT_EQ(inspect("tty-cold")["config"].value("tty", false), true);
  EXPECT_EQ(microvm({"rm", "-f", "tty-cold"}).exit_code, 0);
}

TEST(RunTtyTest, ARestoredTemplateGivesTheWorkloadATty) {
  // The machine's first run saves its template; the tty run restores it.
  auto made = microvm(runArgs(kMemory, {"/bin/true"}));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  (void)microvm({"rm", "-f", "tty-template"});
  checkShellOnATty("tty-template", {});
  EXPECT_EQ(bootPath("tty-template"), "template") << inspect("tty-template").dump();
  EXPECT_EQ(microvm({"rm", "-f", "tty-template"}).exit_code, 0);
}

TEST(RunTtyTest, ADetachedTtyWorkloadCanBeAttached) {
  (void)microvm({"rm", "-f", "tty-attach"});
  std::vector<std::string> args = {"run", "-d", "-it", "--name", "tty-attach", "--rootfs", rootfs().string()};
  args.insert(args.end(), kMemory.begin(), kMemory.end());
  args.insert(args.end(), {"--", "/bin/sh"});
  auto started = microvm(args);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  PtyCli cli({"attach", "tty-attach"}, winsize{25, 90, 0, 0});
  // The prompt came before we attached: ask for output of our own. Input
  // sent before the shell reads is kept by the guest's tty.
  bool answered = false;
  for (int attempt = 0; attempt < 30 && !answered; ++attempt) {
    cli.type("echo at''tached\r");
    answered = cli.waitFor("attached\r\n", seconds(4));
  }
  ASSERT_TRUE(answered) << cli.output();
  // attach gives the guest's tty our size.
  bool sized = false;
  for (int attempt = 0; attempt < 20 && !sized; ++attempt) {
    cli.type("stty size\r");
    sized = cli.waitFor("25 90", seconds(3));
  }
  EXPECT_TRUE(sized) << cli.output();
  cli.type("tty; exit 4\r");
  EXPECT_TRUE(cli.waitFor("/dev/pts/", seconds(30))) << cli.output();
  EXPECT_EQ(cli.wait(seconds(60)), 4) << cli.output();
  EXPECT_EQ(microvm({"rm", "-f", "tty-attach"}).exit_code, 0);
}

}  // namespace
}  // namespace microvm::e2e
