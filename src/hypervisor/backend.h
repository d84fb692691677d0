// The VMM seam: everything microvm needs from a hypervisor, behind one
// interface, so that QEMU (today) and Firecracker or Cloud Hypervisor (where
// installed) are interchangeable. The runner owns the returned process.
//
//   QemuBackend backend("/usr/bin/qemu-system-x86_64");
//   MachineConfig config = ...;
//   auto vmm = backend.launch(config);     // Result<std::unique_ptr<Vmm>>
//   MICROVM_TRY((*vmm)->pause());
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/process.h"
#include "microvm/result.h"

namespace microvm {

enum class Acceleration { kKvm, kTcg };

const char* toString(Acceleration accel);

struct MachineConfig {
  // Shows in the VMM's command line (ps): the runner gives the VM's
  // directory, so that every process of a VM names it. Empty: none.
  std::string name;
  Acceleration accel = Acceleration::kTcg;
  unsigned tsc_khz = 0;  // host TSC frequency; required under TCG (see PLATFORM_NOTES)
  int cpus = 1;
  int memory_mib = 512;
  std::filesystem::path kernel;
  std::filesystem::path initramfs;
  std::filesystem::path root_disk;    // empty: no disk
  std::filesystem::path base_disk;    // root_disk's read-only backing file (raw); empty: none
  // Read-only qcow2 layers between base_disk and root_disk, lowest first.
  std::vector<std::filesystem::path> disk_layers;
  bool ephemeral_disk = false;        // root_disk is deleted with the VM: the guest's flushes need not reach the host's storage
  std::filesystem::path console_log;  // kernel console (ttyS0); empty: discarded
  // The kernel console as a stream socket whose other end the caller reads
  // (and bounds what it keeps); wins over console_log. -1: none.
  int console_fd = -1;
  std::filesystem::path qmp_socket;   // empty: no QMP
  int control_fd = -1;                // the guest's microvm.ctl port; -1: none
  int agent_fd = -1;                  // the guest's microvm.agent port (the agent's streams); -1: none
  // Guest RAM as this memfd (shared with the caller, who saves and restores
  // it itself: QEMU's migration stream then holds only the device state);
  // -1: QEMU allocates RAM.
  int memory_fd = -1;
  // How memory_fd is mapped. Shared: it is the caller's own memfd, written
  // by the guest. Private (copy-on-write): it is a boot template's sealed
  // memory, which many VMs map at once and none may change; this VM's
  // writes stay in its own pages, which the migration stream then carries.
  bool memory_private = false;
  // The saved state behind incoming_fd carries guest RAM (it was saved from
  // a VM whose RAM was private); otherwise the RAM is already in memory_fd.
  bool incoming_has_ram = false;
  int incoming_fd = -1;               // restore the machine from this saved state; -1: boot
  int net_fd = -1;                    // a virtio-net NIC whose frames go over this stream socket; -1: no NIC
  int net_mtu = 1500;                 // the MTU the NIC advertises to the guest
  struct Share {
    std::filesystem::path host;
    std::string tag;                  // the guest mounts it by this tag
    bool readonly = false;            // enforced by the VMM on the host
    // The directory as an open fd (a detached, idmapped mount, say) that the
    // VMM uses instead of opening `host`; -1: the backend opens `host`.
    int fd = -1;
  };
  std::vector<Share> shares;
  int stderr_fd = -1;                 // where the VMM's own diagnostics go
  // A vhost-user-vsock back-end listening here (guest RAM then becomes a
  // shared memfd that the back-end maps); empty: no vsock device.
  std::filesystem::path vhost_vsock_socket;
  // The VMM waits on its vhost-user back-ends while it starts, stops or
  // migrates their devices, so whoever waits on the VMM (QMP) must keep
  // serving them: `fd` is polled alongside, and `service` runs when it is
  // readable. Unset: nothing to serve.
  struct WaitService {
    int fd = -1;
    std::function<void()> service;
  };
  WaitService while_waiting;
  // The VMM's own user. Unset: the caller's. Set (the caller is root): the
  // VMM starts under these credentials and opens no path of its own that
  // they could not open; the backend opens disks, logs, kernel and sockets
  // and hands them over as file descriptors.
  std::optional<SpawnOptions::Credentials> credentials;
};

// A running VMM. Optional operations refuse with kUnsupported unless the
// backend offers them; they are never silently ignored.
class Vmm {
 public:
  virtual ~Vmm() = default;
  // The VMM process; dropping the Vmm kills it.
  virtual Process& process() = 0;
  // Freezes / thaws the guest's vCPUs; memory and devices stay as they are.
  virtual Result<void> pause();
  virtual Result<void> resume();
  // Pauses the guest and writes its memory and device state to `fd`; the
  // guest stays paused, and its disks are flushed and safe to copy.
  virtual Result<void> saveState(int fd);
  // For a machine launched with incoming_fd: waits until the state is
  // loaded, runs `loaded` (if set) while the guest is still stopped, then
  // lets the guest run on from where it was saved.
  virtual Result<void> finishRestore(const std::function<Result<void>()>& loaded = {});
  // Opens the VMM's control channel now rather than when first needed: a
  // caller that is about to lose access to the channel's path (the runner
  // giving up root) calls it first.
  virtual Result<void> connectControl();
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Starts the VMM; the machine boots at once.
  virtual Result<std::unique_ptr<Vmm>> launch(const MachineConfig& config) = 0;
};

}  // namespace microvm
