#include "security/hardening.h"

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <set>

namespace microvm {

using nlohmann::json;

namespace {

// Linux 6.1's capabilities in number order (CAP_CHECKPOINT_RESTORE = 40).
constexpr const char* kCapabilityNames[] = {
    "CHOWN",          "DAC_OVERRIDE",   "DAC_READ_SEARCH", "FOWNER",        "FSETID",      "KILL",
    "SETGID",         "SETUID",         "SETPCAP",         "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN",      "NET_RAW",        "IPC_LOCK",        "IPC_OWNER",     "SYS_MODULE",  "SYS_RAWIO",
    "SYS_CHROOT",     "SYS_PTRACE",     "SYS_PACCT",       "SYS_ADMIN",     "SYS_BOOT",    "SYS_NICE",
    "SYS_RESOURCE",   "SYS_TIME",       "SYS_TTY_CONFIG",  "MKNOD",         "LEASE",       "AUDIT_WRITE",
    "AUDIT_CONTROL",  "SETFCAP",        "MAC_OVERRIDE",    "MAC_ADMIN",     "SYSLOG",      "WAKE_ALARM",
    "BLOCK_SUSPEND",  "AUDIT_READ",     "PERFMON",         "BPF",           "CHECKPOINT_RESTORE"};
constexpr int kCapabilityCount = sizeof kCapabilityNames / sizeof kCapabilityNames[0];

// Docker's default capabilities (moby/oci/caps/defaults.go).
constexpr const char* kDockerDefaults[] = {"CHOWN",  "DAC_OVERRIDE", "FSETID",           "FOWNER",     "MKNOD",
                                           "NET_RAW", "SETGID",      "SETUID",           "SETFCAP",    "SETPCAP",
                                           "NET_BIND_SERVICE",       "SYS_CHROOT",       "KILL",       "AUDIT_WRITE"};

// What Docker's default profile keeps from a container without extra
// capabilities: these syscalls fail with EPERM. (Docker allow-lists; this is
// the complement that matters for a 6.1 x86_64 guest.)
constexpr const char* kDeniedSyscalls[] = {
    "acct",          "add_key",          "bpf",              "clock_adjtime",  "clock_settime",   "create_module",
    "delete_module", "finit_module",     "fsconfig",         "fsmount",        "fsopen",          "fspick",
    "get_kernel_syms", "get_mempolicy",  "init_module",      "ioperm",         "iopl",            "kcmp",
    "kexec_file_load", "kexec_load",     "keyctl",           "lookup_dcookie", "mbind",           "mount",
    "mount_setattr", "move_mount",       "move_pages",       "name_to_handle_at", "nfsservctl",   "open_by_handle_at",
    "open_tree",     "perf_event_open",  "pivot_root",       "process_vm_readv", "process_vm_writev", "query_module",
    "quotactl",      "quotactl_fd",      "reboot",           "request_key",    "set_mempolicy",   "setns",
    "settimeofday",  "stime",            "swapoff",          "swapon",         "sysfs",           "_sysctl",
    "umount",        "umount2",          "unshare",          "uselib",         "userfaultfd",     "ustat",
    "vm86",          "vm86old",
    // As in Docker's profile since 25.0; io_uring's IORING_OP_SOCKET would
    // also make sockets that the socket() rule below never sees.
    "io_uring_enter", "io_uring_register", "io_uring_setup"};

std::string upper(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// "SCMP_ACT_ERRNO" (+ errnoRet) -> the guest's action words.
Result<std::string> convertAction(const std::string& action, const json& errno_ret) {
  if (action == "SCMP_ACT_ALLOW" || action == "SCMP_ACT_LOG") return std::string("allow");
  if (action == "SCMP_ACT_KILL" || action == "SCMP_ACT_KILL_PROCESS" || action == "SCMP_ACT_KILL_THREAD" ||
      action == "SCMP_ACT_TRAP") {
    return std::string("kill");
  }
  if (action == "SCMP_ACT_ERRNO") {
    int code = errno_ret.is_number_integer() ? errno_ret.get<int>() : EPERM;
    if (code < 0 || code > 4095) return Error(ErrorCode::kInvalidArgument, "seccomp profile: errnoRet out of range");
    return "errno:" + std::to_string(code);
  }
  return Error(ErrorCode::kInvalidArgument, "seccomp profile: unsupported action \"" + action + "\"");
}

}  // namespace

Result<int> capabilityNumber(const std::string& name) {
  std::string key = upper(name);
  if (key.rfind("CAP_", 0) == 0) key = key.substr(4);
  for (int i = 0; i < kCapabilityCount; ++i) {
    if (key == kCapabilityNames[i]) return i;
  }
  return Error(ErrorCode::kInvalidArgument, "unknown capability \"" + name + "\"");
}

uint64_t dockerDefaultCapabilities() {
  uint64_t mask = 0;
  for (const char* name : kDockerDefaults) mask |= uint64_t{1} << *capabilityNumber(name);
  return mask;
}

Result<HardeningPlan> convertDockerSeccomp(const std::string& profile_json) {
  json profile = json::parse(profile_json, nullptr, /*allow_exceptions=*/false);
  if (!profile.is_object() || !profile["defaultAction"].is_string()) {
    return Error(ErrorCode::kInvalidArgument, "seccomp profile: not a Docker profile (no defaultAction)");
  }
  HardeningPlan plan;
  auto default_action = convertAction(profile["defaultAction"], profile["defaultErrnoRet"]);
  if (!default_action) return std::move(default_action).error();
  plan.seccomp_default = *default_action;
  std::set<std::string> seen;
  if (profile.contains("syscalls") && !profile["syscalls"].is_array()) {
    return Error(ErrorCode::kInvalidArgument, "seccomp profile: syscalls must be an array");
  }
  for (const auto& rule : profile.value("syscalls", json::array())) {
    if (!rule.is_object() || !rule["action"].is_string()) {
      return Error(ErrorCode::kInvalidArgument, "seccomp profile: a syscalls entry has no action");
    }
    auto action = convertAction(rule["action"], rule["errnoRet"]);
    if (!action) return std::move(action).error();
    bool conditional = rule.contains("args") && rule["args"].is_array() && !rule["args"].empty();
    conditional = conditional || (rule.contains("includes") && !rule["includes"].empty()) ||
                  (rule.contains("excludes") && !rule["excludes"].empty());
    bool allows = *action == "allow";
    // Fail closed: a conditional allow is dropped unless everything is
    // allowed anyway; a conditional deny applies unconditionally.
    if (conditional && allows) continue;
    if (*action == plan.seccomp_default) continue;
    std::vector<std::string> names;
    if (rule["names"].is_array()) {
      for (const auto& name : rule["names"]) {
        if (name.is_string()) names.push_back(name);
      }
    } else if (rule["name"].is_string()) {
      names.push_back(rule["name"]);
    }
    for (const auto& name : names) {
      if (!seen.insert(name).second) continue;  // the first rule for a syscall wins, as in libseccomp
      plan.seccomp_rules.push_back(*action + ":" + name);
    }
  }
  return plan;
}

Result<HardeningPlan> planHardening(const HardeningOptions& options) {
  HardeningPlan plan;
  uint64_t all = (uint64_t{1} << kCapabilityCount) - 1;
  plan.capabilities = options.privileged ? all : dockerDefaultCapabilities();
  auto apply = [&](const std::vector<std::string>& names, bool add) -> Result<void> {
    for (const auto& name : names) {
      if (upper(name) == "ALL") {
        plan.capabilities = add ? all : 0;
        continue;
      }
      auto number = capabilityNumber(name);
      if (!number) return std::move(number).error();
      if (add) {
        plan.capabilities |= uint64_t{1} << *number;
      } else {
        plan.capabilities &= ~(uint64_t{1} << *number);
      }
    }
    return success();
  };
  // Docker applies drops after adds, so "--cap-add ALL --cap-drop X" works.
  MICROVM_TRY(apply(options.cap_add, true));
  MICROVM_TRY(apply(options.cap_drop, false));

  plan.no_new_privs = options.no_new_privs && !options.privileged;
  if (options.privileged || options.seccomp == "unconfined") {
    // No filter at all.
  } else if (options.seccomp.empty()) {
    plan.seccomp_default = "allow";
    bool sys_admin = plan.capabilities & (uint64_t{1} << *capabilityNumber("SYS_ADMIN"));
    for (const char* name : kDeniedSyscalls) {
      // As in Docker's profile, CAP_SYS_ADMIN re-allows what it governs.
      std::string syscall = name;
      bool admin_gated = syscall == "mount" || syscall == "umount2" || syscall == "umount" || syscall == "unshare" ||
                         syscall == "setns" || syscall == "pivot_root" || syscall == "fsopen" ||
                         syscall == "fsmount" || syscall == "fsconfig" || syscall == "fspick" ||
                         syscall == "move_mount" || syscall == "open_tree" || syscall == "mount_setattr";
      if (sys_admin && admin_gated) continue;
      plan.seccomp_rules.push_back("errno:" + std::to_string(EPERM) + ":" + syscall);
    }
    // The guest agent serves only the host, and the kernel has no vsock
    // loopback; without vsock sockets the workload cannot even try to
    // reach either (Docker's profile refuses AF_VSOCK too).
    if (!options.workload_vsock) {
      plan.seccomp_rules.push_back("errno:" + std::to_string(EPERM) + ":socket[0]=" + std::to_string(AF_VSOCK));
    }
  } else {
    auto converted = convertDockerSeccomp(options.seccomp);
    if (!converted) return std::move(converted).error();
    plan.seccomp_default = converted->seccomp_default;
    plan.seccomp_rules = converted->seccomp_rules;
  }
  if (options.sysctl_hardening) {
    plan.sysctls = {"kernel.kptr_restrict=2", "kernel.dmesg_restrict=1", "kernel.unprivileged_bpf_disabled=1",
                    "kernel.perf_event_paranoid=3", "kernel.sysrq=0"};
  }
  return plan;
}

}  // namespace microvm
