#include "guest/init.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

namespace microvm::guest {
namespace {

constexpr char kPasswd[] =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "nohome:x:1001:1001::\n"
    "broken:x:notanumber:1:::\n";
constexpr char kGroup[] =
    "root:x:0:\n"
    "wheel:x:10:root,app\n"
    "app:x:1000:\n"
    "audio:x:29:app\n"
    "staff:x:50:\n";

TEST(InjectManifest, ParsesEntriesAndRefusesWhatInitCannotTrust) {
  auto entries = parseInjectManifest("f 640 1000 1001 0 /etc/hook file.txt\nd 700 0 0 1 /root/.ssh\n\n");
  ASSERT_TRUE(entries.ok()) << entries.error().message;
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_FALSE((*entries)[0].directory);
  EXPECT_EQ((*entries)[0].mode, 0640u);
  EXPECT_EQ((*entries)[0].uid, 1000u);
  EXPECT_EQ((*entries)[0].gid, 1001u);
  EXPECT_EQ((*entries)[0].path, "/etc/hook file.txt");
  EXPECT_TRUE((*entries)[1].directory);
  EXPECT_EQ((*entries)[1].index, 1u);
  for (const char* bad : {"x 644 0 0 0 /a", "f 644 0 0 0 relative", "f 999 0 0 0 /a", "f 644 0 0 /a",
                          "f 644 -1 0 0 /a", "f 644 0 0 0 /a/../b", "f 644 0 0 0 /a//b", "f 644 0 0 0 /",
                          "f 17777 0 0 0 /a", "f 644 0 0 0 /a/./b"}) {
    EXPECT_FALSE(parseInjectManifest(bad).ok()) << bad;
  }
}

TEST(ResolveUser, EmptyIsRootWithItsPasswdEntry) {
  auto user = resolveUser("", kPasswd, kGroup);
  ASSERT_TRUE(user.ok()) << user.error().message;
  EXPECT_EQ(user->uid, 0u);
  EXPECT_EQ(user->gid, 0u);
  EXPECT_EQ(user->home, "/root");
  EXPECT_EQ(user->supplementary_groups, std::vector<gid_t>{10});
}

TEST(ResolveUser, NameGivesPrimaryGidHomeAndMemberships) {
  auto user = resolveUser("app", kPasswd, kGroup);
  ASSERT_TRUE(user.ok()) << user.error().message;
  EXPECT_EQ(user->uid, 1000u);
  EXPECT_EQ(user->gid, 1000u);
  EXPECT_EQ(user->home, "/home/app");
  EXPECT_EQ(user->supplementary_groups, (std::vector<gid_t>{10, 29}));
}

TEST(ResolveUser, NumericUidFoundInPasswd) {
  auto user = resolveUser("1000", kPasswd, kGroup);
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->gid, 1000u);
  EXPECT_EQ(user->home, "/home/app");
}

TEST(ResolveUser, NumericUidWithoutEntryIsGidZeroHomeSlash) {
  auto user = resolveUser("4242", kPasswd, kGroup);
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->uid, 4242u);
  EXPECT_EQ(user->gid, 0u);
  EXPECT_EQ(user->home, "/");
  EXPECT_TRUE(user->supplementary_groups.empty());
}

TEST(ResolveUser, ExplicitGroupReplacesPrimaryAndDropsMemberships) {
  auto by_name = resolveUser("app:staff", kPasswd, kGroup);
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->gid, 50u);
  EXPECT_TRUE(by_name->supplementary_groups.empty());

  auto numeric = resolveUser("4242:4343", kPasswd, kGroup);
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(numeric->uid, 4242u);
  EXPECT_EQ(numeric->gid, 4343u);
}

TEST(ResolveUser, EmptyHomeFallsBackToSlash) {
  auto user = resolveUser("nohome", kPasswd, kGroup);
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->home, "/");
}

TEST(ResolveUser, UnknownNamesUseDockersWording) {
  auto user = resolveUser("ghost", kPasswd, kGroup);
  ASSERT_FALSE(user.ok());
  EXPECT_EQ(user.error().message, "unable to find user ghost: no matching entries in passwd file");

  auto group = resolveUser("app:ghosts", kPasswd, kGroup);
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.error().message, "unable to find group ghosts: no matching entries in group file");

  auto malformed = resolveUser("broken", kPasswd, kGroup);
  EXPECT_FALSE(malformed.ok());
}

