#include "runner/machine_config.h"

#include <gtest/gtest.h>

#include "net/network_config.h"
#include "runner/vmm_user.h"

namespace microvm {
namespace {

VmSpec specFor() {
  VmSpec spec;
  spec.qemu = "/usr/bin/qemu-system-x86_64";
  spec.accel = "tcg";
  spec.tsc_khz = 2445426;
  spec.cpus = 2;
  spec.memory_mib = 384;
  spec.kernel = "/share/vmlinux";
  spec.initramfs = "/share/initramfs.cpio";
  spec.root_disk = "/data/vms/ab12/disk.qcow2";
  spec.base_disk = "/data/images/base.ext4";
  spec.runtime_dir = "/run/microvm/ab12";
  spec.shares.push_back({"/home/data", "/data", false, std::nullopt, std::nullopt, "vol0"});
  spec.shares.push_back({"/home/ro", "/ro", true, 1000, std::nullopt, "vol1"});
  spec.vsock_ports.push_back({5000, "/tmp/agent.sock", false});
  spec.vsock_ports.push_back({6000, "/tmp/listen.sock", true});
  return spec;
}

TEST(MachineConfigTest, TheSpecsMachineWithTheOpenedFds) {
  MachineFds fds;
  fds.console = 20;
  fds.control = 21;
  fds.diagnostics = 22;
  fds.net = 23;
  fds.shares = {-1, 24};
  auto config = machineConfigFor(specFor(), "/data/vms/ab12", fds);
  EXPECT_EQ(config.name, "/data/vms/ab12");
  EXPECT_EQ(config.accel, Acceleration::kTcg);
  EXPECT_EQ(config.tsc_khz, 2445426u);
  EXPECT_EQ(config.cpus, 2);
  EXPECT_EQ(config.memory_mib, 384);
  EXPECT_EQ(config.kernel, "/share/vmlinux");
  EXPECT_EQ(config.initramfs, "/share/initramfs.cpio");
  EXPECT_EQ(config.root_disk, "/data/vms/ab12/disk.qcow2");
  EXPECT_EQ(config.base_disk, "/data/images/base.ext4");
  EXPECT_FALSE(config.ephemeral_disk);
  EXPECT_EQ(config.console_fd, 20);
  EXPECT_TRUE(config.console_log.empty());  // the runner bounds console.log itself
  EXPECT_EQ(config.control_fd, 21);
  EXPECT_EQ(config.stderr_fd, 22);
  EXPECT_EQ(config.net_fd, 23);
  EXPECT_EQ(config.net_mtu, net::kGuestMtu);
  EXPECT_EQ(config.incoming_fd, -1);
  EXPECT_EQ(config.qmp_socket, "/run/microvm/ab12/qmp.sock");
  EXPECT_EQ(config.vhost_vsock_socket, "/run/microvm/ab12/vhost-vsock.sock");
  ASSERT_EQ(config.shares.size(), 2u);
  EXPECT_EQ(config.shares[0].host, "/home/data");
  EXPECT_EQ(config.shares[0].tag, "vol0");
  EXPECT_FALSE(config.shares[0].readonly);
  EXPECT_EQ(config.shares[0].fd, -1);
  EXPECT_EQ(config.shares[1].tag, "vol1");
  EXPECT_TRUE(config.shares[1].readonly);
  EXPECT_EQ(config.shares[1].fd, 24);
  EXPECT_FALSE(config.credentials.has_value());
  EXPECT_EQ(config.while_waiting.fd, -1);
}

TEST(MachineConfigTest, NoNetworkNoVsockKvmRemovedOnExitAndRestoring) {
  VmSpec spec = specFor();
  spec.accel = "kvm";
  spec.vsock = false;
  spec.network = "none";
  spec.remove_on_exit = true;
  MachineFds fds;
  fds.incoming = 30;  // shares: absent entries mean "no fd"
  auto config = machineConfigFor(spec, "/data/vms/ab12", fds);
  EXPECT_EQ(config.accel, Acceleration::kKvm);
  EXPECT_EQ(config.net_fd, -1);
  EXPECT_EQ(config.net_mtu, MachineConfig{}.net_mtu);
  EXPECT_TRUE(config.vhost_vsock_socket.empty());
  EXPECT_TRUE(config.ephemeral_disk);
  EXPECT_EQ(config.incoming_fd, 30);
  ASSERT_EQ(config.shares.size(), 2u);
  EXPECT_EQ(config.shares[1].fd, -1);
}

TEST(MachineConfigTest, OnlyUserVsockPortsBringTheVsockDeviceTheAgentAlwaysHasItsPort) {
  VmSpec spec = specFor();
  spec.vsock_ports.clear();
  MachineFds fds;
  fds.agent = 31;
  auto config = machineConfigFor(spec, "/data/vms/ab12", fds);
  EXPECT_FALSE(hasVsockDevice(spec));
  EXPECT_TRUE(config.vhost_vsock_socket.empty());  // so the VM can be saved
  EXPECT_EQ(config.agent_fd, 31);
  EXPECT_TRUE(hasVsockDevice(specFor()));
  spec = specFor();
  spec.vsock = false;  // --no-vsock: no agent and no device, whatever the ports
  EXPECT_FALSE(hasVsockDevice(spec));
}

TEST(MachineConfigTest, VsockConfigHasTheSocketsAndPortsInOrder) {
  auto config = vsockConfigFor(specFor());
  EXPECT_EQ(config.vhost_socket, "/run/microvm/ab12/vhost-vsock.sock");
  EXPECT_EQ(config.base, "/run/microvm/ab12/vsock.sock");
  EXPECT_FALSE(config.serve_base);  // the agent gateway reads the CONNECT lines
  ASSERT_EQ(config.ports.size(), 2u);
  EXPECT_EQ(config.ports[0].port, 5000u);
  EXPECT_EQ(config.ports[0].path, "/tmp/agent.sock");
  EXPECT_FALSE(config.ports[0].listen);
  EXPECT_EQ(config.ports[1].port, 6000u);
  EXPECT_TRUE(config.ports[1].listen);
  EXPECT_FALSE(config.log);
  EXPECT_FALSE(config.connect_host);
}

TEST(MachineConfigTest, VmmCredentialsKeepTheKvmGroupOnlyUnderKvmAndWhatTheSharesNeed) {
  MachineConfig config = machineConfigFor(specFor(), "/data/vms/ab12", {});
  auto tcg = vmmCredentials(config, 900, 901, gid_t{108});
  EXPECT_EQ(tcg.uid, 900u);
  EXPECT_EQ(tcg.gid, 901u);
  EXPECT_TRUE(tcg.groups.empty());
  EXPECT_EQ(tcg.capabilities, vmmCapabilities(true, true));

  config.accel = Acceleration::kKvm;
  EXPECT_EQ(vmmCredentials(config, 900, 901, gid_t{108}).groups, std::vector<gid_t>{108});
  EXPECT_TRUE(vmmCredentials(config, 900, 901, std::nullopt).groups.empty());

  config.shares[0].readonly = true;
  EXPECT_EQ(vmmCredentials(config, 900, 901, std::nullopt).capabilities, vmmCapabilities(true, false));
  config.shares.clear();
  EXPECT_EQ(vmmCredentials(config, 900, 901, std::nullopt).capabilities, vmmCapabilities(false, false));
}

TEST(MachineConfigTest, TheWorkloadSpecCarriesTheCommandSharesByTagAndConfinement) {
  VmSpec spec = specFor();
  spec.argv = {"/bin/sh", "-c", "echo hi"};
  spec.env = {"A=1"};
  spec.workdir = "/srv";
  spec.user = "1000:1000";
  spec.hostname = "box";
  spec.open_stdin = true;
  spec.tmpfs = {{"/scratch", "size=64m"}};
  spec.sysctls = {"net.ipv4.ip_forward=0"};
  spec.capabilities = 0x5;
  spec.no_new_privs = true;
  spec.seccomp_default = "errno:1";
  spec.seccomp_rules = {"allow:read"};
  spec.network = "none";
  agent::WorkloadSpec workload = workloadSpecFor(spec);
  EXPECT_EQ(workload.argv, spec.argv);
  EXPECT_EQ(workload.env, spec.env);
  EXPECT_EQ(workload.workdir, "/srv");
  EXPECT_EQ(workload.user, "1000:1000");
  EXPECT_EQ(workload.hostname, "box");
  EXPECT_TRUE(workload.open_stdin);
  // Shares by the tags the plan gave them (QEMU exports the same ones), then tmpfs.
  ASSERT_EQ(workload.mounts.size(), 3u);
  EXPECT_EQ(workload.mounts[0].source, "vol0");
  EXPECT_EQ(workload.mounts[0].target, "/data");
  EXPECT_EQ(workload.mounts[0].fstype, "9p");
  EXPECT_FALSE(workload.mounts[0].readonly);
  EXPECT_EQ(workload.mounts[1].source, "vol1");
  EXPECT_TRUE(workload.mounts[1].readonly);
  EXPECT_EQ(workload.mounts[2].fstype, "tmpfs");
  EXPECT_EQ(workload.mounts[2].target, "/scratch");
  EXPECT_EQ(workload.mounts[2].options, "size=64m");
  MachineFds fds;
  auto machine = machineConfigFor(spec, "/data/vms/ab12", fds);
  ASSERT_EQ(machine.shares.size(), 2u);
  EXPECT_EQ(machine.shares[0].tag, workload.mounts[0].source);
  EXPECT_EQ(machine.shares[1].tag, workload.mounts[1].source);
  EXPECT_EQ(workload.sysctls, spec.sysctls);
  EXPECT_EQ(workload.capabilities, 0x5u);
  EXPECT_TRUE(workload.no_new_privs);
  EXPECT_EQ(workload.seccomp_default, "errno:1");
  EXPECT_EQ(workload.seccomp_rules, spec.seccomp_rules);
  EXPECT_TRUE(workload.net_address4.empty());  // --network none: lo only
}

}  // namespace
}  // namespace microvm
