// Unit tests of seccomp profiles, and of filters loaded into forked children.
#include "agent/seccomp_filter.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "guest/confinement.h"
#include "guest/spawn.h"

namespace microvm::guest {
namespace {

using agent::buildSeccompFilter;
using agent::parseSeccompAction;
using agent::parseSeccompProfile;
using agent::SeccompAction;
using agent::SeccompProfile;
using agent::SeccompRule;

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
  EXPECT_EQ(parseSeccompAction("trap").error().message(),
            "unknown seccomp action \"trap\" (want allow, kill or errno:N with N <= 4095)");
}

TEST(ParseSeccompProfile, EmptyMeansNoFilter) {
  auto none = parseSeccompProfile("", {});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto rules_only = parseSeccompProfile("", {"errno:1:unshare"});
  ASSERT_FALSE(rules_only.ok());
  EXPECT_EQ(rules_only.error().message(), "seccomp: 1 rules but no default action");
}

TEST(ParseSeccompProfile, ParsesRulesAtTheLastColon) {
  auto profile = parseSeccompProfile("allow", {"errno:1:unshare", "errno:1:keyctl", "kill:ptrace", "errno:1:unshare"});
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  ASSERT_TRUE(profile->has_value());
  const SeccompProfile& parsed = **profile;
  EXPECT_EQ(parsed.default_action.kind, Kind::kAllow);
  EXPECT_EQ(parsed.rules,
            (std::vector<SeccompRule>{
                {{Kind::kErrno, 1}, "unshare"}, {{Kind::kErrno, 1}, "keyctl"}, {{Kind::kKill, 0}, "ptrace"}}));
}

TEST(ParseSeccompProfile, DropsRulesWithTheDefaultAction) {
  auto profile = parseSeccompProfile("errno:1", {"allow:execve", "allow:read", "errno:1:mount", "allow:write"});
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_EQ((*profile)->rules,
            (std::vector<SeccompRule>{
                {{Kind::kAllow, 0}, "execve"}, {{Kind::kAllow, 0}, "read"}, {{Kind::kAllow, 0}, "write"}}));
}

TEST(ParseSeccompProfile, RefusesMalformedAndConflictingRules) {
  auto conflict = parseSeccompProfile("allow", {"allow:unshare", "errno:1:unshare"});
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.error().message(),
            "seccomp rule \"errno:1:unshare\": unshare already has a rule with another action");
  auto no_action = parseSeccompProfile("allow", {"unshare"});
  ASSERT_FALSE(no_action.ok());
  EXPECT_EQ(no_action.error().message(), "seccomp rule \"unshare\": want ACTION:SYSCALL");
  auto bad_action = parseSeccompProfile("allow", {"errno:x:unshare"});
  ASSERT_FALSE(bad_action.ok());
  EXPECT_EQ(bad_action.error().message(),
            "seccomp rule \"errno:x:unshare\": unknown seccomp action \"errno:x\" (want allow, kill or errno:N with N "
            "<= 4095)");
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:Unshare"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:un share"}).ok());
  auto no_execve = parseSeccompProfile("errno:1", {"allow:read"});
  ASSERT_FALSE(no_execve.ok());
  EXPECT_EQ(no_execve.error().message(),
            "seccomp: the profile does not allow execve, so the workload could never start");
  EXPECT_FALSE(parseSeccompProfile("allow", {"kill:execve"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:0:execve"}).ok());
  EXPECT_TRUE(parseSeccompProfile("errno:1", {"allow:execve"}).ok());
  auto bad_default = parseSeccompProfile("deny", {});
  ASSERT_FALSE(bad_default.ok());
  EXPECT_EQ(bad_default.error().message(),
            "seccomp default action: unknown seccomp action \"deny\" (want allow, kill or errno:N with N <= 4095)");
}

TEST(ParseSeccompProfile, ParsesOneArgumentCondition) {
  auto profile = parseSeccompProfile("allow", {"errno:1:socket[0]=40", "errno:13:socket[0]=17", "errno:1:unshare"});
  ASSERT_TRUE(profile.ok()) << profile.error().message();
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
  EXPECT_EQ(mixed.error().message(),
            "seccomp rule \"kill:socket\": socket has rules both with and without a condition");
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:socket[0]=40", "kill:socket[0]=40"}).ok());
  EXPECT_FALSE(parseSeccompProfile("allow", {"errno:1:execve[0]=0"}).ok());
}

SeccompProfile profileOf(std::string_view default_action, const std::vector<std::string>& rules) {
  auto profile = parseSeccompProfile(default_action, rules);
  EXPECT_TRUE(profile.ok()) << profile.error().message();
  return profile.ok() && profile->has_value() ? **profile : SeccompProfile{};
}

TEST(BuildSeccompFilter, SkipsSyscallsUnknownToLibseccomp) {
  auto filter = buildSeccompFilter(profileOf(
      "allow", {"errno:1:unshare", "errno:1:no_such_syscall_at_all", "errno:1:socketcall", "errno:1:also_unknown"}));
  ASSERT_TRUE(filter.ok()) << filter.error().message();
  // socketcall exists on other architectures only: known, and left out.
  EXPECT_EQ(filter->skippedSyscalls(), (std::vector<std::string>{"no_such_syscall_at_all", "also_unknown"}));
}

// Loads `profile` in a forked child with no_new_privs (so no privilege is
// needed) and returns the child's wait status after it ran `probe`, which
// exits with what it wants checked.
template <typename Probe>
int statusOfFilteredChild(const SeccompProfile& profile, Probe probe) {
  auto filter = buildSeccompFilter(profile);
  EXPECT_TRUE(filter.ok()) << filter.error().message();
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

namespace microvm::guest {
namespace {

std::vector<uint8_t> bytesOf(const std::vector<sock_filter>& program) {
  const auto* begin = reinterpret_cast<const uint8_t*>(program.data());
  return std::vector<uint8_t>(begin, begin + program.size() * sizeof(sock_filter));
}

TEST(CompileSeccompProgram, TheHostsProgramIsWhatInitWouldCompileAndInitInstallsItAsSent) {
  agent::WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.seccomp_default = "allow";
  spec.seccomp_rules = {"errno:1:unshare", "errno:13:mkdir", "kill:kexec_load", "errno:1:socket[0]=40",
                        "errno:1:no_such_syscall_anywhere"};
  auto compiled = agent::compileSeccompProgram(spec);
  ASSERT_TRUE(compiled.ok()) << compiled.error().message();
  EXPECT_EQ(compiled->skipped, std::vector<std::string>{"no_such_syscall_anywhere"});
  ASSERT_FALSE(compiled->program.empty());
  EXPECT_EQ(compiled->program.size() % sizeof(sock_filter), 0u);

  auto by_init = prepareConfinement(spec, -1);
  ASSERT_TRUE(by_init.ok()) << by_init.error().message();
  ASSERT_TRUE(by_init->seccomp.has_value());
  std::vector<uint8_t> sent(compiled->program.begin(), compiled->program.end());
  EXPECT_EQ(bytesOf(*by_init->seccomp), sent);

  // Through the codec, as the runner sends it; init takes it as it is
  // (rules it could not compile do not matter once the program is there).
  spec.seccomp_program = compiled->program;
  auto decoded = agent::decodeSpec(agent::encodeSpec(spec));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  decoded->seccomp_rules = {"not a rule"};
  auto from_host = prepareConfinement(*decoded, -1);
  ASSERT_TRUE(from_host.ok()) << from_host.error().message();
  ASSERT_TRUE(from_host->seccomp.has_value());
  EXPECT_EQ(bytesOf(*from_host->seccomp), sent);
}

TEST(CompileSeccompProgram, NoProfileIsNoProgramAndABadOneIsItsError) {
  agent::WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  auto none = agent::compileSeccompProgram(spec);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->program.empty());
  spec.seccomp_default = "allow";
  spec.seccomp_rules = {"errno:1:execve"};
  auto bad = agent::compileSeccompProgram(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("execve"), std::string::npos) << bad.error().message();
}

}  // namespace
}  // namespace microvm::guest
