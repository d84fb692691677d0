#include "hypervisor/qemu/qemu_command.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

namespace microvm {
namespace {

using Source = QemuFd::Source;

bool hasPair(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag && argv[i + 1] == value) return true;
  }
  return false;
}

bool has(const std::vector<std::string>& argv, const std::string& arg) {
  return std::find(argv.begin(), argv.end(), arg) != argv.end();
}

// Every fd number the argv names inside QEMU, with the fd set it is added
// to (0: reached by number).
std::map<int, int> fdsNamedBy(const std::vector<std::string>& argv) {
  std::map<int, int> named;
  static const std::regex by_number(R"((?:/proc/self/fd/|[,=]fd=|^fd=|addr\.str=|^fd:)(\d+))");
  static const std::regex add_fd(R"(^fd=(\d+),set=(\d+)$)");
  for (size_t i = 0; i < argv.size(); ++i) {
    std::smatch match;
    if (i > 0 && argv[i - 1] == "-add-fd" && std::regex_match(argv[i], match, add_fd)) {
      named[std::stoi(match[1])] = std::stoi(match[2]);
      continue;
    }
    for (auto it = std::sregex_iterator(argv[i].begin(), argv[i].end(), by_number); it != std::sregex_iterator(); ++it) {
      named.emplace(std::stoi((*it)[1]), 0);
    }
  }
  return named;
}

// The fd table and the argv agree: each names exactly what the other holds.
void expectConsistent(const QemuCommand& command) {
  std::map<int, int> table;
  for (const auto& entry : command.fds) {
    EXPECT_TRUE(table.emplace(entry.target, entry.fd_set).second) << "fd " << entry.target << " twice";
    EXPECT_EQ(entry.source == Source::kInherited, entry.fd >= 0) << entry.what;
    EXPECT_EQ(entry.source == Source::kInherited, entry.path.empty()) << entry.what;
  }
  table.erase(2);  // QEMU's stderr: inherited, never named
  EXPECT_EQ(fdsNamedBy(command.argv), table);
}

const QemuFd* entryAt(const QemuCommand& command, int target) {
  for (const auto& entry : command.fds) {
    if (entry.target == target) return &entry;
  }
  return nullptr;
}

MachineConfig bareConfig() {
  MachineConfig config;
  config.accel = Acceleration::kTcg;
  config.cpus = 2;
  config.memory_mib = 256;
  config.kernel = "/k/vmlinux";
  config.initramfs = "/k/initramfs.cpio";
  return config;
}

MachineConfig fullConfig() {
  MachineConfig config = bareConfig();
  config.name = "/data/vms/ab12";
  config.tsc_khz = 2445426;
  config.root_disk = "/vm/disk.qcow2";
  config.base_disk = "/images/base.ext4";
  config.console_fd = 40;
  config.qmp_socket = "/run/vm/qmp.sock";
  config.control_fd = 41;
  config.net_fd = 42;
  config.net_mtu = 65520;
  config.incoming_fd = 43;
  config.stderr_fd = 44;
  config.vhost_vsock_socket = "/run/vm/vhost-vsock.sock";
  config.shares.push_back({"/home/data", "vol0", false, -1});
  config.shares.push_back({"/home/ro", "vol1", true, -1});
  config.shares.push_back({"/home/mapped", "vol2", false, 45});
  return config;
}

TEST(QemuCommandTest, BareMachineInheritsOnlyKernelAndInitramfs) {
  auto command = buildQemuCommand("/usr/bin/qemu-system-x86_64", bareConfig(), false);
  EXPECT_EQ(command.argv[0], "/usr/bin/qemu-system-x86_64");
  ASSERT_EQ(command.fds.size(), 2u);
  EXPECT_EQ(command.fds[0], (QemuFd{kQemuKernelFd, Source::kReadOnlyFile, -1, "/k/vmlinux", 0, "guest kernel"}));
  EXPECT_EQ(command.fds[1], (QemuFd{kQemuInitramfsFd, Source::kReadOnlyFile, -1, "/k/initramfs.cpio", 0, "initramfs"}));
  EXPECT_TRUE(hasPair(command.argv, "-serial", "null"));
  for (const char* absent : {"-blockdev", "-chardev", "-netdev", "-fsdev", "-incoming", "-name", "-mon"}) {
    EXPECT_FALSE(has(command.argv, absent)) << absent;
  }
  expectConsistent(command);
}

