#include "core/copy_plan.h"

#include <gtest/gtest.h>

namespace microvm {
namespace {

using agent::FileType;

std::string plan(const std::string& source, FileType type, const std::string& destination,
                 std::optional<FileType> destination_type) {
  auto target = planCopy(source, type, destination, destination_type);
  return target ? *target : "error: " + target.error().message();
}

TEST(CopyPlan, FileIntoAnExistingDirectoryKeepsItsName) {
  EXPECT_EQ(plan("/etc/hosts", FileType::kRegular, "/tmp", FileType::kDirectory), "/tmp/hosts");
  EXPECT_EQ(plan("hosts", FileType::kRegular, "/tmp/", FileType::kDirectory), "/tmp/hosts");
  EXPECT_EQ(plan("a/b/", FileType::kDirectory, "/", FileType::kDirectory), "/b");
}

TEST(CopyPlan, FileOntoAFileOrANewNameReplacesOrCreatesIt) {
  EXPECT_EQ(plan("a", FileType::kRegular, "/tmp/x", FileType::kRegular), "/tmp/x");
  EXPECT_EQ(plan("a", FileType::kRegular, "/tmp/new", std::nullopt), "/tmp/new");
}

TEST(CopyPlan, TrailingSlashesAreDockers) {
  // A file source cannot end in a slash, nor create a missing directory.
  EXPECT_EQ(plan("a/", FileType::kRegular, "/tmp", FileType::kDirectory), "error: a/: not a directory");
  EXPECT_EQ(plan("a", FileType::kRegular, "/tmp/new/", std::nullopt),
            "error: destination directory /tmp/new/ does not exist");
  EXPECT_EQ(plan("a", FileType::kRegular, "/tmp/file/", FileType::kRegular), "error: /tmp/file/: not a directory");
  // A directory source creates it.
  EXPECT_EQ(plan("dir", FileType::kDirectory, "/tmp/new/", std::nullopt), "/tmp/new");
}

TEST(CopyPlan, DirectoryContentsWithSlashDot) {
  EXPECT_EQ(plan("dir/.", FileType::kDirectory, "/srv", FileType::kDirectory), "/srv");
  EXPECT_EQ(plan("dir", FileType::kDirectory, "/srv", FileType::kDirectory), "/srv/dir");
  EXPECT_EQ(plan("dir/.", FileType::kDirectory, "/srv/new", std::nullopt), "/srv/new");
  EXPECT_EQ(plan("/", FileType::kDirectory, "/backup", FileType::kDirectory), "/backup");
}

TEST(CopyPlan, DirectoryCannotReplaceAFile) {
  EXPECT_EQ(plan("dir", FileType::kDirectory, "/etc/hosts", FileType::kRegular),
            "error: cannot copy directory dir onto file /etc/hosts");
}

TEST(CopyPlan, HostModesDropSpecialBitsAndFollowTheUmask) {
  // What a hostile guest reports: setuid root, setgid, sticky, world-writable.
  EXPECT_EQ(hostModeFor(04755, 022), 0755u);
  EXPECT_EQ(hostModeFor(02755, 022), 0755u);
  EXPECT_EQ(hostModeFor(06777, 022), 0755u);
  EXPECT_EQ(hostModeFor(01777, 022), 0755u);
  EXPECT_EQ(hostModeFor(0777, 022), 0755u);
  EXPECT_EQ(hostModeFor(0666, 022), 0644u);
  EXPECT_EQ(hostModeFor(0777, 077), 0700u);
  EXPECT_EQ(hostModeFor(0777, 002), 0775u);
  // Bits above 07777 (file type bits, garbage) never get through either.
  EXPECT_EQ(hostModeFor(0xffffffffu, 022), 0755u);
  // What the guest takes away stays away.
  EXPECT_EQ(hostModeFor(0640, 022), 0640u);
  EXPECT_EQ(hostModeFor(0500, 0), 0500u);
  EXPECT_EQ(hostModeFor(0, 0), 0u);
}

TEST(CopyPlan, BaseNameAndJoin) {
  EXPECT_EQ(baseName("/a/b//"), "b");
  EXPECT_EQ(baseName("/"), "");
  EXPECT_EQ(baseName("name"), "name");
  EXPECT_EQ(joinPath("/", "x"), "/x");
  EXPECT_EQ(joinPath("/a/", "x"), "/a/x");
}

}  // namespace
}  // namespace microvm