TEST(ResolveUser, MissingFilesStillAllowNumericIds) {
  auto user = resolveUser("7:8", "", "");
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->uid, 7u);
  EXPECT_EQ(user->gid, 8u);
  EXPECT_FALSE(resolveUser("root", "", "").ok());
}

TEST(WorkloadEnvironment, AddsDockerDefaultsWhenAbsent) {
  auto env = workloadEnvironment({"FOO=bar"}, "box", "/root");
  EXPECT_EQ(env,
            (std::vector<std::string>{"FOO=bar", std::string("PATH=") + kDefaultPath, "HOSTNAME=box", "HOME=/root"}));
}

TEST(WorkloadEnvironment, KeepsGivenValuesAndLastRepeat) {
  auto env = workloadEnvironment({"PATH=/x", "HOME=/h", "A=1", "HOSTNAME=given", "A=2"}, "", "/root");
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/x", "HOME=/h", "A=2", "HOSTNAME=given"}));
}

TEST(DescribeExecFailure, MatchesDockerCodes) {
  auto missing = describeExecFailure("nope", ENOENT);
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_EQ(missing.message, "exec \"nope\": executable file not found in $PATH");

  auto missing_path = describeExecFailure("/bin/nope", ENOENT);
  EXPECT_EQ(missing_path.exit_code, 127);
  EXPECT_EQ(missing_path.message, "exec \"/bin/nope\": no such file or directory");

  auto denied = describeExecFailure("/etc/passwd", EACCES);
  EXPECT_EQ(denied.exit_code, 126);
  EXPECT_EQ(denied.message, "exec \"/etc/passwd\": permission denied");
}

TEST(ExitCodeFromWaitStatus, ExitStatusOr128PlusSignal) {
  EXPECT_EQ(exitCodeFromWaitStatus(3 << 8), 3);  // W_EXITCODE(3, 0)
  EXPECT_EQ(exitCodeFromWaitStatus(15), 143);    // killed by SIGTERM
}

agent::MountSpec volume(std::string source, std::string target, std::string fstype, std::string options = "",
                        bool readonly = false) {
  return agent::MountSpec{std::move(source), std::move(target), std::move(fstype), std::move(options), readonly};
}

TEST(PlanVolumeMount, NinePUsesVirtioTransportAndReadOnlyFlag) {
  auto call = planVolumeMount(volume("vol0", "/data", "9p", "", true));
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_EQ(call->source, "vol0");
  EXPECT_EQ(call->target, "/data");
  EXPECT_EQ(call->fstype, "9p");
  EXPECT_EQ(call->flags, static_cast<unsigned long>(MS_RDONLY));
  EXPECT_EQ(call->data, "trans=virtio,version=9p2000.L,msize=524288,cache=none");
  EXPECT_EQ(call->description, "volume vol0 on /data");

  auto writable = planVolumeMount(volume("vol1", "/srv/app", "9p", "access=any"));
  ASSERT_TRUE(writable.ok());
  EXPECT_EQ(writable->flags, 0ul);
  EXPECT_EQ(writable->data, std::string(k9pMountOptions) + ",access=any");
}

TEST(PlanVolumeMount, TmpfsIsNosuidNodevWithTheGivenOptions) {
  auto call = planVolumeMount(volume("ignored", "/scratch", "tmpfs", "size=16m,mode=1777"));
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_EQ(call->source, "tmpfs");
  EXPECT_EQ(call->fstype, "tmpfs");
  EXPECT_EQ(call->flags, static_cast<unsigned long>(MS_NOSUID | MS_NODEV));
  EXPECT_EQ(call->data, "size=16m,mode=1777");

  auto readonly = planVolumeMount(volume("", "/ro", "tmpfs", "", true));
  ASSERT_TRUE(readonly.ok());
  EXPECT_EQ(readonly->flags, static_cast<unsigned long>(MS_NOSUID | MS_NODEV | MS_RDONLY));
}

