// QemuBackend: runs the VM with `qemu-system-x86_64 -M microvm`.
//
// The machine: PVH vmlinux + initramfs via -kernel/-initrd, a virtio-blk root
// disk (qcow2 overlay), the kernel console on an isa-serial port written to a
// file, the control channel as a virtio-serial port over an inherited socket,
// QMP on a unix socket, and optionally a vhost-user-vsock device (guest RAM
// in a shared memfd so that the back-end can map it). The guest powers off by resetting (reboot=t) and
// -no-reboot turns the reset into a QEMU exit.
//
// QEMU opens no host path by name: buildQemuCommand (qemu_command.h) makes
// the argv and the table of fds it names together, and launch() opens every
// file and socket in that table and hands them over at those fd numbers. So
// a QEMU running as an unprivileged user needs no access to the VM's 0700
// directories, and the qcow2 overlay's backing file is an explicit -blockdev
// node: QEMU never follows the path written in it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "hypervisor/backend.h"
#include "hypervisor/qemu/qemu_command.h"

namespace microvm {

class QemuBackend : public Backend {
 public:
  explicit QemuBackend(std::string binary) : binary_(std::move(binary)) {}

  std::string name() const override { return "qemu"; }
  Result<std::unique_ptr<Vmm>> launch(const MachineConfig& config) override;

  // The full argv for `config` (buildQemuCommand's, as this process's
  // user); for tests and `--dry-run` style output.
  std::vector<std::string> commandLine(const MachineConfig& config) const;

 private:
  std::string binary_;
};

}  // namespace microvm
