// How the runner confines itself once QEMU runs. As root it becomes the VM's
// runner id (a uid and gid of its own, the same number, beside QEMU's:
// vmm_user.h) with no supplementary groups, keeping only the capabilities
// it still needs, for good (bounding set, no_new_privs). Then, as any user,
// it installs its seccomp filter (runner_seccomp.h, linked into the runner
// binary only).
//
//   MICROVM_TRY(becomeRunnerUser(user.runnerUid(), user.runnerGid(), kRunnerCapabilities));
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "agent/control_protocol.h"
#include "microvm/result.h"

namespace microvm {

// What the runner keeps: CAP_KILL to stop its QEMU (another uid) and
// CAP_NET_BIND_SERVICE for `port add` of a port below 1024.
uint64_t runnerCapabilities();

// Sets uid and gid (real, effective, saved) and no supplementary groups,
// keeps only `keep` (a mask of CAP_* bits) as permitted and effective, none
// inheritable or ambient, drops the rest from the bounding set, and sets
// no_new_privs. The caller must be root.
Result<void> becomeRunnerUser(uid_t uid, gid_t gid, uint64_t keep);

// The runner's seccomp filter: installed last, after no_new_privs.
using RunnerSeccomp = Result<void> (*)();

// Compiles the workload's seccomp profile into spec.seccomp_program
// (agent/seccomp_filter.h), so that init need not under emulation; returns
// a note for runner.log (syscalls libseccomp does not know), or the
// profile's error, which init then reports as it always has. The runner
// binary links libseccomp for it; the library does not.
using WorkloadSeccompCompiler = Result<std::string> (*)(agent::WorkloadSpec& spec);

}  // namespace microvm
