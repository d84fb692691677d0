#include "runner/vmm_user.h"

#include <gtest/gtest.h>

#include <optional>

#include "base/temp_dir.h"

namespace microvm {
namespace {

TEST(VmmUserTest, RunningVmsGetDistinctIdsAndAFreedIdIsTakenAgain) {
  auto dir = TempDir::create("vmm-ids");
  ASSERT_TRUE(dir);
  std::optional<VmmUser> first(VmmUser::allocate(dir->path()).value());
  auto second = VmmUser::allocate(dir->path());
  ASSERT_TRUE(second);
  EXPECT_EQ(first->uid(), kVmmIdBase);
  EXPECT_EQ(first->gid(), kVmmIdBase);
  EXPECT_EQ(second->uid(), kVmmIdBase + 1);
  first.reset();  // that VM ended: its id is free again
  auto third = VmmUser::allocate(dir->path());
  ASSERT_TRUE(third);
  EXPECT_EQ(third->uid(), kVmmIdBase);
}

TEST(VmmUserTest, CapabilitiesFollowTheShares) {
  EXPECT_EQ(vmmCapabilities(false, false), 0u);
  EXPECT_EQ(vmmCapabilities(true, false), uint64_t{1} << 2);                  // CAP_DAC_READ_SEARCH
  EXPECT_EQ(vmmCapabilities(true, true), (uint64_t{1} << 0) | (uint64_t{1} << 1) | (uint64_t{1} << 3) |
                                             (uint64_t{1} << 4));  // CHOWN, DAC_OVERRIDE, FOWNER, FSETID
}

}  // namespace
}  // namespace microvm
