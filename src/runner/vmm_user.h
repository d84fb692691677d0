// The unprivileged user a VM's QEMU runs as when microvm runs as root.
//
// Each running VM gets a uid and gid of its own (the same number) from a
// range reserved for microvm, as Firecracker's jailer and Kata do, so that a
// compromised QEMU cannot signal, ptrace or read the memory and files of
// another VM's QEMU, and owns nothing on the host. An id is taken by flock on
// a lock file named after it in a host-wide directory on /run (a tmpfs, so
// nothing survives a reboot); the runner holds the lock until its QEMU has
// been reaped, and a runner that dies releases it with its fds.
//
//   auto user = VmmUser::allocate();       // Result<VmmUser>
//   credentials.uid = user->uid();
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// 2000000000 + [0, 65536) for QEMU and the next 65536 for runners: inside
// the range systemd leaves unused (1879048192-2147352575,
// docs/UIDS-GIDS.md), clear of regular users, of systemd's dynamic users and
// of the usual subordinate id ranges.
inline constexpr uint32_t kVmmIdBase = 2000000000;
inline constexpr uint32_t kVmmIdCount = 65536;
inline constexpr char kVmmIdLockDir[] = "/run/microvm-vmm-ids";

class VmmUser {
 public:
  // Takes the lowest id in the range whose lock is free.
  static Result<VmmUser> allocate(const std::filesystem::path& lock_dir = kVmmIdLockDir);

  uid_t uid() const { return id_; }
  gid_t gid() const { return id_; }
  // The same VM's runner, once it has given up root: the same slot in the
  // next range, so that QEMU (which parses guest input too) cannot signal,
  // ptrace or write as the runner, nor the runner as QEMU.
  uid_t runnerUid() const { return id_ + kVmmIdCount; }
  gid_t runnerGid() const { return id_ + kVmmIdCount; }

 private:
  VmmUser(uint32_t id, UniqueFd lock) : id_(id), lock_(std::move(lock)) {}
  uint32_t id_;
  UniqueFd lock_;  // flocked while the id is in use
};

// The capabilities QEMU keeps as that user, for its 9p shares (security
// model passthrough, which keeps the guest's owners on the host): with a
// writable share CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER and CAP_FSETID (to
// create files for any guest user, give them the guest's owner and mode, and
// reach every file in the share); with read-only shares only
// CAP_DAC_READ_SEARCH; with none, nothing. Never CAP_MKNOD: a guest cannot
// create device nodes in a host directory.
uint64_t vmmCapabilities(bool any_share, bool any_writable_share);

}  // namespace microvm