TEST(QemuCommandTest, FullMachineNamesEachFdOfItsTableOnce) {
  auto command = buildQemuCommand("qemu", fullConfig(), true);
  expectConsistent(command);
  // QEMU opens no path by name.
  for (const auto& arg : command.argv) {
    for (const char* path : {"/vm/", "/images/", "/run/vm/", "/home/", "/k/"}) EXPECT_EQ(arg.find(path), std::string::npos) << arg;
  }
  EXPECT_TRUE(hasPair(command.argv, "-name", "guest=/data/vms/ab12"));
}

TEST(QemuCommandTest, PathsAreOpenedInTheOrderOfTheTable) {
  MachineConfig config = fullConfig();
  config.incoming_fd = -1;  // a boot: the kernel and initramfs are opened too
  auto command = buildQemuCommand("qemu", config, false);
  std::vector<int> opened;
  for (const auto& entry : command.fds) {
    if (entry.source != Source::kInherited) opened.push_back(entry.target);
  }
  // The disk before its base, the volumes, then the sockets.
  EXPECT_EQ(opened, (std::vector<int>{kQemuKernelFd, kQemuInitramfsFd, kQemuDiskFd, kQemuBaseDiskFd, kQemuFirstShareFd,
                                      kQemuFirstShareFd + 1, kQemuVsockFd, kQemuQmpFd}));
}

TEST(QemuCommandTest, DiskAndBaseAreFdSetsAndBlockdevNodes) {
  MachineConfig config = bareConfig();
  config.root_disk = "/vm/disk.qcow2";
  config.base_disk = "/images/base.ext4";
  config.ephemeral_disk = true;
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuDiskFd), (QemuFd{kQemuDiskFd, Source::kDisk, -1, "/vm/disk.qcow2", 2, "root disk"}));
  EXPECT_EQ(*entryAt(command, kQemuBaseDiskFd),
            (QemuFd{kQemuBaseDiskFd, Source::kReadOnlyDisk, -1, "/images/base.ext4", 3, "base disk"}));
  EXPECT_TRUE(hasPair(command.argv, "-add-fd", "fd=9,set=2"));
  EXPECT_TRUE(hasPair(command.argv, "-add-fd", "fd=10,set=3"));
  EXPECT_TRUE(hasPair(command.argv, "-blockdev",
                      "driver=qcow2,node-name=root,discard=unmap,backing=base,cache.no-flush=on,"
                      "file.cache.no-flush=on,file.driver=file,file.filename=/dev/fdset/2,file.discard=unmap"));
  EXPECT_TRUE(hasPair(command.argv, "-device", "virtio-blk-device,drive=root"));

  config.base_disk.clear();
  config.ephemeral_disk = false;
  auto alone = buildQemuCommand("qemu", config, false);
  expectConsistent(alone);
  EXPECT_EQ(entryAt(alone, kQemuBaseDiskFd), nullptr);
  EXPECT_TRUE(hasPair(alone.argv, "-blockdev",
                      "driver=qcow2,node-name=root,discard=unmap,file.driver=file,file.filename=/dev/fdset/2,"
                      "file.discard=unmap"));
}

