#include "runner/runner_seccomp.h"

#include <sched.h>
#include <seccomp.h>

#include <cerrno>
#include <memory>
#include <string>

#include "agent/seccomp_filter.h"

namespace microvm {

namespace {

// Refused with EPERM: see the header.
constexpr const char* kDenied[] = {
    // Running or becoming something else.
    "execve", "execveat", "fork", "vfork",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    "capset", "personality",
    // Other processes.
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    // Namespaces and mounts.
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    // Kernel facilities with a history of bugs, or only for the host's admin.
    "bpf", "keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie", "vhangup", "uselib",
    // Files: the runner owns nothing it should hand to others.
    "chown", "fchown", "lchown", "fchownat", "mknod", "mknodat",
};

}  // namespace

Result<void> installRunnerSeccomp() {
  std::unique_ptr<void, void (*)(scmp_filter_ctx)> filter(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  if (!filter) return Error(ErrorCode::kInternal, "seccomp_init failed");
  auto deny = [&](int syscall, int error, unsigned count = 0, const scmp_arg_cmp* args = nullptr) -> Result<void> {
    int failed = count == 0 ? seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(error), syscall, 0)
                            : seccomp_rule_add_array(filter.get(), SCMP_ACT_ERRNO(error), syscall, count, args);
    if (failed != 0) return Error::fromErrno("seccomp: rule for syscall " + std::to_string(syscall), -failed);
    return success();
  };
  for (const char* name : kDenied) {
    int syscall = seccomp_syscall_resolve_name(name);
    if (syscall == __NR_SCMP_ERROR) continue;  // not on this architecture
    MICROVM_TRY(deny(syscall, EPERM));
  }
  // clone: threads only (a new process or namespace is refused); clone3's
  // flags sit in memory a filter cannot read, so it answers ENOSYS and
  // glibc falls back to clone.
  scmp_arg_cmp not_thread{0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0};
  MICROVM_TRY(deny(SCMP_SYS(clone), EPERM, 1, &not_thread));
  constexpr uint64_t kNamespaces =
      CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
  for (uint64_t flag = 1; flag != 0 && flag <= kNamespaces; flag <<= 1) {
    if ((kNamespaces & flag) == 0) continue;
    scmp_arg_cmp new_namespace{0, SCMP_CMP_MASKED_EQ, flag, flag};
    MICROVM_TRY(deny(SCMP_SYS(clone), EPERM, 1, &new_namespace));
  }
  MICROVM_TRY(deny(SCMP_SYS(clone3), ENOSYS));
  if (int failed = seccomp_load(filter.get()); failed != 0) return Error::fromErrno("seccomp_load", -failed);
  return success();
}

Result<std::string> compileWorkloadSeccomp(agent::WorkloadSpec& spec) {
  auto compiled = agent::compileSeccompProgram(spec);
  if (!compiled) return std::move(compiled).error();
  spec.seccomp_program = std::move(compiled->program);
  std::string note;
  for (const std::string& name : compiled->skipped) note += (note.empty() ? "" : ", ") + name;
  if (note.empty()) return note;
  return "seccomp: skipping syscalls unknown to libseccomp " + agent::seccompLibraryVersion() + ": " + note;
}

}  // namespace microvm
