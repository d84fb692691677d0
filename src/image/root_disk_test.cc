#include "image/root_disk.h"

#include <gtest/gtest.h>

#include <optional>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

class RootDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("microvm-disk-test");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    dir_ = temp_->path();
    tree_ = dir_ / "tree";
    ASSERT_TRUE(makeDirs(tree_ / "etc"));
    ASSERT_TRUE(writeFileAtomic(tree_ / "etc" / "motd", "hello\n", 0644));
    ASSERT_EQ(::symlink("etc/motd", (tree_ / "link").c_str()), 0);
  }
  std::optional<TempDir> temp_;
  fs::path dir_;
  fs::path tree_;
};

TEST_F(RootDiskTest, DigestIsStableAndSeesContentModeAndLinks) {
  auto first = digestTree(tree_);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(digestTree(tree_)->hex, first->hex);
  EXPECT_EQ(first->bytes, 6u);

  ASSERT_TRUE(writeFileAtomic(tree_ / "etc" / "motd", "hellO\n", 0644));
  auto content_changed = digestTree(tree_);
  EXPECT_NE(content_changed->hex, first->hex);

  ASSERT_EQ(::chmod((tree_ / "etc" / "motd").c_str(), 0600), 0);
  EXPECT_NE(digestTree(tree_)->hex, content_changed->hex);

  auto before_link = digestTree(tree_)->hex;
  ASSERT_EQ(::unlink((tree_ / "link").c_str()), 0);
  ASSERT_EQ(::symlink("etc", (tree_ / "link").c_str()), 0);
  EXPECT_NE(digestTree(tree_)->hex, before_link);
}

TEST_F(RootDiskTest, DigestRejectsMissingAndNonDirectories) {
  EXPECT_EQ(digestTree(dir_ / "missing").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(digestTree(tree_ / "etc" / "motd").error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(RootDiskTest, BaseDiskIsBuiltOnceAndReadOnly) {
  auto base = ensureBaseDisk(dir_ / "cache", tree_);
  ASSERT_TRUE(base) << base.error().message();
  struct stat first {};
  ASSERT_EQ(::stat(base->c_str(), &first), 0);
  EXPECT_EQ(first.st_mode & 0777, 0444u);

  auto again = ensureBaseDisk(dir_ / "cache", tree_);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *base);
  struct stat second {};
  ASSERT_EQ(::stat(again->c_str(), &second), 0);
  EXPECT_EQ(second.st_ino, first.st_ino);  // reused, not rebuilt

  auto overlay = dir_ / "disk.qcow2";
  ASSERT_TRUE(createOverlay(*base, overlay));
  EXPECT_TRUE(fs::exists(overlay));
}

}  // namespace
}  // namespace microvm
