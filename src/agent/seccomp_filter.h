// The workload's seccomp filter: the host's profile (WorkloadSpec's
// seccomp_default and seccomp_rules) parsed and checked, and compiled with
// libseccomp to the BPF program that init installs. The runner compiles it
// and sends the program in the spec (WorkloadSpec::seccomp_program), so the
// guest need not compile it under emulation; init compiles it itself when a
// spec comes without one. Init prepares it once (guest/confinement.h); every
// confined process then only installs it. This target names no libseccomp:
// the runner binary links the shared library, init the static one.
//
//   auto profile = parseSeccompProfile("errno:1", {"allow:read", "allow:execve"});
//   auto filter = buildSeccompFilter(**profile);     // *profile: nullopt = no filter
//   auto program = filter->program();                // BPF, to install later
//   installSeccompProgram(*program);
//   auto wire = compileSeccompProgram(spec);         // the runner: the spec's bytes
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/control_protocol.h"
#include "microvm/result.h"

namespace microvm::agent {

// "allow", "kill" (the whole process, by SIGSYS: exit code 159) or "errno:N"
// (the call fails with errno N, 0 to 4095, without running).
struct SeccompAction {
  enum class Kind { kAllow, kKill, kErrno };
  Kind kind = Kind::kAllow;
  int error_number = 0;  // for kErrno

  bool operator==(const SeccompAction&) const = default;
};

struct SeccompRule {
  SeccompAction action;
  std::string syscall;
  // "SYSCALL[N]=V": the rule applies only when argument N (0-5), taken as
  // the 32-bit int the kernel reads, is V. -1: always. Compare the low 32
  // bits alone, or socket(0x100000028, ...) would pass for AF_VSOCK's 40.
  int arg = -1;
  uint32_t value = 0;

  bool operator==(const SeccompRule&) const = default;
};

struct SeccompProfile {
  SeccompAction default_action;
  std::vector<SeccompRule> rules;  // no syscall twice, none with the default action
};

Result<SeccompAction> parseSeccompAction(std::string_view text);

// Parses the spec's seccomp fields: nullopt (no filter) when both are empty.
// Rules whose action is the default are dropped, as are exact repeats; one
// syscall with two different actions (for one condition), with rules both
// with and without a condition, or rules without a default action, are
// errors (the host meant something init cannot guess). So is a profile that
// does not allow execve, which would keep the workload from ever starting.
Result<std::optional<SeccompProfile>> parseSeccompProfile(std::string_view default_action,
                                                          const std::vector<std::string>& rules);

// A libseccomp filter for the native architecture only, built but not loaded.
// The guest kernel has neither IA32_EMULATION nor X86_X32_ABI, so no other
// syscall ABI can be entered; should one ever be, a call through it kills the
// process (the filter's bad-architecture action) instead of bypassing the
// filter. The filter does not set no_new_privs itself: that is the spec's
// choice, applied before load() (see loadSeccompBeforeUserSwitch).
class SeccompFilter {
 public:
  SeccompFilter(SeccompFilter&& other) noexcept;
  SeccompFilter& operator=(SeccompFilter&& other) noexcept;
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;
  ~SeccompFilter();

  // Installs the filter on the calling thread (init starts no threads).
  Result<void> load();
  // The filter as the BPF program load() would install.
  Result<std::vector<sock_filter>> program() const;
  // Rule syscalls that this libseccomp does not know, skipped; the host may
  // send a profile written for a newer kernel.
  const std::vector<std::string>& skippedSyscalls() const { return skipped_; }

 private:
  friend Result<SeccompFilter> buildSeccompFilter(const SeccompProfile& profile);
  explicit SeccompFilter(void* context) : context_(context) {}

  void* context_;  // scmp_filter_ctx, which libseccomp defines as void*
  std::vector<std::string> skipped_;
};

Result<SeccompFilter> buildSeccompFilter(const SeccompProfile& profile);
// Installs a program from SeccompFilter::program() on the calling thread.
Result<void> installSeccompProgram(const std::vector<sock_filter>& program);

// "2.5.4": the libseccomp linked in, for the log of skipped syscalls.
std::string seccompLibraryVersion();

struct CompiledSeccomp {
  std::string program;                // WorkloadSpec::seccomp_program; empty: no filter
  std::vector<std::string> skipped;   // as SeccompFilter::skippedSyscalls()
};
// The spec's profile as the program for WorkloadSpec::seccomp_program. An
// error is the profile's, which init would report the same way.
Result<CompiledSeccomp> compileSeccompProgram(const WorkloadSpec& spec);

}  // namespace microvm::agent