TEST(QemuCommandTest, FrozenDiskLayersChainFromTheBaseToTheOverlayReadOnlyAfterTheShares) {
  MachineConfig config = bareConfig();
  config.root_disk = "/vm/disk.qcow2";
  config.base_disk = "/images/base.ext4";
  config.disk_layers = {"/vm/layers/a.qcow2", "/vm/layers/b.qcow2"};
  config.shares.push_back({"/home/data", "vol0", false, -1});
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  int first = kQemuFirstShareFd + 1;  // after the one share
  EXPECT_EQ(*entryAt(command, first),
            (QemuFd{first, Source::kReadOnlyDisk, -1, "/vm/layers/a.qcow2", kFirstDiskLayerFdSet, "disk layer layer0"}));
  EXPECT_EQ(*entryAt(command, first + 1), (QemuFd{first + 1, Source::kReadOnlyDisk, -1, "/vm/layers/b.qcow2",
                                                  kFirstDiskLayerFdSet + 1, "disk layer layer1"}));
  EXPECT_TRUE(hasPair(command.argv, "-blockdev",
                      "driver=qcow2,node-name=layer0,read-only=on,backing=base,file.driver=file,"
                      "file.filename=/dev/fdset/4,file.read-only=on"));
  EXPECT_TRUE(hasPair(command.argv, "-blockdev",
                      "driver=qcow2,node-name=layer1,read-only=on,backing=layer0,file.driver=file,"
                      "file.filename=/dev/fdset/5,file.read-only=on"));
  EXPECT_TRUE(hasPair(command.argv, "-blockdev",
                      "driver=qcow2,node-name=root,discard=unmap,backing=layer1,file.driver=file,"
                      "file.filename=/dev/fdset/2,file.discard=unmap"));
  // Each node comes after the one it is backed by.
  auto at = [&](const std::string& prefix) {
    for (size_t i = 0; i < command.argv.size(); ++i) {
      if (command.argv[i].rfind(prefix, 0) == 0) return i;
    }
    return command.argv.size();
  };
  EXPECT_LT(at("driver=raw,node-name=base"), at("driver=qcow2,node-name=layer0"));
  EXPECT_LT(at("driver=qcow2,node-name=layer0"), at("driver=qcow2,node-name=layer1"));
  EXPECT_LT(at("driver=qcow2,node-name=layer1"), at("driver=qcow2,node-name=root"));
}

TEST(QemuCommandTest, VolumesAreDirectoryFdsReadonlyOnesSaySoAndOwnersPassThroughAsRoot) {
  MachineConfig config = bareConfig();
  config.shares.push_back({"/home/data", "vol0", false, -1});
  config.shares.push_back({"/home/ro", "vol1", true, -1});
  config.shares.push_back({"/home/mapped", "vol2", true, 45});
  auto command = buildQemuCommand("qemu", config, /*as_root=*/false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuFirstShareFd),
            (QemuFd{kQemuFirstShareFd, Source::kDirectory, -1, "/home/data", 0, "volume /home/data"}));
  EXPECT_EQ(*entryAt(command, kQemuFirstShareFd + 2),
            (QemuFd{kQemuFirstShareFd + 2, Source::kInherited, 45, {}, 0, "volume /home/mapped"}));
  EXPECT_TRUE(hasPair(command.argv, "-fsdev", "local,id=fs0,path=/proc/self/fd/15,security_model=none"));
  EXPECT_TRUE(hasPair(command.argv, "-fsdev", "local,id=fs1,path=/proc/self/fd/16,security_model=none,readonly=on"));
  EXPECT_TRUE(hasPair(command.argv, "-fsdev", "local,id=fs2,path=/proc/self/fd/17,security_model=none,readonly=on"));
  EXPECT_TRUE(hasPair(command.argv, "-device", "virtio-9p-device,fsdev=fs1,mount_tag=vol1"));

  auto as_root = buildQemuCommand("qemu", config, /*as_root=*/true);
  EXPECT_TRUE(hasPair(as_root.argv, "-fsdev", "local,id=fs0,path=/proc/self/fd/15,security_model=passthrough"));
  EXPECT_EQ(as_root.fds, command.fds);
}

