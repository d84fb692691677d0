#include "runner/machine_config.h"

#include <string>

#include "base/paths.h"
#include "net/network_config.h"
#include "runner/guest_network.h"
#include "runner/vmm_user.h"

namespace microvm {

bool hasVsockDevice(const VmSpec& spec) { return spec.vsock && !spec.vsock_ports.empty(); }

MachineConfig machineConfigFor(const VmSpec& spec, const std::filesystem::path& vm_dir, const MachineFds& fds) {
  MachineConfig config;
  config.name = vm_dir.string();
  config.accel = spec.accel == "kvm" ? Acceleration::kKvm : Acceleration::kTcg;
  config.tsc_khz = spec.tsc_khz;
  config.cpus = spec.cpus;
  config.memory_mib = spec.memory_mib;
  config.kernel = spec.kernel;
  config.initramfs = spec.initramfs;
  config.root_disk = spec.root_disk;
  config.base_disk = spec.base_disk;
  config.disk_layers.assign(spec.disk_layers.begin(), spec.disk_layers.end());
  config.ephemeral_disk = spec.remove_on_exit;
  config.console_fd = fds.console;
  config.qmp_socket = VmSockets(spec.runtime_dir).qmp();
  config.control_fd = fds.control;
  config.agent_fd = fds.agent;
  config.memory_fd = fds.memory;
  config.stderr_fd = fds.diagnostics;
  if (hasVsockDevice(spec)) config.vhost_vsock_socket = VmSockets(spec.runtime_dir).vhostVsock();
  if (fds.net >= 0) {
    config.net_fd = fds.net;
    config.net_mtu = net::kGuestMtu;
  }
  // QEMU exports each share under the tag the plan gave it, which the
  // workload spec tells the guest to mount.
  for (size_t i = 0; i < spec.shares.size(); ++i) {
    const auto& share = spec.shares[i];
    int fd = i < fds.shares.size() ? fds.shares[i] : -1;
    config.shares.push_back({share.host, share.tag, share.readonly, fd});
  }
  config.incoming_fd = fds.incoming;
  return config;
}

vsock::VsockConfig vsockConfigFor(const VmSpec& spec) {
  vsock::VsockConfig config;
  config.vhost_socket = VmSockets(spec.runtime_dir).vhostVsock();
  config.base = VmSockets(spec.runtime_dir).vsock();
  config.serve_base = false;  // the agent gateway reads CONNECT lines
  for (const auto& port : spec.vsock_ports) config.ports.push_back({port.port, port.path, port.listen});
  return config;
}

SpawnOptions::Credentials vmmCredentials(const MachineConfig& config, uid_t uid, gid_t gid,
                                         std::optional<gid_t> kvm_group) {
  SpawnOptions::Credentials credentials;
  credentials.uid = uid;
  credentials.gid = gid;
  if (config.accel == Acceleration::kKvm && kvm_group) credentials.groups.push_back(*kvm_group);
  bool writable = false;
  for (const auto& share : config.shares) writable = writable || !share.readonly;
  credentials.capabilities = vmmCapabilities(!config.shares.empty(), writable);
  return credentials;
}

agent::WorkloadSpec workloadSpecFor(const VmSpec& spec) {
  agent::WorkloadSpec workload;
  workload.argv = spec.argv;
  workload.env = spec.env;
  workload.workdir = spec.workdir;
  workload.user = spec.user;
  workload.hostname = spec.hostname;
  workload.open_stdin = spec.open_stdin;
  workload.tty = spec.tty;
  workload.tty_rows = spec.tty_rows;
  workload.tty_cols = spec.tty_cols;
  for (const auto& share : spec.shares) workload.mounts.push_back({share.tag, share.guest, "9p", "", share.readonly});
  for (const auto& [path, options] : spec.tmpfs) workload.mounts.push_back({"tmpfs", path, "tmpfs", options, false});
  workload.sysctls = spec.sysctls;
  workload.ulimits = spec.ulimits;
  workload.capabilities = spec.capabilities;
  workload.no_new_privs = spec.no_new_privs;
  workload.seccomp_default = spec.seccomp_default;
  workload.seccomp_rules = spec.seccomp_rules;
  for (const auto& file : spec.injected) {
    workload.injected.push_back({file.path, file.directory, file.content, file.mode, file.uid, file.gid});
  }
  describeGuestNetwork(spec, workload);
  return workload;
}

}  // namespace microvm
