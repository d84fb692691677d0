#include "hypervisor/qemu/qemu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace microvm {
namespace {

bool hasPair(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag && argv[i + 1] == value) return true;
  }
  return false;
}

MachineConfig tcgConfig() {
  MachineConfig config;
  config.accel = Acceleration::kTcg;
  config.tsc_khz = 2445426;
  config.cpus = 2;
  config.memory_mib = 256;
  config.kernel = "/k/vmlinux";
  config.initramfs = "/k/initramfs.cpio";
  config.root_disk = "/vm/disk.qcow2";
  config.console_log = "/vm/console.log";
  config.qmp_socket = "/run/vm/qmp.sock";
  config.control_fd = 7;
  return config;
}

TEST(QemuBackendTest, TcgMachineHasTscHintAndMicrovmDefaults) {
  QemuBackend backend("/usr/bin/qemu-system-x86_64");
  auto argv = backend.commandLine(tcgConfig());
  EXPECT_EQ(argv[0], "/usr/bin/qemu-system-x86_64");
  EXPECT_TRUE(hasPair(argv, "-accel", "tcg,thread=multi"));
  EXPECT_TRUE(hasPair(argv, "-m", "256"));
  EXPECT_TRUE(hasPair(argv, "-smp", "2"));
  // pit/pic/rtc must stay at their defaults: turning them off hangs TCG boots.
  auto machine = std::find(argv.begin(), argv.end(), "-M");
  ASSERT_NE(machine, argv.end());
  EXPECT_EQ(machine[1].find("pit=off"), std::string::npos);
  EXPECT_NE(kernelCommandLine(tcgConfig()).find("tsc_early_khz=2445426"), std::string::npos);
  EXPECT_NE(std::find(argv.begin(), argv.end(), "-no-reboot"), argv.end());
}

TEST(QemuBackendTest, KvmMachineHasNoTscHint) {
  MachineConfig config = tcgConfig();
  config.accel = Acceleration::kKvm;
  QemuBackend backend("qemu");
  auto argv = backend.commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-accel", "kvm"));
  EXPECT_EQ(kernelCommandLine(config).find("tsc_early_khz"), std::string::npos);
}

TEST(QemuBackendTest, DevicesFollowTheConfig) {
  QemuBackend backend("qemu");
  auto argv = backend.commandLine(tcgConfig());
  EXPECT_TRUE(hasPair(argv, "-drive", "id=root,file=/vm/disk.qcow2,format=qcow2,if=none,discard=unmap"));
  EXPECT_TRUE(hasPair(argv, "-serial", "file:/vm/console.log"));
  EXPECT_TRUE(hasPair(argv, "-qmp", "unix:/run/vm/qmp.sock,server=on,wait=off"));
  EXPECT_TRUE(hasPair(argv, "-chardev", "socket,id=ctl,fd=" + std::to_string(kQemuControlFd)));

  MachineConfig bare = tcgConfig();
  bare.root_disk.clear();
  bare.control_fd = -1;
  bare.qmp_socket.clear();
  auto bare_argv = backend.commandLine(bare);
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-drive"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-chardev"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-qmp"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-netdev"), bare_argv.end());  // no NIC: only lo
}

TEST(QemuBackendTest, NicUsesTheInheritedStreamSocket) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  config.net_fd = 9;
  auto argv = backend.commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=" + std::to_string(kQemuNetFd)));
  EXPECT_TRUE(hasPair(argv, "-device", std::string("virtio-net-device,netdev=net0,mac=") + kGuestMac));
}

TEST(QemuBackendTest, VhostVsockPutsGuestRamInASharedMemfd) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  auto plain = backend.commandLine(config);
  EXPECT_EQ(std::find(plain.begin(), plain.end(), "-object"), plain.end());

  config.vhost_vsock_socket = "/run/vm/vhost-vsock.sock";
  auto argv = backend.commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-object", "memory-backend-memfd,id=mem,size=256M,share=on"));
  auto machine = std::find(argv.begin(), argv.end(), "-M");
  ASSERT_NE(machine, argv.end());
  EXPECT_NE(machine[1].find(",memory-backend=mem"), std::string::npos);
  EXPECT_TRUE(hasPair(argv, "-chardev", "socket,id=vsock,path=/run/vm/vhost-vsock.sock"));
  EXPECT_TRUE(hasPair(argv, "-device", "vhost-user-vsock-device,chardev=vsock"));
  EXPECT_TRUE(hasPair(argv, "-m", "256"));
}

TEST(QemuBackendTest, VmmIsSandboxed) {
  QemuBackend backend("qemu");
  auto argv = backend.commandLine(tcgConfig());
  EXPECT_TRUE(hasPair(argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
}

}  // namespace
}  // namespace microvm