TEST(PlanVolumeMount, RefusesBadTargetsAndTypes) {
  auto relative = planVolumeMount(volume("vol0", "data", "9p"));
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.error().message, "mount volume vol0 on data: the target must be an absolute path");
  auto dotdot = planVolumeMount(volume("vol0", "/data/../etc", "9p"));
  ASSERT_FALSE(dotdot.ok());
  EXPECT_EQ(dotdot.error().message, "mount volume vol0 on /data/../etc: the target must not contain '..'");
  EXPECT_FALSE(planVolumeMount(volume("vol0", "/..", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "/", "9p")).ok());
  EXPECT_FALSE(planVolumeMount(volume("vol0", "//./", "tmpfs")).ok());
  EXPECT_TRUE(planVolumeMount(volume("vol0", "/a..b/c.", "9p")).ok());  // Only whole ".." components.

  auto no_tag = planVolumeMount(volume("", "/data", "9p"));
  ASSERT_FALSE(no_tag.ok());
  EXPECT_EQ(no_tag.error().message, "mount volume  on /data: a 9p volume needs a mount tag");
  auto nfs = planVolumeMount(volume("server:/x", "/data", "nfs"));
  ASSERT_FALSE(nfs.ok());
  EXPECT_EQ(nfs.error().message, "mount volume nfs on /data: unknown filesystem type \"nfs\" (want 9p or tmpfs)");
}

TEST(ParseInterfaceAddress, SplitsAddressAndPrefix) {
  auto v4 = parseInterfaceAddress("10.0.2.15/24");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->address, "10.0.2.15");
  EXPECT_EQ(v4->prefix_length, 24);
  EXPECT_FALSE(v4->ipv6);
  auto v6 = parseInterfaceAddress("fd00::15/64");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->prefix_length, 64);
  for (const char* bad : {"", "10.0.2.15", "10.0.2.15/33", "10.0.2.15/", "fd00::1/129", "x/24", "10.0.2.15/2x"}) {
    EXPECT_FALSE(parseInterfaceAddress(bad).ok()) << bad;
  }
}

TEST(ParseSysctl, DotsBecomeProcSysPath) {
  auto sysctl = parseSysctl("kernel.kptr_restrict=2");
  ASSERT_TRUE(sysctl.ok()) << sysctl.error().message;
  EXPECT_EQ(sysctl->path, "/proc/sys/kernel/kptr_restrict");
  EXPECT_EQ(sysctl->value, "2");

  auto spaced = parseSysctl("net.ipv4.ip_local_port_range=1024 65000");
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(spaced->path, "/proc/sys/net/ipv4/ip_local_port_range");
  EXPECT_EQ(spaced->value, "1024 65000");

  auto equals_in_value = parseSysctl("kernel.core_pattern=|/bin/x a=b");
  ASSERT_TRUE(equals_in_value.ok());
  EXPECT_EQ(equals_in_value->value, "|/bin/x a=b");
}

TEST(ParseSysctl, RefusesKeysThatCouldNameOtherFiles) {
  auto slash = parseSysctl("kernel/../../etc/passwd=x");
  ASSERT_FALSE(slash.ok());
  EXPECT_EQ(slash.error().message, "sysctl \"kernel/../../etc/passwd=x\": the key must not contain '/'");
  auto dotdot = parseSysctl("kernel..x=1");
  ASSERT_FALSE(dotdot.ok());
  EXPECT_EQ(dotdot.error().message, "sysctl \"kernel..x=1\": the key must not contain '..'");
  EXPECT_FALSE(parseSysctl(".kernel.x=1").ok());
  EXPECT_FALSE(parseSysctl("kernel.x.=1").ok());
  EXPECT_FALSE(parseSysctl("=1").ok());
  EXPECT_FALSE(parseSysctl("kernel.sysrq").ok());
  EXPECT_FALSE(parseSysctl(std::string("kernel\0.x=1", 11)).ok());
}

// Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
// SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
constexpr uint64_t kDockerCapabilities = 0xa80425fb;

