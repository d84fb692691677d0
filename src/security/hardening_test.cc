#include "security/hardening.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace microvm {
namespace {

bool hasRule(const HardeningPlan& plan, const std::string& rule) {
  return std::find(plan.seccomp_rules.begin(), plan.seccomp_rules.end(), rule) != plan.seccomp_rules.end();
}

TEST(HardeningTest, DefaultsMatchDocker) {
  auto plan = planHardening({});
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->capabilities, 0xa80425fbu);  // what `docker run` shows in CapBnd
  EXPECT_TRUE(plan->no_new_privs);
  EXPECT_EQ(plan->seccomp_default, "allow");
  EXPECT_TRUE(hasRule(*plan, "errno:1:unshare"));
  EXPECT_TRUE(hasRule(*plan, "errno:1:keyctl"));
  EXPECT_TRUE(hasRule(*plan, "errno:1:mount"));
  EXPECT_EQ(plan->sysctls.size(), 5u);
}

// The workload may not make vsock sockets (the guest agent listens on
// vsock) unless the user wired --vsock ports for it; io_uring, which could
// make sockets past the socket() rule, is refused as in Docker.
TEST(HardeningTest, DefaultProfileRefusesVsockSocketsUnlessPortsWereWired) {
  auto plan = planHardening({});
  ASSERT_TRUE(plan);
  EXPECT_TRUE(hasRule(*plan, "errno:1:socket[0]=40"));
  EXPECT_TRUE(hasRule(*plan, "errno:1:io_uring_setup"));
  HardeningOptions options;
  options.workload_vsock = true;
  plan = planHardening(options);
  EXPECT_FALSE(hasRule(*plan, "errno:1:socket[0]=40"));
  EXPECT_TRUE(hasRule(*plan, "errno:1:io_uring_setup"));
  options = {};
  options.cap_add = {"ALL"};
  EXPECT_TRUE(hasRule(*planHardening(options), "errno:1:socket[0]=40")) << "no capability re-allows it";
}

TEST(HardeningTest, CapAddAndDrop) {
  HardeningOptions options;
  options.cap_add = {"net_admin", "CAP_SYS_ADMIN"};
  options.cap_drop = {"NET_RAW"};
  auto plan = planHardening(options);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->capabilities & (uint64_t{1} << 12));
  EXPECT_TRUE(plan->capabilities & (uint64_t{1} << 21));
  EXPECT_FALSE(plan->capabilities & (uint64_t{1} << 13));
  // With CAP_SYS_ADMIN, mount-family calls are allowed again, as in Docker.
  EXPECT_FALSE(hasRule(*plan, "errno:1:mount"));
  EXPECT_TRUE(hasRule(*plan, "errno:1:keyctl"));

  options = {};
  options.cap_drop = {"ALL"};
  EXPECT_EQ(planHardening(options)->capabilities, 0u);
  options.cap_add = {"ALL"};
  options.cap_drop = {"CHOWN"};
  EXPECT_EQ(planHardening(options)->capabilities, ((uint64_t{1} << 41) - 1) & ~uint64_t{1});
  options.cap_add = {"NOT_A_CAP"};
  EXPECT_FALSE(planHardening(options));
}

TEST(HardeningTest, PrivilegedAndUnconfined) {
  HardeningOptions options;
  options.privileged = true;
  auto plan = planHardening(options);
  EXPECT_EQ(plan->capabilities, (uint64_t{1} << 41) - 1);
  EXPECT_TRUE(plan->seccomp_default.empty());
  EXPECT_FALSE(plan->no_new_privs);

  options = {};
  options.seccomp = "unconfined";
  EXPECT_TRUE(planHardening(options)->seccomp_default.empty());
  options = {};
  options.sysctl_hardening = false;
  EXPECT_TRUE(planHardening(options)->sysctls.empty());
}

TEST(HardeningTest, DockerProfileConvertsAndFailsClosed) {
  HardeningOptions options;
  options.seccomp = R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
      {"names": ["read", "write", "execve"], "action": "SCMP_ACT_ALLOW"},
      {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_MASKED_EQ"}]},
      {"names": ["ptrace"], "action": "SCMP_ACT_KILL"}
    ]})";
  auto plan = planHardening(options);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->seccomp_default, "errno:1");
  EXPECT_TRUE(hasRule(*plan, "allow:execve"));
  EXPECT_FALSE(hasRule(*plan, "allow:clone"));  // conditional allow: dropped (stricter)
  EXPECT_TRUE(hasRule(*plan, "kill:ptrace"));

  for (const char* bad : {"", "[]", R"({"syscalls": []})", R"({"defaultAction": "SCMP_ACT_NOTIFY"})",
                          R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"]}]})"}) {
    options.seccomp = bad;
    if (std::string(bad).empty()) continue;  // "" means the default profile
    EXPECT_FALSE(planHardening(options)) << bad;
  }
}

}  // namespace
}  // namespace microvm
