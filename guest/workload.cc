#include "guest/workload.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/eintr.h"
#include "guest/spawn.h"
#include "guest/support.h"
#include "guest/terminal.h"

namespace microvm::guest {
namespace {

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

// A pipe whose read end (init's) is non-blocking and whose write end (the
// workload's stdout or stderr) stays blocking, as programs expect.
Result<Pipe> makeOutputPipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return systemError("pipe");
  Pipe result{UniqueFd(fds[0]), UniqueFd(fds[1])};
  if (::fcntl(result.read.get(), F_SETFL, O_NONBLOCK) != 0) return systemError("fcntl O_NONBLOCK");
  return result;
}

// `stdin_fd` -1: /dev/null.
Result<void> redirectStdio(int stdin_fd, int stdout_fd, int stderr_fd) {
  if (stdin_fd < 0) stdin_fd = retryOnEintr([] { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); });
  if (stdin_fd < 0) return systemError("open /dev/null");
  if (::dup2(stdin_fd, STDIN_FILENO) < 0 || ::dup2(stdout_fd, STDOUT_FILENO) < 0 ||
      ::dup2(stderr_fd, STDERR_FILENO) < 0) {
    return systemError("dup2 stdio");
  }
  return {};
}

// `terminal_slave` >= 0: the workload's controlling terminal and stdio (the
// other fds are then unused).
[[noreturn]] void runWorkloadChild(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared, int stdin_fd,
                                   int stdout_fd, int stderr_fd, int terminal_slave) {
  try {
    resetChildSignals();
    // Its own session and process group, like a container's first process.
    ::setsid();
    // The console stays reachable for init's diagnostics; it closes at exec.
    int console_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    bool redirected = terminal_slave >= 0 ? becomeControllingTerminal(terminal_slave)
                                          : redirectStdio(stdin_fd, stdout_fd, stderr_fd).ok();
    if (!redirected) ::_exit(kCannotRunCode);
    execConfined(spec, console_fd, /*confine=*/true, prepared);
  } catch (...) {
    // Never unwind into a copy of init's own stack frames.
    ::_exit(kCannotRunCode);
  }
}

// The workload on a pseudo-terminal: init keeps the master, as the workload's
// output (stdout and stderr merged) and, with an open stdin, its input.
Result<Workload> startOnTerminal(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared) {
  auto terminal = openTerminal(spec.tty_rows, spec.tty_cols);
  if (!terminal.ok()) return terminal.error();
  if (::fcntl(terminal->master.get(), F_SETFL, O_NONBLOCK) != 0) return systemError("fcntl O_NONBLOCK");
  agent::WorkloadSpec with_term = spec;
  addTerminalDefault(with_term.env);
  pid_t pid = spawnSharingMemory(
      [&] { runWorkloadChild(with_term, prepared, -1, -1, -1, terminal->slave.get()); });
  if (pid < 0) return systemError("clone");
  Workload workload{pid, {}, {}, {}, /*tty=*/true};
  if (spec.open_stdin) {
    workload.stdin_write.reset(::fcntl(terminal->master.get(), F_DUPFD_CLOEXEC, 3));
    if (!workload.stdin_write.valid()) return systemError("dup the pty master");
  }
  // The slave closes here: the master reads EIO once the workload's
  // processes have all closed it.
  workload.stdout_read = std::move(terminal->master);
  return workload;
}

}  // namespace

Result<Workload> startWorkload(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared) {
  if (spec.tty) return startOnTerminal(spec, prepared);
  auto out = makeOutputPipe();
  if (!out.ok()) return out.error();
  auto err = makeOutputPipe();
  if (!err.ok()) return err.error();
  Pipe in;
  if (spec.open_stdin) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return systemError("pipe");
    in = Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
    // Init's end never blocks: a workload that does not read must not stall
    // the loop that forwards its output.
    if (::fcntl(in.write.get(), F_SETFL, O_NONBLOCK) != 0) return systemError("fcntl O_NONBLOCK");
  }
  pid_t pid =
      spawnSharingMemory([&] { runWorkloadChild(spec, prepared, in.read.get(), out->write.get(), err->write.get(), -1); });
  if (pid < 0) return systemError("clone");
  // The child's ends close here, so that the pipes reach EOF once every
  // process holding them has gone.
  return Workload{pid, std::move(in.write), std::move(out->read), std::move(err->read), /*tty=*/false};
}

}  // namespace microvm::guest
