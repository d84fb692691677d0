#include "guest/init.h"

#include <gtest/gtest.h>

#include <cerrno>

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

}  // namespace
}  // namespace microvm::guest
