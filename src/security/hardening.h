// The workload's confinement inside the guest, decided on the host: the
// capability set (Docker's default, with --cap-add / --cap-drop /
// --privileged), a seccomp profile (a default like Docker's, a Docker-format
// JSON profile, or none), no_new_privs, and the hardening sysctls. The guest's
// init only applies what it is sent (src/agent/protocol.h).
//
//   HardeningOptions options;
//   options.cap_drop = {"NET_RAW"};
//   auto plan = planHardening(options);      // Result<HardeningPlan>
//   spec.capabilities = plan->capabilities;
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm {

struct HardeningOptions {
  std::vector<std::string> cap_add;   // "NET_ADMIN", "CAP_NET_ADMIN" or "ALL"
  std::vector<std::string> cap_drop;
  bool privileged = false;            // every capability, no seccomp, no no_new_privs
  std::string seccomp;                // "" (default profile), "unconfined", or the text of a Docker JSON profile
  bool no_new_privs = true;
  bool sysctl_hardening = true;       // kptr_restrict, dmesg_restrict, bpf, perf, sysrq
  // The user wired --vsock ports, for the workload to use: the default
  // profile then lets it make AF_VSOCK sockets, which it otherwise refuses
  // (as Docker's does).
  bool workload_vsock = false;
};

struct HardeningPlan {
  uint64_t capabilities = 0;
  bool no_new_privs = true;
  std::string seccomp_default;        // empty: no filter
  std::vector<std::string> seccomp_rules;
  std::vector<std::string> sysctls;
};

Result<HardeningPlan> planHardening(const HardeningOptions& options);

// Capability number for "NET_ADMIN" / "CAP_NET_ADMIN" (any case).
Result<int> capabilityNumber(const std::string& name);

// Docker's default capability set, as a mask.
uint64_t dockerDefaultCapabilities();

// Converts a Docker-format seccomp profile (defaultAction + syscalls[] with
// names/action/errnoRet). Rules with argument filters cannot be expressed
// exactly; they are resolved towards the stricter side: a rule that would
// allow applies only if the default allows too (so it is dropped), and a rule
// that would deny applies to every call of the syscall.
Result<HardeningPlan> convertDockerSeccomp(const std::string& profile_json);

}  // namespace microvm
