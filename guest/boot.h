// Boot: what PID 1 does to the VM before anything runs. It mounts /dev, /proc
// and /sys in the initramfs, mounts the root disk, writes the host's rootfs
// hook files into it (injection), switches root to it, mounts what programs
// in a container expect (devpts, tmpfs, cgroup2), then the volumes and the
// sysctls the spec asks for. Any failure here stops the VM (kError, exit 125).
//
//   if (auto early = setUpEarlyUserspace(); !early.ok()) fail(early.error());
//   bool premounted = premountRoot();
//   ...receive the spec...
//   if (auto entered = enterRoot(spec, premounted); !entered.ok()) fail(entered.error());
//   if (auto volumes = mountVolumes(spec); !volumes.ok()) fail(volumes.error());
//   if (auto sysctls = writeSysctls(spec); !sysctls.ok()) fail(sysctls.error());
//
// The decisions (manifest, volume and sysctl parsing) depend on no OS state
// and are unit-tested on the host (guest/boot_test.cc).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "microvm/result.h"

namespace microvm::guest {

// /dev, the console (fds 0-2), /proc and /sys, in the initramfs.
Result<void> setUpEarlyUserspace();

// Before the spec: mounts the default root device (WorkloadSpec's
// root_device and root_fstype) read-only, if it is there and mounts; else
// enterRoot() mounts whatever the spec names. Nothing of the VM is in the
// guest yet, so a boot template saved after this holds only the base
// disk's blocks, the same under every VM's overlay, and a VM restored
// from it saves the mount's time.
// Returns whether it did.
bool premountRoot();

// Mounts the root disk (read-write: a premounted one is remounted), applies
// the injected files, switches root to it and mounts the runtime
// filesystems.
Result<void> enterRoot(const agent::WorkloadSpec& spec, bool premounted);

// Volumes and sysctls, once the root is in place. The host sent each one to
// be enforced, so none is skipped: the first failure is returned.
Result<void> mountVolumes(const agent::WorkloadSpec& spec);
Result<void> writeSysctls(const agent::WorkloadSpec& spec);
// One sysctl, "kernel.kptr_restrict=2" (network setup tunes some too).
Result<void> writeSysctl(const std::string& assignment);

// The hostname. Not needed to run the workload, so a failure is only logged.
void configureSystem(const agent::WorkloadSpec& spec);

// ---------------------------------------------------------------------------
// Injection.

// Files the host's rootfs hooks put on the VM's root disk before anything
// runs. The runner appends them to the initramfs under kInjectDir: a
// manifest of lines "<f|d> <octal mode> <uid> <gid> <data index> <path>"
// (the path last, absolute, without newlines) and the data of each file
// as kInjectDir/<index>. Small sets travel in the spec instead
// (WorkloadSpec::injected), so that a VM restored from a boot template gets
// them too. Init writes both into the mounted root disk, the initramfs's
// first, creating missing parent directories (0755, root), and refuses any
// path with a symlink component.
inline constexpr char kInjectDir[] = "/.microvm-inject";
struct InjectEntry {
  bool directory = false;
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  unsigned index = 0;
  std::string path;  // absolute, normalized: no "", "." or ".." components
};
Result<std::vector<InjectEntry>> parseInjectManifest(std::string_view text);
// The spec's injected files as entries: an error for a path that is not
// absolute and normalized, or a mode beyond 07777.
Result<std::vector<InjectEntry>> specInjectEntries(const std::vector<agent::InjectedFile>& files);

// ---------------------------------------------------------------------------
// Volumes.

// The data of every 9p volume mount, before the host's extra options. The
// guest kernel (6.1) caps msize at what its virtio transport carries, 512000,
// and /proc/mounts shows that; cache=none keeps the host directory the one
// source of truth.
inline constexpr char k9pMountOptions[] = "trans=virtio,version=9p2000.L,msize=524288,cache=none";

// The mount(2) call for one volume.
struct MountCall {
  std::string source;
  std::string target;
  std::string fstype;
  unsigned long flags = 0;
  std::string data;
  std::string description;  // "volume vol0 on /data", for error messages
};

// Checks a volume and turns it into its mount(2) call:
//   9p:    mount(TAG, TARGET, "9p", ro ? MS_RDONLY : 0, k9pMountOptions[,OPTIONS])
//   tmpfs: mount("tmpfs", TARGET, "tmpfs", MS_NOSUID|MS_NODEV[|MS_RDONLY], OPTIONS)
// The target must be an absolute path other than "/" without ".." components;
// a 9p volume needs a tag. Errors read "mount volume vol0 on data: WHY".
Result<MountCall> planVolumeMount(const agent::MountSpec& volume);

// ---------------------------------------------------------------------------
// Sysctls.

struct SysctlWrite {
  std::string path;   // "/proc/sys/kernel/kptr_restrict"
  std::string value;  // "2"
};

// Parses "kernel.kptr_restrict=2". The key's components are separated by '.'
// only; a key that is empty, has an empty component, a '/' or a ".." could
// name another file than the sysctl and is refused.
Result<SysctlWrite> parseSysctl(std::string_view assignment);

}  // namespace microvm::guest
