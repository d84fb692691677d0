// microvm-init: the guest's PID 1. It mounts the VM's root disk, talks to the
// host over the virtio-serial control port (agent/protocol.h), runs one
// workload with Docker's process semantics, forwards its output and exit code,
// and powers the VM off. It never returns and never exits.
//
// Usage (guest/init_main.cc):
//   int main() { microvm::guest::runInit(); }
//
// The decisions about how the workload is launched (which user, which
// environment, what a failed exec reports) and how it is confined (volumes,
// sysctls, capabilities, seccomp) depend on no OS state. They are declared
// here so that they can be unit-tested on the host without a VM.
//
// Confinement happens in two places. PID 1 itself mounts the volumes and
// writes the sysctls, after the root switch and its own runtime mounts; a
// failure there stops the VM (kError, exit 125). The workload's child process
// then, before execvp: drops the bounding set, switches user, sets its
// capability sets, sets no_new_privs and loads the seccomp filter; a failure
// there is the workload's (its stderr, exit 126).
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "agent/protocol.h"

namespace microvm::guest {

// Boots the guest and runs the workload the host sends. As PID 1 it ends by
// resetting the VM (the host runs QEMU with -no-reboot, so a reset is a power
// off). Run as any other PID it refuses and exits, so that a stray invocation
// on a developer's machine cannot remount /dev or reboot the host.
[[noreturn]] void runInit();

// A failure the environment or the host can cause. The message says what
// failed, on what, and why: "mount /dev/vda on /mnt/root: no such device".
struct Error {
  std::string message;
};

// A value or an Error. Init's failures are either reported to the host (then
// the VM powers off) or logged; nothing here throws across a boundary.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return state_.index() == 0; }
  T& value() { return std::get<0>(state_); }
  const T& value() const { return std::get<0>(state_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

struct Ok {};
using Status = Result<Ok>;

// Files the host's rootfs hooks put on the VM's root disk before anything
// runs. The runner appends them to the initramfs under kInjectDir: a
// manifest of lines "<f|d> <octal mode> <uid> <gid> <data index> <path>"
// (the path last, absolute, without newlines) and the data of each file
// as kInjectDir/<index>. Init writes them into the mounted root disk,
// creating missing parent directories (0755, root), and refuses any path
// with a symlink component.
inline constexpr char kInjectDir[] = "/.microvm-inject";
struct InjectEntry {
  bool directory = false;
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  unsigned index = 0;
  std::string path;  // absolute, normalized: no "", "." or ".." components
};
Result<std::vector<InjectEntry>> parseInjectManifest(std::string_view text);

// Who the workload runs as.
struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> supplementary_groups;
  std::string home = "/";
};

// Resolves a Docker user spec ("", "uid", "uid:gid", "name", "name:group", or
// mixes) against the text of the root's /etc/passwd and /etc/group (pass ""
// for a missing file), with runc's rules:
//   - empty means uid 0;
//   - a numeric uid need not exist in passwd (then gid 0 and HOME "/");
//   - without an explicit group, the gid is the passwd entry's, and the
//     supplementary groups are the groups that list the user as a member;
//   - with one, that group (by name or number) is the only group.
// An unknown name fails with Docker's wording:
//   "unable to find user NAME: no matching entries in passwd file".
Result<ExecUser> resolveUser(std::string_view user, std::string_view passwd, std::string_view group);

// The workload's environment: `env` ("KEY=VALUE"; a repeated key keeps its
// last value) plus what Docker adds when absent: PATH, HOSTNAME (if
// `hostname` is not empty) and HOME.
std::vector<std::string> workloadEnvironment(const std::vector<std::string>& env, std::string_view hostname,
                                             std::string_view home);

inline constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the workload's stderr shows, and the exit code, when execvp(argv0)
// fails with `error_number`. Docker's codes: 127 when the program does not
// exist, 126 when it exists but cannot be run.
struct ExecFailure {
  std::string message;  // without the "microvm: " prefix or a newline
  int exit_code;
};
ExecFailure describeExecFailure(std::string_view argv0, int error_number);

// The shell's convention for a waitpid() status: the exit status, or 128+N
// for a process killed by signal N.
int exitCodeFromWaitStatus(int status);

// ---------------------------------------------------------------------------
// Shared with the agent (guest/agent.h), which runs commands the way init runs
// the workload.

// Default dispositions and an empty signal mask, for a freshly forked child.
void resetChildSignals();

// In a forked child whose stdio is already in place: resolves spec.user
// against the root's /etc/passwd and /etc/group, enters (creating it if
// needed) spec.workdir, builds the environment with workloadEnvironment(),
// applies the spec's confinement unless `confine` is false (host unit tests,
// which are not PID 1's children), and execs spec.argv. On failure it writes
// "microvm: WHY" to stderr and exits 126 or 127 (describeExecFailure).
// `console_fd` receives diagnostics (-1: none).
// The part of the workload's confinement that does not depend on the command
// or the user, computed once: the seccomp filter compiled to BPF (building it
// with libseccomp is most of an exec's set-up time under emulation) and the
// kernel's last capability. The agent prepares it when it starts; every
// exec'd command then only installs it.
struct PreparedConfinement {
  std::optional<std::vector<sock_filter>> seccomp;  // nullopt: no filter
  int last_capability = 0;
};
// Logs skipped syscalls (see SeccompFilter) to console_fd.
Result<PreparedConfinement> prepareConfinement(const agent::WorkloadSpec& spec, int console_fd);

// Runs the command with the spec's confinement (unless `confine` is false:
// host unit tests), from `prepared` if given, else prepared here.
[[noreturn]] void execConfined(const agent::WorkloadSpec& spec, int console_fd, bool confine,
                               const PreparedConfinement* prepared = nullptr);

// strerror() in the lower case of microvm's messages.
std::string describeErrno(int error_number);

// ---------------------------------------------------------------------------
// Volumes.

// The data of every 9p volume mount, before the host's extra options. The
// guest kernel (6.1) caps msize at what its virtio transport carries, 512000,
// and /proc/mounts shows that; cache=none keeps the host directory the one
// source of truth.
inline constexpr char k9pMountOptions[] = "trans=virtio,version=9p2000.L,msize=524288,cache=none";

// The mount(2) call for one volume.
struct MountCall {
  std::string source;
  std::string target;
  std::string fstype;
  unsigned long flags = 0;
  std::string data;
  std::string description;  // "volume vol0 on /data", for error messages
};

// Checks a volume and turns it into its mount(2) call:
//   9p:    mount(TAG, TARGET, "9p", ro ? MS_RDONLY : 0, k9pMountOptions[,OPTIONS])
//   tmpfs: mount("tmpfs", TARGET, "tmpfs", MS_NOSUID|MS_NODEV[|MS_RDONLY], OPTIONS)
// The target must be an absolute path other than "/" without ".." components;
// a 9p volume needs a tag. Errors read "mount volume vol0 on data: WHY".
Result<MountCall> planVolumeMount(const agent::MountSpec& volume);

// ---------------------------------------------------------------------------
// Sysctls.

struct SysctlWrite {
  std::string path;   // "/proc/sys/kernel/kptr_restrict"
  std::string value;  // "2"
};

// Parses "kernel.kptr_restrict=2". The key's components are separated by '.'
// only; a key that is empty, has an empty component, a '/' or a ".." could
// name another file than the sysctl and is refused.
Result<SysctlWrite> parseSysctl(std::string_view assignment);

// ---------------------------------------------------------------------------
// Network.

// "10.0.2.15/24" or "fd00::15/64": the address and its prefix length.
struct InterfaceAddress {
  std::string address;
  int prefix_length = 0;
  bool ipv6 = false;
};
// Refuses a missing or out-of-range prefix and anything inet_pton refuses.
Result<InterfaceAddress> parseInterfaceAddress(std::string_view text);

// ---------------------------------------------------------------------------
// Capabilities.

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

// ---------------------------------------------------------------------------
// Seccomp.

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
  Status load();
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
Status installSeccompProgram(const std::vector<sock_filter>& program);

// "2.5.4": the libseccomp linked into init, for the log of skipped syscalls.
std::string seccompLibraryVersion();

}  // namespace microvm::guest
