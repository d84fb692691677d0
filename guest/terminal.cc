#include "guest/terminal.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>

#include "base/eintr.h"
#include "guest/support.h"

namespace microvm::guest {

Result<Terminal> openTerminal(uint16_t rows, uint16_t cols) {
  UniqueFd master(retryOnEintr([] { return ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC); }));
  if (!master.valid()) return systemError("open /dev/ptmx");
  int unlock = 0;
  // SAFETY: TIOCSPTLCK reads one int, which lives on this frame.
  if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) return systemError("unlock pty");
  // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd for
  // the slave of this master, whichever devpts instance it lives in.
  UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave.valid()) return systemError("open the pty's slave");
  setTerminalSize(master.get(), rows, cols);
  return Terminal{std::move(master), std::move(slave)};
}

bool becomeControllingTerminal(int slave) {
  // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal).
  if (::ioctl(slave, TIOCSCTTY, 0) != 0) return false;
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) {
    if (::dup2(slave, fd) < 0) return false;
  }
  return true;
}

void setTerminalSize(int master, uint16_t rows, uint16_t cols) {
  if (rows == 0 || cols == 0) return;
  winsize size{rows, cols, 0, 0};
  // SAFETY: TIOCSWINSZ reads one winsize, which lives on this frame.
  (void)::ioctl(master, TIOCSWINSZ, &size);
}

void sendEndOfInput(int master) {
  char eof = 4;  // VEOF's default, ^D
  termios modes{};
  if (::tcgetattr(master, &modes) == 0) eof = static_cast<char>(modes.c_cc[VEOF]);
  (void)!::write(master, &eof, 1);
}

void addTerminalDefault(std::vector<std::string>& env) {
  if (std::none_of(env.begin(), env.end(), [](const std::string& var) { return var.starts_with("TERM="); })) {
    env.emplace_back("TERM=xterm");
  }
}

}  // namespace microvm::guest
