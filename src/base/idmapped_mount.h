// Idmapped mounts: a directory seen with its files' owners translated, for
// volumes that present host files as owned by a chosen uid/gid in the guest
// (podman's `idmap` volume option does the same).
//
// The result is a detached mount (open_tree(OPEN_TREE_CLONE)): it lives only
// as long as a file descriptor refers to it, so a crash leaves no mount
// behind. Needs root and a filesystem that supports idmapped mounts (ext4,
// xfs, btrfs, tmpfs since Linux 6.3, ...).
//
//   auto tree = openIdMappedTree("/srv/data", swapIds(0, 1000), swapIds(0, 1000), false);
//   // files owned by 0 show as 1000 under /proc/self/fd/<tree>, and files
//   // created there by uid 1000 are owned by 0 on disk.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// One line of a user namespace's uid_map or gid_map: on-disk ids
// [on_disk, on_disk + count) show through the mount as [shown, shown + count).
struct IdMapping {
  uint32_t on_disk = 0;
  uint32_t shown = 0;
  uint32_t count = 1;
};

// Every id as itself, except that on-disk `on_disk` shows as `shown` and
// on-disk `shown` as `on_disk`: a total one-to-one map, so that every owner
// still shows and every id can still create files.
std::vector<IdMapping> swapIds(uint32_t on_disk, uint32_t shown);

// A detached copy of the mount at `dir` (without the mounts below it) whose
// owners are translated by `uids` and `gids`, read-only if asked.
Result<UniqueFd> openIdMappedTree(const std::filesystem::path& dir, const std::vector<IdMapping>& uids,
                                  const std::vector<IdMapping>& gids, bool readonly);

}  // namespace microvm
