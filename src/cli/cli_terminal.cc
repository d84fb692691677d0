#include "cli_terminal.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace microvm::cli {

RawTerminal::RawTerminal(int fd) {
  if (::tcgetattr(fd, &saved_) != 0) return;
  status_flags_ = ::fcntl(fd, F_GETFL);
  termios raw = saved_;
  ::cfmakeraw(&raw);
  if (::tcsetattr(fd, TCSANOW, &raw) == 0) fd_ = fd;
}

RawTerminal::~RawTerminal() {
  if (fd_ < 0) return;
  ::tcsetattr(fd_, TCSANOW, &saved_);
  if (status_flags_ >= 0) ::fcntl(fd_, F_SETFL, status_flags_);
}

std::optional<std::pair<uint16_t, uint16_t>> terminalSize(int fd) {
  winsize size{};
  // SAFETY: TIOCGWINSZ fills one winsize, which lives on this frame.
  if (fd < 0 || ::ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_row == 0 || size.ws_col == 0) return std::nullopt;
  return std::make_pair(size.ws_row, size.ws_col);
}

int hostTerminalFd() {
  if (::isatty(STDIN_FILENO)) return STDIN_FILENO;
  if (::isatty(STDOUT_FILENO)) return STDOUT_FILENO;
  return -1;
}

void passTerm(std::vector<std::string>& env) {
  const char* term = std::getenv("TERM");
  bool has_term =
      std::any_of(env.begin(), env.end(), [](const std::string& var) { return var.rfind("TERM=", 0) == 0; });
  if (term && *term && !has_term) env.push_back(std::string("TERM=") + term);
}

}  // namespace microvm::cli
