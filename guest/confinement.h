// How a process in the guest is confined: the capability bounding set and
// sets, the user switch, no_new_privs and the seccomp filter, from the
// workload's spec. Both of the guest's process starters apply it in the child
// before execvp: init for the workload (guest/workload.h) and the agent for
// every exec'd command (guest/agent_exec.cc), through execConfined
// (guest/spawn.h). A failure there is the process's own (its stderr, exit 126).
// What PID 1 applies to the whole VM instead (volumes, sysctls) is in
// guest/boot.h; a failure there stops the VM.
//
//   auto prepared = prepareConfinement(spec, STDERR_FILENO);   // once, in init
//   ...in the child, after the user is resolved:
//   if (auto confined = confineProcess(spec, *user, *prepared); !confined.ok()) fail(...);
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "guest/users.h"
#include "microvm/result.h"

namespace microvm::guest {

// The workload's capabilities, from the host's mask (bit N = capability N).
// The bounding set is the ceiling in every case, and a dropped bounding
// capability can never come back. A root workload also gets the mask as its
// permitted, effective and inheritable sets. A non-root workload starts with
// none: setuid() to a non-zero uid clears permitted and effective, and its
// inheritable set is emptied too (as Docker does since CVE-2022-24769), so
// that file-inheritable capabilities grant nothing. Such a workload can only
// gain capabilities by executing a setuid-root or file-capability program, and
// then only those in the mask; no_new_privs forbids even that.
struct CapabilityPlan {
  std::vector<int> bounding_drops;  // ascending: every capability up to the last not in the mask
  uint64_t permitted = 0;
  uint64_t effective = 0;
  uint64_t inheritable = 0;
};

// `last_capability` is the kernel's /proc/sys/kernel/cap_last_cap; mask bits
// above it are ignored.
CapabilityPlan planCapabilities(uint64_t mask, int last_capability, uid_t uid);

// Parses the text of /proc/sys/kernel/cap_last_cap ("40\n"). Values above 63
// cannot be expressed in the 64-bit mask and are refused rather than left in
// the bounding set.
Result<int> parseLastCapability(std::string_view text);

// Loading a seccomp filter without no_new_privs needs CAP_SYS_ADMIN in the
// effective set. If the workload will not have it, the filter must be loaded
// before the user switch and capset() take it away; otherwise it is loaded
// last, just before execvp, so that init's own set-up calls are not filtered.
bool loadSeccompBeforeUserSwitch(const CapabilityPlan& plan, bool no_new_privs);

// The part of the workload's confinement that does not depend on the command
// or the user, computed once: the seccomp filter compiled to BPF (the host's
// program from the spec; else built here with libseccomp, which is most of an
// exec's set-up time under emulation) and the kernel's last capability. The
// agent prepares it when it starts; every exec'd command then only installs it.
struct PreparedConfinement {
  std::optional<std::vector<sock_filter>> seccomp;  // nullopt: no filter
  int last_capability = 0;
};
// Logs skipped syscalls (see SeccompFilter) to console_fd.
Result<PreparedConfinement> prepareConfinement(const agent::WorkloadSpec& spec, int console_fd);

// Confines the calling process (a child about to exec) and makes it `user`,
// in the only order that works: the bounding set shrinks while the child
// still has CAP_SETPCAP; the user switch needs CAP_SETUID/CAP_SETGID, which
// capset() may then take away; the seccomp filter comes last, so that it does
// not filter init's own set-up, unless loading it needs a CAP_SYS_ADMIN the
// process will not keep.
Result<void> confineProcess(const agent::WorkloadSpec& spec, const ExecUser& user, const PreparedConfinement& prepared);

}  // namespace microvm::guest