TEST(PlanCapabilities, RootGetsTheMaskInEverySet) {
  CapabilityPlan plan = planCapabilities(kDockerCapabilities, 40, 0);
  EXPECT_EQ(plan.permitted, kDockerCapabilities);
  EXPECT_EQ(plan.effective, kDockerCapabilities);
  EXPECT_EQ(plan.inheritable, kDockerCapabilities);
  std::vector<int> expected_drops;
  for (int capability = 0; capability <= 40; ++capability) {
    if ((kDockerCapabilities >> capability & 1) == 0) expected_drops.push_back(capability);
  }
  EXPECT_EQ(plan.bounding_drops, expected_drops);
  EXPECT_EQ(plan.bounding_drops.front(), 2);  // CAP_DAC_READ_SEARCH
  EXPECT_EQ(plan.bounding_drops.back(), 40);  // CAP_CHECKPOINT_RESTORE
}

TEST(PlanCapabilities, NonRootKeepsOnlyTheBoundingSet) {
  CapabilityPlan plan = planCapabilities(kDockerCapabilities, 40, 1000);
  EXPECT_EQ(plan.permitted, 0u);
  EXPECT_EQ(plan.effective, 0u);
  EXPECT_EQ(plan.inheritable, 0u);
  EXPECT_EQ(plan.bounding_drops, planCapabilities(kDockerCapabilities, 40, 0).bounding_drops);
}

TEST(PlanCapabilities, MaskBitsBeyondTheKernelAreIgnored) {
  CapabilityPlan all = planCapabilities(agent::kAllCapabilities, 40, 0);
  EXPECT_TRUE(all.bounding_drops.empty());
  EXPECT_EQ(all.permitted, agent::kAllCapabilities);

  CapabilityPlan older_kernel = planCapabilities(~uint64_t{0}, 37, 0);
  EXPECT_TRUE(older_kernel.bounding_drops.empty());
  EXPECT_EQ(older_kernel.effective, (uint64_t{1} << 38) - 1);

  CapabilityPlan none = planCapabilities(0, 63, 0);
  EXPECT_EQ(none.bounding_drops.size(), 64u);
  EXPECT_EQ(none.effective, 0u);
}

TEST(ParseLastCapability, AcceptsTheKernelsTextUpTo63) {
  auto parsed = parseLastCapability("40\n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, 40);
  EXPECT_FALSE(parseLastCapability("").ok());
  EXPECT_FALSE(parseLastCapability("forty").ok());
  EXPECT_FALSE(parseLastCapability("-1").ok());
  EXPECT_FALSE(parseLastCapability("64\n").ok());
}

TEST(LoadSeccompBeforeUserSwitch, OnlyWithoutNoNewPrivsAndWithoutSysAdmin) {
  CapabilityPlan docker_root = planCapabilities(kDockerCapabilities, 40, 0);
  CapabilityPlan privileged_root = planCapabilities(agent::kAllCapabilities, 40, 0);
  CapabilityPlan privileged_user = planCapabilities(agent::kAllCapabilities, 40, 1000);
  EXPECT_TRUE(loadSeccompBeforeUserSwitch(docker_root, false));
  EXPECT_FALSE(loadSeccompBeforeUserSwitch(docker_root, true));
  EXPECT_FALSE(loadSeccompBeforeUserSwitch(privileged_root, false));
  EXPECT_TRUE(loadSeccompBeforeUserSwitch(privileged_user, false));
  EXPECT_FALSE(loadSeccompBeforeUserSwitch(privileged_user, true));
}

using Kind = SeccompAction::Kind;

TEST(ParseSeccompAction, AllowKillAndErrno) {
  auto allow = parseSeccompAction("allow");
  ASSERT_TRUE(allow.ok());
  EXPECT_EQ(allow->kind, Kind::kAllow);
  auto kill = parseSeccompAction("kill");
  ASSERT_TRUE(kill.ok());
  EXPECT_EQ(kill->kind, Kind::kKill);
  auto eperm = parseSeccompAction("errno:1");
  ASSERT_TRUE(eperm.ok());
  EXPECT_EQ(*eperm, (SeccompAction{Kind::kErrno, 1}));
  auto max = parseSeccompAction("errno:4095");
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->error_number, 4095);

  for (const char* bad : {"", "deny", "errno", "errno:", "errno:-1", "errno:+1", "errno:4096", "errno:1x", "Allow"}) {
    EXPECT_FALSE(parseSeccompAction(bad).ok()) << bad;
  }
  EXPECT_EQ(parseSeccompAction("trap").error().message,
            "unknown seccomp action \"trap\" (want allow, kill or errno:N with N <= 4095)");
}

