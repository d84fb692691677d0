// Pseudo-terminals in the guest: the one implementation behind `exec --tty`
// (guest/agent_exec.cc) and a workload run with a tty (guest/workload.cc,
// guest/supervisor.cc). The master stays with init or the agent, which relay
// it to the host; the slave becomes the process's controlling terminal and
// stdio.
//
//   auto terminal = openTerminal(rows, cols);   // in the parent
//   // in the forked child, after setsid():
//   if (!becomeControllingTerminal(terminal->slave.get())) _exit(kCannotRunCode);
//   // in the parent, on the host's resize and the host's end of input:
//   setTerminalSize(terminal->master.get(), rows, cols);
//   sendEndOfInput(terminal->master.get());
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm::guest {

// A pseudo-terminal pair: the master for the relay, the slave for the process.
struct Terminal {
  UniqueFd master;
  UniqueFd slave;
};

// Opens a pair (both close-on-exec) sized rows x cols; 0: the kernel's default.
Result<Terminal> openTerminal(uint16_t rows, uint16_t cols);

// In a child that has just called setsid(): `slave` becomes its controlling
// terminal and its stdin, stdout and stderr. False if either step failed.
bool becomeControllingTerminal(int slave);

// Resizes the terminal (the kernel sends SIGWINCH to its foreground process
// group); 0 rows or cols: ignored.
void setTerminalSize(int master, uint16_t rows, uint16_t cols);

// The end of the host's input, as a terminal has it: its EOF character (^D
// unless changed), which a reader in canonical mode sees as end of file.
void sendEndOfInput(int master);

// TERM=xterm unless `env` sets TERM: what Docker gives a process on a tty.
void addTerminalDefault(std::vector<std::string>& env);

}  // namespace microvm::guest
