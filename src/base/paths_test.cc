#include "base/paths.h"

#include <gtest/gtest.h>

namespace microvm {
namespace {

// These names are an on-disk contract: VMs, images and snapshots made by an
// older microvm must still be found after an upgrade.
TEST(Paths, VmFilesKeepTheirNames) {
  VmPaths vm("/data/vms/ab12");
  EXPECT_EQ(vm.spec(), "/data/vms/ab12/spec.json");
  EXPECT_EQ(vm.state(), "/data/vms/ab12/state.json");
  EXPECT_EQ(vm.stateLock(), "/data/vms/ab12/state.lock");
  EXPECT_EQ(vm.disk(), "/data/vms/ab12/disk.qcow2");
  EXPECT_EQ(vm.initramfs(), "/data/vms/ab12/initramfs.cpio");
  EXPECT_EQ(vm.workloadLog(), "/data/vms/ab12/workload.log");
  EXPECT_EQ(vm.consoleLog(), "/data/vms/ab12/console.log");
  EXPECT_EQ(vm.runnerLog(), "/data/vms/ab12/runner.log");

  VmSockets sockets("/run/microvm/ab12");
  EXPECT_EQ(sockets.runner(), "/run/microvm/ab12/runner.sock");
  EXPECT_EQ(sockets.qmp(), "/run/microvm/ab12/qmp.sock");
  EXPECT_EQ(sockets.vsock(), "/run/microvm/ab12/vsock.sock");
  EXPECT_EQ(sockets.vhostVsock(), "/run/microvm/ab12/vhost-vsock.sock");
}

TEST(Paths, ImageStoreAndSnapshotsKeepTheirNames) {
  auto images = ImagePaths::inDataDir("/data");
  EXPECT_EQ(images.dir(), "/data/images");
  EXPECT_EQ(images.storeLock(), "/data/images/store.lock");
  EXPECT_EQ(images.blob("sha256:abcd"), "/data/images/blobs/sha256/abcd");
  EXPECT_EQ(images.rootfsDir(), "/data/images/rootfs");
  EXPECT_EQ(ImagePaths::baseDisk("/data/images/rootfs/k"), "/data/images/rootfs/k/base.ext4");
  EXPECT_EQ(ImagePaths::imageRecord("/data/images/rootfs/k"), "/data/images/rootfs/k/image.json");

  SnapshotPaths snapshots("/data");
  EXPECT_EQ(snapshots.snapshot("s1"), "/data/snapshots/s1");
  EXPECT_EQ(SnapshotPaths::memory("/data/snapshots/s1"), "/data/snapshots/s1/memory.bin");
  EXPECT_EQ(SnapshotPaths::disk("/data/snapshots/s1"), "/data/snapshots/s1/disk.qcow2");
  EXPECT_EQ(SnapshotPaths::meta("/data/snapshots/s1"), "/data/snapshots/s1/snapshot.json");
}

}  // namespace
}  // namespace microvm
