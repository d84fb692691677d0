// The host terminal of `run -t`, `attach` to a VM made with -t, and
// `exec -t`: raw mode for the length of the command, so that keystrokes (^C
// included) reach the guest's tty untouched, and the terminal's size for the
// guest's tty.
//
//   std::optional<RawTerminal> raw;
//   if (::isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);   // restored by its destructor
//   auto size = terminalSize(STDIN_FILENO);                  // on SIGWINCH
#pragma once

#include <termios.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace microvm::cli {

// Raw mode while it lives. Restored on every return path by the destructor;
// signals cannot bypass it, since the commands that use it receive them
// through sigwait or a signalfd. The file status flags are restored too: the
// runner reading the terminal sets O_NONBLOCK on it, which the user's shell
// shares.
class RawTerminal {
 public:
  explicit RawTerminal(int fd);
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal();

 private:
  int fd_ = -1;
  int status_flags_ = -1;
  termios saved_{};
};

// The size of the terminal at `fd` as {rows, cols}; nullopt if `fd` is not a
// terminal or reports 0x0.
std::optional<std::pair<uint16_t, uint16_t>> terminalSize(int fd);

// The first of stdin and stdout that is a terminal; -1 if neither is.
int hostTerminalFd();

// Adds our TERM to `env` unless it sets one (what `docker run -t` does).
void passTerm(std::vector<std::string>& env);

}  // namespace microvm::cli