TEST(ParseSeccompProfile, EmptyMeansNoFilter) {
  auto none = parseSeccompProfile("", {});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto rules_only = parseSeccompProfile("", {"errno:1:unshare"});
  ASSERT_FALSE(rules_only.ok());
  EXPECT_EQ(rules_only.error().message, "seccomp: 1 rules but no default action");
}

TEST(ParseSeccompProfile, ParsesRulesAtTheLastColon) {
  auto profile = parseSeccompProfile("allow", {"errno:1:unshare", "errno:1:keyctl", "kill:ptrace", "errno:1:unshare"});
  ASSERT_TRUE(profile.ok()) << profile.error().message;
  ASSERT_TRUE(profile->has_value());
  const SeccompProfile& parsed = **profile;
  EXPECT_EQ(parsed.default_action.kind, Kind::kAllow);
  EXPECT_EQ(parsed.rules,
            (std::vector<SeccompRule>{
                {{Kind::kErrno, 1}, "unshare"}, {{Kind::kErrno, 1}, "keyctl"}, {{Kind::kKill, 0}, "ptrace"}}));
}

TEST(ParseSeccompProfile, DropsRulesWithTheDefaultAction) {
  auto profile = parseSeccompProfile("errno:1", {"allow:execve", "allow:read", "errno:1:mount", "allow:write"});
  ASSERT_TRUE(profile.ok()) << profile.error().message;
  EXPECT_EQ((*profile)->rules,
            (std::vector<SeccompRule>{
                {{Kind::kAllow, 0}, "execve"}, {{Kind::kAllow, 0}, "read"}, {{Kind::kAllow, 0}, "write"}}));
}

TEST(ParseSeccompProfile, RefusesMalformedAndConflictingRules) {
  auto conflict = parseSeccompProfile("allow", {"allow:unshare", "errno:1:unshare"});
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.error().message,
            "seccomp rule \"errno:1:unshare\": unshare already has a rule with another action");
  auto no_action = parseSeccompProfile("allow", {"unshare"});
  ASSERT_FALSE(no_action.ok());
  EXPECT_EQ(no_action.error().message, "seccomp rule \"unshare\": want ACTION:SYSCALL");
  auto bad_action = parseSeccompProfile("allow", {"errno:x:unshare"});
  ASSERT_FALSE(bad_action.ok());
  EXPECT_EQ(bad_action.error().message,
            "seccomp rule \"errno:x:unshare\": unknown seccomp action \"errno:x\" (want allow, kill or errno:N with N "
            "<= 4095)");
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:Unshare"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:un share"}).ok());
  auto no_execve = parseSeccompProfile("errno:1", {"allow:read"});
  ASSERT_FALSE(no_execve.ok());
  EXPECT_EQ(no_execve.error().message, "seccomp: the profile does not allow execve, so the workload could never start");
  EXPECT_FALSE(parseSeccompProfile("allow", {"kill:execve"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:0:execve"}).ok());
  EXPECT_TRUE(parseSeccompProfile("errno:1", {"allow:execve"}).ok());
  auto bad_default = parseSeccompProfile("deny", {});
  ASSERT_FALSE(bad_default.ok());
  EXPECT_EQ(bad_default.error().message,
            "seccomp default action: unknown seccomp action \"deny\" (want allow, kill or errno:N with N <= 4095)");
}

TEST(ParseSeccompProfile, ParsesOneArgumentCondition) {
  auto profile = parseSeccompProfile("allow", {"errno:1:socket[0]=40", "errno:13:socket[0]=17", "errno:1:unshare"});
  ASSERT_TRUE(profile.ok()) << profile.error().message;
  EXPECT_EQ((*profile)->rules, (std::vector<SeccompRule>{{{Kind::kErrno, 1}, "socket", 0, 40},
                                                         {{Kind::kErrno, 13}, "socket", 0, 17},
                                                         {{Kind::kErrno, 1}, "unshare", -1, 0}}));
  for (const char* bad : {"errno:1:socket[6]=40", "errno:1:socket[0]=", "errno:1:socket[0]=-1", "errno:1:socket[0]40",
                          "errno:1:socket[0]=4294967296", "errno:1:socket[x]=1", "errno:1:socket[0]=1x",
                          "errno:1:[0]=1", "errno:1:socket["}) {
    EXPECT_FALSE(parseSeccompProfile("allow", {bad}).ok()) << bad;
  }
  auto mixed = parseSeccompProfile("allow", {"errno:1:socket[0]=40", "kill:socket"});
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.error().message,
            "seccomp rule \"kill:socket\": socket has rules both with and without a condition");
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:socket[0]=40", "kill:socket[0]=40"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:execve[0]=0"}).ok());
}

