// The runner's own seccomp filter (libseccomp; linked into the
// microvm-runner binary only, the library does not need libseccomp).
//
// The runner's loop parses hostile input (libslirp on guest frames, the
// vsock rings, the control port), so once QEMU runs it refuses, with EPERM,
// what that loop never needs and an attacker would: running programs
// (execve, fork, vfork), new namespaces, changing ids or capabilities,
// ptrace and other processes' memory, mounts, kernel modules, BPF, keyrings,
// userfaultfd, perf, io_uring, chown and device nodes, reboot and clock
// changes. Threads may still be made (clone with CLONE_THREAD).
//
//   runnerMain(argc, argv, installRunnerSeccomp);
#pragma once

#include <string>

#include "agent/control_protocol.h"
#include "microvm/result.h"

namespace microvm {

Result<void> installRunnerSeccomp();

// WorkloadSeccompCompiler (runner_confinement.h) over agent/seccomp_filter.h.
Result<std::string> compileWorkloadSeccomp(agent::WorkloadSpec& spec);

}  // namespace microvm
