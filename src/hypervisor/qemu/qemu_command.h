// The QEMU command for a MachineConfig: its argv and the fd table that goes
// with it, made together by one pure function, so that every fd number or
// fd set the argv names is exactly one entry of the table.
//
// QEMU opens no host path by name: it inherits every file and socket at the
// fd number given here (disks and the console file through -add-fd fd sets
// and /dev/fdset/N names; the kernel, initramfs and 9p shares through
// /proc/self/fd/N; the QMP listener, the vsock connection, the console,
// control and network sockets as chardev or netdev fds). Each entry says
// where its fd comes from: one the caller already holds (MachineConfig's
// *_fd fields), or a path that QemuBackend::launch opens just before the
// spawn.
//
//   QemuCommand command = buildQemuCommand("qemu-system-x86_64", config, ::geteuid() == 0);
//   // command.argv: the full argv; command.fds: {target 11, kReadOnlyFile, "/k/vmlinux"}, ...
#pragma once

#include <filesystem>
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
inline constexpr int kQemuAgentFd = 13;       // the microvm.agent port
inline constexpr int kQemuMemoryFd = 14;      // guest RAM (a memfd)
inline constexpr int kQemuFirstShareFd = 15;  // share i at kQemuFirstShareFd + i
// Disk layer i (MachineConfig::disk_layers) follows the shares: at
// kQemuFirstShareFd + shares + i, in fd set kFirstDiskLayerFdSet + i.
inline constexpr int kFirstDiskLayerFdSet = 4;
// The guest NIC's MAC address (QEMU's default; one NIC per VM, alone on its link).
inline constexpr char kGuestMac[] = "52:54:00:12:34:56";

// One fd QEMU inherits: at `target` inside QEMU, from `source`.
struct QemuFd {
  enum class Source {
    kInherited,     // `fd`, which the caller holds
    kReadOnlyFile,  // `path` for reading (kernel, initramfs)
    kLogFile,       // `path` created afresh for writing (the console log)
    kDisk,          // `path` for reading and writing
    kReadOnlyDisk,  // `path` for reading
    kDirectory,     // `path` as an O_PATH directory (a 9p share)
    kUnixConnect,   // a connection to the unix socket at `path`
    kUnixListen,    // a unix socket listening at `path`
  };
  int target = -1;
  Source source = Source::kInherited;
  int fd = -1;                  // kInherited only
  std::filesystem::path path;   // every other source
  int fd_set = 0;               // the -add-fd set QEMU reaches it through; 0: by number
  std::string what;             // what it is, for errors ("guest kernel", "QMP")

  bool operator==(const QemuFd&) const = default;
};

struct QemuCommand {
  std::vector<std::string> argv;
  // In the order the backend opens them: a path that cannot be opened fails
  // the launch at the first such entry.
  std::vector<QemuFd> fds;
};

// The command that runs `config` with `binary`. Pure: it opens nothing.
// `as_root`: the caller (whose uid, or whose root-given credentials, QEMU
// runs with) is root, so QEMU may chown and 9p shares keep the guest's
// owners (security_model=passthrough rather than none).
QemuCommand buildQemuCommand(const std::string& binary, const MachineConfig& config, bool as_root);

// The guest kernel command line for `config` (console, reset-to-poweroff,
// the TSC hint under TCG).
std::string kernelCommandLine(const MachineConfig& config);

}  // namespace microvm
