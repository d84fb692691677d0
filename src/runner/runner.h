// The runner: one process per VM, started detached by the library. It owns
// the VMM process, speaks the control protocol with microvm-init, forwards
// the workload's output, records state.json, and cleans up (--rm) at the end.
// Its whole event loop is one EventLoop: the control socket, a signalfd, the
// request socket, attached clients and stdin, plus the stop timers.
//
// Signals it understands (sent by the CLI, `stop`, or a user):
//   SIGTERM / SIGINT / SIGHUP  forward to the workload; after the VM's stop
//                              timeout, or on a second signal, hard-stop it.
//
// Its exit status is the workload's exit code (125 if the VM failed, 137 if
// it was hard-stopped), so a caller can wait for it directly.
#pragma once

#include <filesystem>

#include "runner/runner_confinement.h"

namespace microvm {

// Runs the VM described by vm_dir/spec.json. Workload stdout/stderr are
// forwarded to out_fd/err_fd (a closed reader there is not an error); with an
// open stdin in the spec, in_fd (if not -1) feeds the workload's stdin.
// Once QEMU runs, a runner started as root becomes the VM's runner id
// (runner_confinement.h); any runner then installs `seccomp` if given.
// With `compile_seccomp`, the spec brings init the workload's seccomp filter
// compiled.
int runVm(const std::filesystem::path& vm_dir, int in_fd, int out_fd, int err_fd, RunnerSeccomp seccomp = nullptr,
          WorkloadSeccompCompiler compile_seccomp = nullptr);

// `microvm-runner VM_DIR [--stdin]`: the runner binary's whole main.
int runnerMain(int argc, char** argv, RunnerSeccomp seccomp = nullptr, WorkloadSeccompCompiler compile_seccomp = nullptr);

}  // namespace microvm