TEST(QemuCommandTest, NicIsTheInheritedStreamSocket) {
  MachineConfig config = bareConfig();
  config.net_fd = 42;
  config.net_mtu = 65520;
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuNetFd), (QemuFd{kQemuNetFd, Source::kInherited, 42, {}, 0, "network"}));
  EXPECT_TRUE(hasPair(command.argv, "-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=5"));
  EXPECT_TRUE(hasPair(command.argv, "-device", "virtio-net-device,netdev=net0,host_mtu=65520,mac=52:54:00:12:34:56"));
}

TEST(QemuCommandTest, VsockConnectsToTheBackEndAndSharesGuestRam) {
  MachineConfig config = bareConfig();
  config.vhost_vsock_socket = "/run/vm/vhost-vsock.sock";
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuVsockFd),
            (QemuFd{kQemuVsockFd, Source::kUnixConnect, -1, "/run/vm/vhost-vsock.sock", 0, "vsock"}));
  EXPECT_TRUE(hasPair(command.argv, "-object", "memory-backend-memfd,id=mem,size=256M,share=on"));
  EXPECT_TRUE(hasPair(command.argv, "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off,memory-backend=mem"));
  EXPECT_TRUE(hasPair(command.argv, "-chardev", "socket,id=vsock,fd=7"));
  EXPECT_TRUE(hasPair(command.argv, "-device", "vhost-user-vsock-device,chardev=vsock"));
}

TEST(QemuCommandTest, ConsoleIsASocketOrALogFileInFdSetOne) {
  MachineConfig config = bareConfig();
  config.console_fd = 40;
  config.console_log = "/vm/console.log";  // the socket wins
  auto socket = buildQemuCommand("qemu", config, false);
  expectConsistent(socket);
  EXPECT_EQ(*entryAt(socket, kQemuConsoleFd), (QemuFd{kQemuConsoleFd, Source::kInherited, 40, {}, 0, "console"}));
  EXPECT_TRUE(hasPair(socket.argv, "-chardev", "socket,id=con,fd=8"));
  EXPECT_TRUE(hasPair(socket.argv, "-serial", "chardev:con"));

  config.console_fd = -1;
  auto file = buildQemuCommand("qemu", config, false);
  expectConsistent(file);
  EXPECT_EQ(*entryAt(file, kQemuConsoleFd),
            (QemuFd{kQemuConsoleFd, Source::kLogFile, -1, "/vm/console.log", 1, "console log"}));
  EXPECT_TRUE(hasPair(file.argv, "-add-fd", "fd=8,set=1"));
  EXPECT_TRUE(hasPair(file.argv, "-serial", "file:/dev/fdset/1"));
}

TEST(QemuCommandTest, ControlPortQmpAndStderr) {
  MachineConfig config = bareConfig();
  config.control_fd = 41;
  config.qmp_socket = "/run/vm/qmp.sock";
  config.stderr_fd = 44;
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuControlFd), (QemuFd{kQemuControlFd, Source::kInherited, 41, {}, 0, "control channel"}));
  EXPECT_EQ(*entryAt(command, kQemuQmpFd), (QemuFd{kQemuQmpFd, Source::kUnixListen, -1, "/run/vm/qmp.sock", 0, "QMP"}));
  EXPECT_EQ(*entryAt(command, 2), (QemuFd{2, Source::kInherited, 44, {}, 0, "stderr"}));
  EXPECT_TRUE(hasPair(command.argv, "-chardev", "socket,id=ctl,fd=3"));
  EXPECT_TRUE(hasPair(command.argv, "-device", "virtserialport,chardev=ctl,name=microvm.ctl"));
  EXPECT_TRUE(hasPair(command.argv, "-chardev", "socket,id=qmp,fd=6,server=on,wait=off"));
  EXPECT_TRUE(hasPair(command.argv, "-mon", "chardev=qmp,mode=control"));
}

