#include "image/root_disk.h"

#include <gtest/gtest.h>

#include <fcntl.h>

#include <cstdio>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"

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
  EXPECT_FALSE(createOverlay(*base, overlay));  // never over an existing file
}

std::string commandOutput(const std::string& command) {
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    for (size_t got; (got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, got);
    if (::pclose(pipe) != 0) out += "\n(exit status non-zero)";
  }
  return out;
}

// The overlay is written without qemu-img; qemu-img must find it a whole,
// clean qcow2 image over the base, of the base's size, with no data yet.
TEST_F(RootDiskTest, AnOverlayIsACleanQcow2ImageOverItsBaseAsQemuImgSeesIt) {
  for (uint64_t size : {uint64_t{700} << 20, uint64_t{3} << 30, uint64_t{64} << 10}) {
    fs::path base = dir_ / ("base-" + std::to_string(size) + ".raw");
    {
      UniqueFd fd(::open(base.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
      ASSERT_TRUE(fd.valid());
      ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    }
    fs::path overlay = dir_ / ("overlay-" + std::to_string(size) + ".qcow2");
    ASSERT_TRUE(createOverlay(base, overlay));
    std::string check = commandOutput("qemu-img check " + overlay.string() + " 2>&1");
    EXPECT_NE(check.find("No errors were found"), std::string::npos) << check;
    std::string info = commandOutput("qemu-img info --output json " + overlay.string() + " 2>&1");
    EXPECT_NE(info.find("\"virtual-size\": " + std::to_string(size)), std::string::npos) << info;
    EXPECT_NE(info.find("\"backing-filename\": \"" + base.string() + "\""), std::string::npos) << info;
    EXPECT_NE(info.find("\"backing-filename-format\": \"raw\""), std::string::npos) << info;
    std::string map = commandOutput("qemu-img map --output json -f qcow2 " + overlay.string() + " 2>&1");
    EXPECT_EQ(map.find("\"depth\": 0"), std::string::npos) << "the overlay holds data of its own: " << map;
  }
  EXPECT_FALSE(createOverlay(dir_ / "missing.raw", dir_ / "never.qcow2"));
  EXPECT_FALSE(fs::exists(dir_ / "never.qcow2"));
}

}  // namespace
}  // namespace microvm
