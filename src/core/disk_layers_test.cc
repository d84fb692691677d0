// Disk layers: a saved disk becomes a shared, linked layer under each copy's
// own overlay, and a saved state keeps the source's layers by name.
#include "core/disk_layers.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "base/paths.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

ino_t inode(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

TEST(DiskLayersTest, CopiesLinkTheSavedDiskOverTheSourcesLayersLowestFirst) {
  auto dir = TempDir::create("microvm-disk-layers-test");
  ASSERT_TRUE(dir.ok());
  fs::path root = dir->path();
  // A source VM already one layer deep, saved into `saved`.
  fs::path source_dir = root / "vms" / "source";
  ASSERT_TRUE(makeDirs(VmPaths(source_dir).diskLayers()).ok());
  VmSpec source;
  source.name = "source";
  source.disk_layers = {(VmPaths(source_dir).diskLayers() / "disk-1.qcow2").string()};
  ASSERT_TRUE(writeFileAtomic(source.disk_layers[0], "lower layer").ok());
  fs::path saved = root / "snapshots" / "saved";
  ASSERT_TRUE(makeDirs(saved).ok());
  ASSERT_TRUE(writeFileAtomic(SnapshotPaths::disk(saved), "saved disk").ok());
  ASSERT_TRUE(keepDiskLayers(source, saved).ok());
  // The saved state outlives the source VM.
  ASSERT_TRUE(removeTree(source_dir).ok());

  std::vector<std::vector<std::string>> copies;
  for (const char* name : {"one", "two"}) {
    fs::path vm_dir = root / "vms" / name;
    ASSERT_TRUE(makeDirs(vm_dir).ok());
    auto layers = layDiskLayers(saved, source, vm_dir);
    ASSERT_TRUE(layers.ok()) << layers.error().message();
    ASSERT_EQ(layers->size(), 2u);
    EXPECT_EQ((*layers)[0], (VmPaths(vm_dir).diskLayers() / "disk-1.qcow2").string());
    EXPECT_EQ(readFile((*layers)[0]).value(), "lower layer");
    EXPECT_EQ(readFile((*layers)[1]).value(), "saved disk");
    // Links, not copies.
    EXPECT_EQ(inode((*layers)[1]), inode(SnapshotPaths::disk(saved)));
    copies.push_back(*layers);
  }
  EXPECT_EQ(inode(copies[0][0]), inode(copies[1][0]));
}

TEST(DiskLayersTest, AChainAtTheLimitIsRefusedWithTheReason) {
  VmSpec source;
  source.name = "deep";
  source.disk_layers.assign(kMaxDiskLayers - 1, "/x/layers/disk.qcow2");
  EXPECT_TRUE(checkDiskLayerRoom(source).ok());
  source.disk_layers.push_back("/x/layers/disk.qcow2");
  auto refused = checkDiskLayerRoom(source);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("VM deep's disk is already a chain of 16"), std::string::npos)
      << refused.error().message();
}

}  // namespace
}  // namespace microvm
