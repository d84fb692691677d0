// The workload: init starts it once the VM is set up (guest/boot.h,
// guest/network.h), in its own session, with pipes for its stdio (or a
// pseudo-terminal, guest/terminal.h) that the supervisor (guest/supervisor.h)
// forwards to the host, and with the spec's
// confinement (guest/spawn.h).
//
//   auto child_signals = blockChildSignals();        // before the first child (support.h)
//   auto workload = startWorkload(spec, prepared);
//   Supervisor(port, std::move(*workload), ...).run();
#pragma once

#include <sys/types.h>

#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "guest/confinement.h"
#include "microvm/result.h"

namespace microvm::guest {

// Init's ends of the workload's stdio. With a tty (spec.tty) stdout_read is
// the pty's master, stdin_write (with an open stdin) a second fd of it, and
// stderr_read is invalid: the terminal merges the two outputs.
struct Workload {
  pid_t pid;
  UniqueFd stdin_write;  // invalid unless the spec opens stdin
  UniqueFd stdout_read;
  UniqueFd stderr_read;
  bool tty = false;
};

// Forks the workload. `prepared`: the confinement, compiled already; nullptr:
// the child compiles it.
Result<Workload> startWorkload(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared);

}  // namespace microvm::guest
