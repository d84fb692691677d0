// What the runner asks of the hypervisor and tells the guest for a VM,
// derived from its spec (the plan, core/vm_plan.h, as spec.json stores it):
// the MachineConfig QEMU is launched with, the vsock device's configuration,
// QEMU's credentials when the runner is root, and the workload spec init
// receives. Pure functions: the runner opens the sockets, files and mounts
// first and passes their fds in, so that these can be tested without a VM.
//
//   MachineFds fds;
//   fds.console = console_qemu_end.get();
//   fds.control = guest_end.get();
//   MachineConfig config = machineConfigFor(spec, vm_dir, fds);
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <vector>

#include "agent/protocol.h"
#include "base/process.h"
#include "hypervisor/backend.h"
#include "state/vm_record.h"
#include "vsock/vsock_device.h"

namespace microvm {

// The fds the runner opened for QEMU; -1: none.
struct MachineFds {
  int console = -1;     // QEMU's end of the serial console's socket
  int control = -1;     // QEMU's end of the guest's control port socket
  int agent = -1;       // QEMU's end of the microvm.agent port's socket; -1: no agent
  int memory = -1;      // guest RAM, a memfd the runner keeps too; -1: QEMU's own
  int diagnostics = -1; // where QEMU's own stderr goes (runner.log)
  int net = -1;         // QEMU's end of the network's frame stream; -1: no NIC
  int incoming = -1;    // the saved machine state to restore; -1: boot
  // Share i's directory as an open fd (an idmapped mount for uid=/gid=), or
  // -1 (or absent): QEMU is handed the host path opened by the backend.
  std::vector<int> shares;
};

// Whether `spec`'s VM gets a vhost-user-vsock device: only for user
// --vsock ports. The agent travels over the microvm.agent virtio-serial port
// (runner/agent_gateway.h), which, unlike the vsock device, QEMU can save.
bool hasVsockDevice(const VmSpec& spec);

// The machine for `spec` in `vm_dir`. The caller adds what needs live
// objects: while_waiting (the vsock device) and credentials (vmmCredentials).
MachineConfig machineConfigFor(const VmSpec& spec, const std::filesystem::path& vm_dir, const MachineFds& fds);

// The vsock device for `spec` (only meaningful when hasVsockDevice); the caller
// adds the log and connect_host callbacks.
vsock::VsockConfig vsockConfigFor(const VmSpec& spec);

// What init receives over the control port: the command, its environment
// and user, the shares by their tags, tmpfs mounts, the confinement and the
// guest's half of the network (describeGuestNetwork).
agent::WorkloadSpec workloadSpecFor(const VmSpec& spec);

// QEMU's credentials when the runner is root: the VMM user `uid`/`gid`, the
// group `kvm_group` (the one /dev/kvm grants access to, when others have
// none) under KVM, and only the capabilities its shares need.
SpawnOptions::Credentials vmmCredentials(const MachineConfig& config, uid_t uid, gid_t gid,
                                         std::optional<gid_t> kvm_group);

}  // namespace microvm