SeccompProfile profileOf(std::string_view default_action, const std::vector<std::string>& rules) {
  auto profile = parseSeccompProfile(default_action, rules);
  EXPECT_TRUE(profile.ok()) << profile.error().message;
  return profile.ok() && profile->has_value() ? **profile : SeccompProfile{};
}

TEST(BuildSeccompFilter, SkipsSyscallsUnknownToLibseccomp) {
  auto filter = buildSeccompFilter(profileOf(
      "allow", {"errno:1:unshare", "errno:1:no_such_syscall_at_all", "errno:1:socketcall", "errno:1:also_unknown"}));
  ASSERT_TRUE(filter.ok()) << filter.error().message;
  // socketcall exists on other architectures only: known, and left out.
  EXPECT_EQ(filter->skippedSyscalls(), (std::vector<std::string>{"no_such_syscall_at_all", "also_unknown"}));
}

// Loads `profile` in a forked child with no_new_privs (so no privilege is
// needed) and returns the child's wait status after it ran `probe`, which
// exits with what it wants checked.
template <typename Probe>
int statusOfFilteredChild(const SeccompProfile& profile, Probe probe) {
  auto filter = buildSeccompFilter(profile);
  EXPECT_TRUE(filter.ok()) << filter.error().message;
  if (!filter.ok()) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || !filter->load().ok()) ::_exit(100);
    ::_exit(probe());
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return status;
}

// The default profile's vsock rule: socket(AF_VSOCK, ...) fails with EPERM,
// also with garbage in the upper half of the register (the kernel reads an
// int); other families are untouched.
TEST(BuildSeccompFilter, ConditionMatchesTheLow32BitsOfTheArgument) {
  int status = statusOfFilteredChild(profileOf("allow", {"errno:1:socket[0]=40"}), [] {
    if (::syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EPERM) return 1;
    if (::syscall(SYS_socket, (1L << 32) | AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EPERM) return 2;
    long unix_socket = ::syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
    if (unix_socket < 0) return 3;
    ::close(static_cast<int>(unix_socket));
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(BuildSeccompFilter, ErrnoRuleFailsTheCallWithThatErrno) {
  int status = statusOfFilteredChild(profileOf("allow", {"errno:1:unshare", "errno:38:getcwd"}), [] {
    if (::syscall(SYS_unshare, 0) != -1 || errno != EPERM) return 1;
    char buffer[256];
    if (::syscall(SYS_getcwd, buffer, sizeof buffer) != -1 || errno != ENOSYS) return 2;
    return ::getppid() > 0 ? 0 : 3;  // Not in the rules: allowed.
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(BuildSeccompFilter, KillRuleKillsTheProcessWithSigsys) {
  int status = statusOfFilteredChild(profileOf("allow", {"kill:getppid"}), [] { return ::getppid() > 0 ? 1 : 2; });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
  EXPECT_EQ(exitCodeFromWaitStatus(status), 159);
}

TEST(BuildSeccompFilter, ErrnoDefaultWithAllowRules) {
  // What the child needs to exit is allowed; everything else fails with EACCES.
  int status = statusOfFilteredChild(
      profileOf("errno:13", {"allow:execve", "allow:exit_group", "allow:exit", "allow:getpid"}), [] {
        if (::getpid() <= 0) return 1;
        // Through syscall(): glibc's getppid() never sets errno.
        return ::syscall(SYS_getppid) == -1 && errno == EACCES ? 0 : 2;
      });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace microvm::guest
