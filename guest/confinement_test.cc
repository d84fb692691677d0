// Unit tests of the capability plan and the seccomp load order.
#include "guest/confinement.h"

#include <gtest/gtest.h>

namespace microvm::guest {
namespace {

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

}  // namespace
}  // namespace microvm::guest
