#include "guest/confinement.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

#include "agent/seccomp_filter.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

Result<void> switchUser(const ExecUser& user) {
  if (::setgroups(user.supplementary_groups.size(), user.supplementary_groups.data()) != 0) {
    return systemError("setgroups");
  }
  if (::setgid(user.gid) != 0) return systemError("setgid " + std::to_string(user.gid));
  if (::setuid(user.uid) != 0) return systemError("setuid " + std::to_string(user.uid));
  return {};
}

Result<int> readLastCapability() {
  constexpr char kPath[] = "/proc/sys/kernel/cap_last_cap";
  auto text = readFileIfExists(kPath);
  if (!text.ok()) return text.error();
  return parseLastCapability(*text);
}

// Needs CAP_SETPCAP in the effective set: done while the child still has all
// of init's capabilities.
Result<void> dropBoundingCapabilities(const CapabilityPlan& plan) {
  for (int capability : plan.bounding_drops) {
    if (::prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0) {
      return systemError("drop capability " + std::to_string(capability) + " from the bounding set");
    }
  }
  // Init sets none, but the workload must not start with any it did not ask for.
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return systemError("clear ambient capabilities");
  return {};
}

// After the user switch. Only ever lowers the sets (the inheritable one stays
// within the bounding set dropped above), so it needs no capability itself.
// No securebits are set: SECBIT_KEEP_CAPS is off, so setuid() to a non-zero
// uid has already cleared permitted and effective, and whatever a later
// execve() could grant (setuid-root or file capabilities) is capped by the
// bounding set, or refused altogether under no_new_privs.
Result<void> setCapabilitySets(const CapabilityPlan& plan) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  for (int word = 0; word < _LINUX_CAPABILITY_U32S_3; ++word) {
    int shift = 32 * word;
    data[word].permitted = static_cast<uint32_t>(plan.permitted >> shift);
    data[word].effective = static_cast<uint32_t>(plan.effective >> shift);
    data[word].inheritable = static_cast<uint32_t>(plan.inheritable >> shift);
  }
  // SAFETY: glibc has no capset() wrapper. With version 3 the kernel reads
  // one header and _LINUX_CAPABILITY_U32S_3 data structs, both live here.
  if (::syscall(SYS_capset, &header, data) != 0) return systemError("capset");
  return {};
}

}  // namespace

CapabilityPlan planCapabilities(uint64_t mask, int last_capability, uid_t uid) {
  last_capability = std::clamp(last_capability, -1, 63);
  uint64_t known = last_capability == 63 ? ~uint64_t{0} : (uint64_t{1} << (last_capability + 1)) - 1;
  CapabilityPlan plan;
  for (int capability = 0; capability <= last_capability; ++capability) {
    if ((mask >> capability & 1) == 0) plan.bounding_drops.push_back(capability);
  }
  if (uid == 0) plan.permitted = plan.effective = plan.inheritable = mask & known;
  return plan;
}

Result<int> parseLastCapability(std::string_view text) {
  text = trim(text);
  int value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < 0) {
    return Error(ErrorCode::kUnavailable, "cannot parse /proc/sys/kernel/cap_last_cap: \"" + std::string(text) + "\"");
  }
  if (value > 63) {
    return Error(ErrorCode::kUnavailable, "/proc/sys/kernel/cap_last_cap is " + std::to_string(value) +
                                              ": capabilities above 63 do not fit the workload's capability mask");
  }
  return value;
}

bool loadSeccompBeforeUserSwitch(const CapabilityPlan& plan, bool no_new_privs) {
  return !no_new_privs && (plan.effective >> CAP_SYS_ADMIN & 1) == 0;
}

Result<PreparedConfinement> prepareConfinement(const agent::WorkloadSpec& spec, int console_fd) {
  PreparedConfinement prepared;
  // The host's program (the codec checked its size), else the rules compiled here.
  std::string program = spec.seccomp_program;
  if (program.empty()) {
    auto compiled = agent::compileSeccompProgram(spec);
    if (!compiled.ok()) return compiled.error();
    if (!compiled->skipped.empty()) {
      logTo(console_fd, "seccomp: skipping syscalls unknown to libseccomp " + agent::seccompLibraryVersion() + ": " +
                            joined(compiled->skipped, ", "));
    }
    program = std::move(compiled->program);
  }
  if (!program.empty()) {
    std::vector<sock_filter> filter(program.size() / sizeof(sock_filter));
    std::memcpy(filter.data(), program.data(), program.size());
    prepared.seccomp = std::move(filter);
  }
  auto last_capability = readLastCapability();
  if (!last_capability.ok()) return last_capability.error();
  prepared.last_capability = *last_capability;
  return prepared;
}

// The spec's resource limits, set while the process still may raise a hard
// limit (CAP_SYS_RESOURCE, before the capabilities go).
Result<void> setUlimits(const agent::WorkloadSpec& spec) {
  for (const auto& text : spec.ulimits) {
    auto limit = agent::parseUlimit(text);
    if (!limit) return limit.error();
    rlimit value{static_cast<rlim_t>(limit->soft), static_cast<rlim_t>(limit->hard)};
    if (::setrlimit(static_cast<__rlimit_resource>(limit->resource), &value) != 0) {
      return systemError("setrlimit " + text);
    }
  }
  return {};
}

Result<void> confineProcess(const agent::WorkloadSpec& spec, const ExecUser& user,
                            const PreparedConfinement& prepared) {
  if (auto limited = setUlimits(spec); !limited.ok()) return limited;
  CapabilityPlan plan = planCapabilities(spec.capabilities, prepared.last_capability, user.uid);
  const auto& filter = prepared.seccomp;
  if (auto dropped = dropBoundingCapabilities(plan); !dropped.ok()) return dropped;
  bool load_early = filter && loadSeccompBeforeUserSwitch(plan, spec.no_new_privs);
  if (load_early) {
    if (auto loaded = agent::installSeccompProgram(*filter); !loaded.ok()) return loaded;
  }
  if (auto switched = switchUser(user); !switched.ok()) return switched;
  if (auto set = setCapabilitySets(plan); !set.ok()) return set;
  if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return systemError("set no_new_privs");
  if (filter && !load_early) return agent::installSeccompProgram(*filter);
  return {};
}

}  // namespace microvm::guest