TEST(QemuCommandTest, TheAgentPortIsASecondVirtioSerialPortOnItsOwnFdAndNeedsNoVsockDevice) {
  MachineConfig config = bareConfig();
  config.control_fd = 41;
  config.agent_fd = 42;
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuAgentFd), (QemuFd{kQemuAgentFd, Source::kInherited, 42, {}, 0, "agent channel"}));
  EXPECT_TRUE(hasPair(command.argv, "-chardev", "socket,id=agent,fd=" + std::to_string(kQemuAgentFd)));
  EXPECT_TRUE(hasPair(command.argv, "-device", "virtserialport,chardev=agent,name=microvm.agent"));
  // One virtio-serial bus for both ports (port 0 is the console's).
  EXPECT_EQ(std::count(command.argv.begin(), command.argv.end(), "virtio-serial-device,max_ports=3"), 1);
  for (const auto& arg : command.argv) EXPECT_EQ(arg.find("vhost-user-vsock"), std::string::npos) << arg;
  for (const auto& arg : command.argv) EXPECT_EQ(arg.find("memory-backend-memfd"), std::string::npos) << arg;
}

TEST(QemuCommandTest, SnapshotRestoreComesInOnItsOwnFd) {
  MachineConfig config = bareConfig();
  config.incoming_fd = 43;
  auto command = buildQemuCommand("qemu", config, false);
  expectConsistent(command);
  EXPECT_EQ(*entryAt(command, kQemuIncomingFd), (QemuFd{kQemuIncomingFd, Source::kInherited, 43, {}, 0, "saved state"}));
  EXPECT_TRUE(hasPair(command.argv, "-incoming", "fd:4"));
  // The saved state holds the kernel: it is neither loaded nor opened.
  for (const char* absent : {"-kernel", "-initrd", "-append"}) {
    EXPECT_EQ(std::find(command.argv.begin(), command.argv.end(), absent), command.argv.end()) << absent;
  }
  EXPECT_EQ(entryAt(command, kQemuKernelFd), nullptr);
}

TEST(QemuCommandTest, EveryMachineHasAVirtioRngFedByQemuItself) {
  for (const auto& config : {bareConfig(), fullConfig()}) {
    auto command = buildQemuCommand("qemu", config, false);
    // rng-builtin: no file for QEMU to open (it runs sandboxed).
    EXPECT_TRUE(hasPair(command.argv, "-object", "rng-builtin,id=rng0"));
    EXPECT_TRUE(hasPair(command.argv, "-device", "virtio-rng-device,rng=rng0"));
  }
}

TEST(QemuCommandTest, AccelerationAndTheTscHint) {
  MachineConfig tcg = bareConfig();
  tcg.tsc_khz = 2445426;
  auto command = buildQemuCommand("qemu", tcg, false);
  EXPECT_TRUE(hasPair(command.argv, "-accel", "tcg,thread=multi"));
  EXPECT_TRUE(hasPair(command.argv, "-cpu", "max"));
  EXPECT_TRUE(hasPair(command.argv, "-append",
                      "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2445426 tsc=reliable"));
  EXPECT_TRUE(hasPair(command.argv, "-m", "256"));
  EXPECT_TRUE(hasPair(command.argv, "-smp", "2"));

  MachineConfig unknown_tsc = bareConfig();
  EXPECT_TRUE(hasPair(buildQemuCommand("qemu", unknown_tsc, false).argv, "-append", "console=ttyS0 reboot=t panic=-1 quiet"));

  MachineConfig kvm = tcg;
  kvm.accel = Acceleration::kKvm;
  auto kvm_command = buildQemuCommand("qemu", kvm, false);
  EXPECT_TRUE(hasPair(kvm_command.argv, "-accel", "kvm"));
  EXPECT_TRUE(hasPair(kvm_command.argv, "-cpu", "host"));
  EXPECT_TRUE(hasPair(kvm_command.argv, "-append", "console=ttyS0 reboot=t panic=-1 quiet"));
  EXPECT_EQ(kvm_command.fds, command.fds);
}

}  // namespace
}  // namespace microvm
