// Unit tests of user resolution against passwd and group text.
#include "guest/users.h"

#include <gtest/gtest.h>

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

TEST(ResolveUser, EmptyIsRootWithItsPasswdEntry) {
  auto user = resolveUser("", kPasswd, kGroup);
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->uid, 0u);
  EXPECT_EQ(user->gid, 0u);
  EXPECT_EQ(user->home, "/root");
  EXPECT_EQ(user->supplementary_groups, std::vector<gid_t>{10});
}

TEST(ResolveUser, NameGivesPrimaryGidHomeAndMemberships) {
  auto user = resolveUser("app", kPasswd, kGroup);
  ASSERT_TRUE(user.ok()) << user.error().message();
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
  EXPECT_EQ(user.error().message(), "unable to find user ghost: no matching entries in passwd file");

  auto group = resolveUser("app:ghosts", kPasswd, kGroup);
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.error().message(), "unable to find group ghosts: no matching entries in group file");

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

}  // namespace
}  // namespace microvm::guest
