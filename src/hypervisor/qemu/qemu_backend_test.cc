#include "hypervisor/qemu/qemu_backend.h"

#include <gtest/gtest.h>

#include <unistd.h>

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
  config.base_disk = "/images/base.ext4";
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

TEST(QemuBackendTest, ConsoleToASocketReplacesTheFile) {
  MachineConfig config = tcgConfig();
  config.console_fd = 9;
  auto argv = QemuBackend("qemu").commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-chardev", "socket,id=con,fd=" + std::to_string(kQemuConsoleFd)));
  EXPECT_TRUE(hasPair(argv, "-serial", "chardev:con"));
  EXPECT_FALSE(hasPair(argv, "-add-fd", "fd=" + std::to_string(kQemuConsoleFd) + ",set=1"));
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
  // QEMU opens no path by name: files come as inherited fds.
  EXPECT_TRUE(hasPair(argv, "-kernel", "/proc/self/fd/" + std::to_string(kQemuKernelFd)));
  EXPECT_TRUE(hasPair(argv, "-initrd", "/proc/self/fd/" + std::to_string(kQemuInitramfsFd)));
  EXPECT_TRUE(hasPair(argv, "-add-fd", "fd=" + std::to_string(kQemuDiskFd) + ",set=2"));
  EXPECT_TRUE(hasPair(argv, "-add-fd", "fd=" + std::to_string(kQemuBaseDiskFd) + ",set=3"));
  EXPECT_TRUE(hasPair(argv, "-blockdev",
                      "driver=raw,node-name=base,read-only=on,file.driver=file,file.filename=/dev/fdset/3,"
                      "file.read-only=on"));
  EXPECT_TRUE(hasPair(argv, "-blockdev",
                      "driver=qcow2,node-name=root,discard=unmap,backing=base,file.driver=file,"
                      "file.filename=/dev/fdset/2,file.discard=unmap"));
  EXPECT_TRUE(hasPair(argv, "-device", "virtio-blk-device,drive=root"));
  EXPECT_TRUE(hasPair(argv, "-add-fd", "fd=" + std::to_string(kQemuConsoleFd) + ",set=1"));
  EXPECT_TRUE(hasPair(argv, "-serial", "file:/dev/fdset/1"));
  EXPECT_TRUE(hasPair(argv, "-chardev",
                      "socket,id=qmp,fd=" + std::to_string(kQemuQmpFd) + ",server=on,wait=off"));
  EXPECT_TRUE(hasPair(argv, "-mon", "chardev=qmp,mode=control"));
  EXPECT_TRUE(hasPair(argv, "-chardev", "socket,id=ctl,fd=" + std::to_string(kQemuControlFd)));
  EXPECT_EQ(std::find(argv.begin(), argv.end(), "-name"), argv.end());
  MachineConfig ephemeral = tcgConfig();
  ephemeral.ephemeral_disk = true;
  EXPECT_TRUE(hasPair(backend.commandLine(ephemeral), "-blockdev",
                      "driver=qcow2,node-name=root,discard=unmap,backing=base,cache.no-flush=on,"
                      "file.cache.no-flush=on,file.driver=file,file.filename=/dev/fdset/2,file.discard=unmap"));
  MachineConfig named = tcgConfig();
  named.name = "/data/vms/a,b";
  EXPECT_TRUE(hasPair(backend.commandLine(named), "-name", "guest=/data/vms/a,,b"));
  for (const auto& arg : argv) {
    EXPECT_EQ(arg.find("/vm/"), std::string::npos) << arg;
    EXPECT_EQ(arg.find("/images/"), std::string::npos) << arg;
    EXPECT_EQ(arg.find("/run/vm/"), std::string::npos) << arg;
  }

  MachineConfig bare = tcgConfig();
  bare.root_disk.clear();
  bare.control_fd = -1;
  bare.qmp_socket.clear();
  auto bare_argv = backend.commandLine(bare);
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-blockdev"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-chardev"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-mon"), bare_argv.end());
  EXPECT_EQ(std::find(bare_argv.begin(), bare_argv.end(), "-netdev"), bare_argv.end());  // no NIC: only lo
}

TEST(QemuBackendTest, NicUsesTheInheritedStreamSocket) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  config.net_fd = 9;
  auto argv = backend.commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=" + std::to_string(kQemuNetFd)));
  EXPECT_TRUE(hasPair(argv, "-device", std::string("virtio-net-device,netdev=net0,host_mtu=1500,mac=") + kGuestMac));
}

TEST(QemuBackendTest, VhostVsockPutsGuestRamInASharedMemfd) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  auto plain = backend.commandLine(config);
  EXPECT_TRUE(hasPair(plain, "-object", "memory-backend-ram,id=mem,size=256M"));

  config.vhost_vsock_socket = "/run/vm/vhost-vsock.sock";
  auto argv = backend.commandLine(config);
  EXPECT_TRUE(hasPair(argv, "-object", "memory-backend-memfd,id=mem,size=256M,share=on"));
  auto machine = std::find(argv.begin(), argv.end(), "-M");
  ASSERT_NE(machine, argv.end());
  EXPECT_NE(machine[1].find(",memory-backend=mem"), std::string::npos);
  EXPECT_TRUE(hasPair(argv, "-chardev", "socket,id=vsock,fd=" + std::to_string(kQemuVsockFd)));
  EXPECT_TRUE(hasPair(argv, "-device", "vhost-user-vsock-device,chardev=vsock"));
  EXPECT_TRUE(hasPair(argv, "-m", "256"));
}

// Every RAM back-end is named "mem": a saved state loads only into a RAM
// block of the name it was saved from.
TEST(QemuBackendTest, GuestMemoryIsTheRunnersMemfdSharedOrATemplatesCopyOnWrite) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  config.memory_fd = 9;
  auto shared = backend.commandLine(config);
  EXPECT_TRUE(hasPair(shared, "-object",
                      "memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/" + std::to_string(kQemuMemoryFd) +
                          ",share=on"));
  config.memory_private = true;
  auto cow = backend.commandLine(config);
  EXPECT_TRUE(hasPair(cow, "-object",
                      "memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/" + std::to_string(kQemuMemoryFd) +
                          ",share=off"));
}

TEST(QemuBackendTest, SharesAreReachedThroughInheritedDirectoryFds) {
  QemuBackend backend("qemu");
  MachineConfig config = tcgConfig();
  config.shares.push_back({"/home/data", "vol0", false, -1});
  config.shares.push_back({"/home/ro", "vol1", true, 42});
  auto argv = backend.commandLine(config);
  std::string model = ::geteuid() == 0 ? "passthrough" : "none";
  EXPECT_TRUE(hasPair(argv, "-fsdev",
                      "local,id=fs0,path=/proc/self/fd/" + std::to_string(kQemuFirstShareFd) + ",security_model=" + model));
  EXPECT_TRUE(hasPair(argv, "-fsdev", "local,id=fs1,path=/proc/self/fd/" + std::to_string(kQemuFirstShareFd + 1) +
                                          ",security_model=" + model + ",readonly=on"));
  EXPECT_TRUE(hasPair(argv, "-device", "virtio-9p-device,fsdev=fs1,mount_tag=vol1"));
}

TEST(QemuBackendTest, VmmIsSandboxed) {
  QemuBackend backend("qemu");
  auto argv = backend.commandLine(tcgConfig());
  EXPECT_TRUE(hasPair(argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
}

}  // namespace
}  // namespace microvm
