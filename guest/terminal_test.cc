// The guest's pseudo-terminals, on the host's /dev/ptmx: size, resize, the
// EOF character, the controlling terminal of a new session, and TERM.
#include "guest/terminal.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace microvm::guest {
namespace {

winsize sizeOf(int fd) {
  winsize size{};
  EXPECT_EQ(::ioctl(fd, TIOCGWINSZ, &size), 0);
  return size;
}

TEST(TerminalTest, OpensAtTheGivenSizeAndResizes) {
  auto terminal = openTerminal(30, 100);
  ASSERT_TRUE(terminal.ok()) << terminal.error().message();
  EXPECT_EQ(sizeOf(terminal->slave.get()).ws_row, 30);
  EXPECT_EQ(sizeOf(terminal->slave.get()).ws_col, 100);
  setTerminalSize(terminal->master.get(), 40, 120);
  EXPECT_EQ(sizeOf(terminal->slave.get()).ws_row, 40);
  EXPECT_EQ(sizeOf(terminal->slave.get()).ws_col, 120);
  setTerminalSize(terminal->master.get(), 0, 50);  // ignored
  EXPECT_EQ(sizeOf(terminal->slave.get()).ws_col, 120);
}

TEST(TerminalTest, EndOfInputIsEndOfFileForACanonicalReader) {
  auto terminal = openTerminal(24, 80);
  ASSERT_TRUE(terminal.ok());
  ASSERT_EQ(::write(terminal->master.get(), "line\n", 5), 5);
  sendEndOfInput(terminal->master.get());
  char buffer[64];
  EXPECT_EQ(::read(terminal->slave.get(), buffer, sizeof buffer), 5);
  pollfd ready{terminal->slave.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&ready, 1, 5000), 1);
  EXPECT_EQ(::read(terminal->slave.get(), buffer, sizeof buffer), 0);  // EOF
}

TEST(TerminalTest, TheSlaveBecomesTheControllingTerminalAndStdioOfANewSession) {
  auto terminal = openTerminal(24, 80);
  ASSERT_TRUE(terminal.ok());
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setsid();
    if (!becomeControllingTerminal(terminal->slave.get())) ::_exit(1);
    // Stdio is the tty, it is ours, and we are its foreground process group.
    bool ok = ::isatty(0) && ::isatty(1) && ::isatty(2) && ::tcgetsid(0) == ::getsid(0) &&
              ::tcgetpgrp(0) == ::getpgrp();
    ::_exit(ok ? 0 : 2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(TerminalTest, TermDefaultsToXtermUnlessSet) {
  std::vector<std::string> env = {"A=1"};
  addTerminalDefault(env);
  EXPECT_EQ(env, (std::vector<std::string>{"A=1", "TERM=xterm"}));
  std::vector<std::string> set = {"TERM=vt100"};
  addTerminalDefault(set);
  EXPECT_EQ(set, std::vector<std::string>{"TERM=vt100"});
}

}  // namespace
}  // namespace microvm::guest
