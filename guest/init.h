// microvm-init: the guest's PID 1. It mounts the VM's root disk, talks to the
// host over the virtio-serial control port (agent/protocol.h), runs one
// workload with Docker's process semantics, forwards its output and exit code,
// and powers the VM off. It never returns and never exits.
//
// Usage (guest/init_main.cc):
//   int main() { microvm::guest::runInit(); }
//
// Its parts, in the order of a boot:
//   guest/boot.h          initramfs mounts, root disk, injection, root switch,
//                         volumes, sysctls
//   guest/network.h       lo, eth0, /etc/hosts and /etc/resolv.conf
//   guest/control_port.h  the host end of the protocol
//   guest/confinement.h   what confines the workload and exec'd commands
//   guest/workload.h      starting the workload
//   guest/agent_process.h the agent (guest/agent.h), forked before the workload
//   guest/supervisor.h    the event loop until the workload exits
#pragma once

namespace microvm::guest {

// Boots the guest and runs the workload the host sends. As PID 1 it ends by
// resetting the VM (the host runs QEMU with -no-reboot, so a reset is a power
// off). Run as any other PID it refuses and exits, so that a stray invocation
// on a developer's machine cannot remount /dev or reboot the host.
[[noreturn]] void runInit();

}  // namespace microvm::guest
