// QemuBackend: runs the VM with `qemu-system-x86_64 -M microvm`.
//
// The machine: PVH vmlinux + initramfs via -kernel/-initrd, a virtio-blk root
// disk (qcow2 overlay), the kernel console on an isa-serial port written to a
// file, the control channel as a virtio-serial port over an inherited socket,
// QMP on a unix socket, and optionally a vhost-user-vsock device (guest RAM
// in a shared memfd so that the back-end can map it). The guest powers off by resetting (reboot=t) and
// -no-reboot turns the reset into a QEMU exit.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "hypervisor/backend.h"

namespace microvm {

// The fd numbers the control socket, a saved state and the network stream
// have inside QEMU.
inline constexpr int kQemuControlFd = 3;
inline constexpr int kQemuIncomingFd = 4;
inline constexpr int kQemuNetFd = 5;
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
