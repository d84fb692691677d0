#include "runner/keeper.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "base/paths.h"
#include "base/temp_dir.h"
#include "base/unix_socket.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

class KeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("keeper-test");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    vm_dir_ = temp_->path() / "data" / "vms" / "abc";
    fs::create_directories(vm_dir_);
    fs::create_directories(temp_->path() / "data" / "snapshots");
    spec_.runtime_dir = (temp_->path() / "run").string();
    fs::create_directories(spec_.runtime_dir);
    spec_.vsock_ports = {{5000, (temp_->path() / "mapped.sock").string(), false},
                         {6000, (temp_->path() / "listening.sock").string(), true}};
  }
  std::optional<TempDir> temp_;
  fs::path vm_dir_;
  VmSpec spec_;
};

TEST_F(KeeperTest, ConnectsOnlyToTheSocketsTheSpecAllows) {
  std::string base = VmSockets(spec_.runtime_dir).vsock().string();
  EXPECT_TRUE(keeperMayConnect(spec_, base + "_1024"));
  EXPECT_TRUE(keeperMayConnect(spec_, base + "_4294967295"));
  EXPECT_TRUE(keeperMayConnect(spec_, temp_->path() / "mapped.sock"));
  EXPECT_FALSE(keeperMayConnect(spec_, temp_->path() / "listening.sock"));  // the runner listens there
  EXPECT_FALSE(keeperMayConnect(spec_, base));
  EXPECT_FALSE(keeperMayConnect(spec_, base + "_"));
  EXPECT_FALSE(keeperMayConnect(spec_, base + "_12/../../x"));
  EXPECT_FALSE(keeperMayConnect(spec_, base + "_12345678901"));
  EXPECT_FALSE(keeperMayConnect(spec_, "/run/docker.sock"));
  EXPECT_FALSE(keeperMayConnect(spec_, base + "_1x"));
}

TEST_F(KeeperTest, WritesSnapshotsOnlyInATemporarySnapshotDirectory) {
  fs::path snapshots = temp_->path() / "data" / "snapshots";
  fs::create_directory(snapshots / ".tmp-s-1234");
  fs::create_directory(snapshots / "done");
  bool root = ::geteuid() == 0;  // the directory must be root's
  EXPECT_EQ(keeperMayWriteSnapshot(vm_dir_, snapshots / ".tmp-s-1234"), root);
  EXPECT_FALSE(keeperMayWriteSnapshot(vm_dir_, snapshots / "done"));
  EXPECT_FALSE(keeperMayWriteSnapshot(vm_dir_, snapshots / ".tmp-missing"));
  EXPECT_FALSE(keeperMayWriteSnapshot(vm_dir_, temp_->path() / ".tmp-elsewhere"));
  EXPECT_FALSE(keeperMayWriteSnapshot(vm_dir_, snapshots / ".tmp-s-1234" / ".." / ".." / ".tmp-x"));
  fs::create_directory_symlink(temp_->path(), snapshots / ".tmp-link");
  EXPECT_FALSE(keeperMayWriteSnapshot(vm_dir_, snapshots / ".tmp-link"));
}

TEST_F(KeeperTest, SavedStateFileOnlyInTheVmsOwnSavingDir) {
  EXPECT_FALSE(keeperMayWriteSavedState(vm_dir_));  // not made yet
  auto keeper = Keeper::start(spec_, vm_dir_);
  ASSERT_TRUE(keeper) << keeper.error().message();
  EXPECT_FALSE(keeper->savedStateFiles());
  fs::create_directory_symlink(temp_->path(), VmPaths(vm_dir_).saving());
  EXPECT_FALSE(keeperMayWriteSavedState(vm_dir_));  // a link the runner's id could have made
  fs::remove(VmPaths(vm_dir_).saving());
  fs::create_directory(VmPaths(vm_dir_).saving());
  bool root = ::geteuid() == 0;  // the directory must be root's
  EXPECT_EQ(keeperMayWriteSavedState(vm_dir_), root);
  if (!root) return;
  auto file = keeper->savedStateFiles();
  ASSERT_TRUE(file) << file.error().message();
  EXPECT_TRUE(fs::exists(VmPaths(vm_dir_).saving() / "memory.bin"));
  EXPECT_TRUE(fs::exists(VmPaths(vm_dir_).saving() / "memory.ram"));
  EXPECT_TRUE(file->memory.valid() && file->ram.valid());
  EXPECT_FALSE(keeper->savedStateFiles());  // never over an existing one
}

TEST_F(KeeperTest, ConnectsRefusesAndCleansUpForReal) {
  std::string base = VmSockets(spec_.runtime_dir).vsock().string();
  auto listener = listenUnix(base + "_77", 4);
  ASSERT_TRUE(listener);
  spec_.remove_on_exit = true;
  auto keeper = Keeper::start(spec_, vm_dir_);
  ASSERT_TRUE(keeper) << keeper.error().message();
  auto connected = keeper->connect(base + "_77");
  ASSERT_TRUE(connected) << connected.error().message();
  EXPECT_TRUE(connected->valid());
  EXPECT_FALSE(keeper->connect(base + "_78"));  // allowed, but nothing listens
  auto refused = keeper->connect(temp_->path() / "listening.sock");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().sysErrno(), EACCES);
  ASSERT_TRUE(keeper->finish());
  EXPECT_FALSE(fs::exists(spec_.runtime_dir));
  EXPECT_FALSE(fs::exists(vm_dir_));  // --rm
}

TEST_F(KeeperTest, ExitsWhenTheRunnerGoesAwayAndRemovesNothing) {
  pid_t pid;
  {
    auto keeper = Keeper::start(spec_, vm_dir_);
    ASSERT_TRUE(keeper);
    pid = keeper->pid();
  }  // dropped without finish(): the keeper sees its socket close
  EXPECT_NE(::kill(pid, 0), 0);  // reaped
  EXPECT_TRUE(fs::exists(spec_.runtime_dir));
  EXPECT_TRUE(fs::exists(vm_dir_));
}

}  // namespace
}  // namespace microvm
