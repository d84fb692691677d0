#include "base/idmapped_mount.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "base/temp_dir.h"

namespace microvm {
namespace {

TEST(IdMappedMountTest, SwapIsTotalAndOneToOne) {
  auto map = swapIds(0, 1000);
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map[0].on_disk, 0u);
  EXPECT_EQ(map[0].shown, 1000u);
  EXPECT_EQ(map[1].on_disk, 1000u);
  EXPECT_EQ(map[1].shown, 0u);
  EXPECT_EQ(map[2].on_disk, 1u);
  EXPECT_EQ(map[2].count, 999u);
  EXPECT_EQ(map[3].on_disk, 1001u);
  EXPECT_EQ(uint64_t{map[3].on_disk} + map[3].count, 4294967295ull);
  uint64_t covered = 0;
  for (const auto& line : swapIds(7, 3)) covered += line.count;
  EXPECT_EQ(covered, 4294967295ull);
  auto same = swapIds(5, 5);
  ASSERT_EQ(same.size(), 1u);
  EXPECT_EQ(same[0].count, 4294967295u);
}

TEST(IdMappedMountTest, OwnersShowTranslatedThroughTheTree) {
  if (::geteuid() != 0) GTEST_SKIP() << "idmapped mounts need root";
  auto dir = TempDir::create("idmap");
  ASSERT_TRUE(dir);
  UniqueFd file(::open((dir->path() / "f").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(file.valid());
  ASSERT_EQ(::fchown(file.get(), 0, 0), 0);
  ASSERT_EQ(::chown(dir->path().c_str(), 0, 0), 0);
  auto tree = openIdMappedTree(dir->path(), swapIds(0, 1234), swapIds(0, 5678), false);
  if (!tree && tree.error().code() == ErrorCode::kUnsupported) GTEST_SKIP() << tree.error().message();
  ASSERT_TRUE(tree) << tree.error().message();
  struct stat st {};
  ASSERT_EQ(::fstatat(tree->get(), "f", &st, 0), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  // The original is untouched.
  ASSERT_EQ(::stat((dir->path() / "f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  // A file root creates through the tree is owned on disk by what shows as 0.
  UniqueFd made(::openat(tree->get(), "g", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(made.valid()) << std::strerror(errno);
  ASSERT_EQ(::stat((dir->path() / "g").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  auto readonly = openIdMappedTree(dir->path(), swapIds(0, 1234), swapIds(0, 5678), true);
  ASSERT_TRUE(readonly);
  EXPECT_LT(::openat(readonly->get(), "h", O_WRONLY | O_CREAT | O_CLOEXEC, 0644), 0);
  EXPECT_EQ(errno, EROFS);
}

}  // namespace
}  // namespace microvm
