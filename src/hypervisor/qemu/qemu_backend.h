// QemuBackend: runs the VM with `qemu-system-x86_64 -M microvm`.
//
// The machine: PVH vmlinux + initramfs via -kernel/-initrd, a virtio-blk root
// disk (qcow2 overlay), the kernel console on an isa-serial port written to a
// file, the control channel as a virtio-serial port over an inherited socket,
// QMP on a unix socket, and optionally a vhost-user-vsock device (guest RAM
// in a shared memfd so that the back-end can map it). The guest powers off by resetting (reboot=t) and
// -no-reboot turns the reset into a QEMU exit.
//
// QEMU opens no host path by name: launch() opens every file and socket and
// QEMU inherits them at fixed fd numbers (disks and the console through
// -add-fd fd sets and /dev/fdset/N names, the kernel, initramfs and 9p
// shares through /proc/self/fd/N, the QMP listener and the vsock connection
// as chardev fds). So a QEMU running as an unprivileged user needs no access
// to the VM's 0700 directories, and the qcow2 overlay's backing file is an
// explicit -blockdev node: QEMU never follows the path written in it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "hypervisor/backend.h"

namespace microvm {

// The fd numbers what QEMU inherits has inside QEMU.
inline constexpr int kQemuControlFd = 3;
inline constexpr int kQemuIncomingFd = 4;
inline constexpr int kQemuNetFd = 5;
inline constexpr int kQemuQmpFd = 6;         // a listening socket at qmp_socket
inline constexpr int kQemuVsockFd = 7;       // connected to vhost_vsock_socket
inline constexpr int kQemuConsoleFd = 8;     // fd set 1 (a file), or a socket (console_fd)
inline constexpr int kQemuDiskFd = 9;        // fd set 2
inline constexpr int kQemuBaseDiskFd = 10;   // fd set 3
inline constexpr int kQemuKernelFd = 11;
inline constexpr int kQemuInitramfsFd = 12;
inline constexpr int kQemuFirstShareFd = 13;  // share i at kQemuFirstShareFd + i
// The guest NIC's MAC address (QEMU's default; one NIC per VM, alone on its link).
inline constexpr char kGuestMac[] = "52:54:00:12:34:56";

class QemuBackend : public Backend {
 public:
  explicit QemuBackend(std::string binary) : binary_(std::move(binary)) {}

  std::string name() const override { return "qemu"; }
  Result<std::unique_ptr<Vmm>> launch(const MachineConfig& config) override;

  // The full argv for `config`; pure, for tests and `--dry-run` style output.
  std::vector<std::string> commandLine(const MachineConfig& config) const;

 private:
  std::string binary_;
};

// The guest kernel command line for `config` (console, reset-to-poweroff,
// the TSC hint under TCG).
std::string kernelCommandLine(const MachineConfig& config);

}  // namespace microvm
