// Root disks: a host directory becomes a cached ext4 base image, and each VM
// gets its own qcow2 copy-on-write overlay on top, so the base is never
// written. The cache key is a hash of the tree's content and metadata, so a
// changed file gives a new base and an unchanged tree is built once.
//
//   auto base = ensureBaseDisk(ImagePaths(images_dir).rootfsDir(), "/srv/rootfs");
//   MICROVM_TRY(createOverlay(*base, vm_dir / "disk.qcow2"));
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "microvm/result.h"

namespace microvm {

struct TreeDigest {
  std::string hex;          // sha256 over paths, metadata and contents
  unsigned long long bytes = 0;  // total size of regular files
  unsigned long long entries = 0;
};

// Walks `root` in sorted order without following symlinks.
Result<TreeDigest> digestTree(const std::filesystem::path& root);

// Only the sizes (bytes, entries) of the tree, for sizing a disk: no file is
// read, so `hex` stays empty.
Result<TreeDigest> measureTree(const std::filesystem::path& root);

// Returns the cached base.ext4 for `rootfs`, building it if needed. Safe to
// call concurrently: builds of one key are serialized by a lock and land by
// rename, so a reader never sees half an image.
Result<std::filesystem::path> ensureBaseDisk(const std::filesystem::path& cache_dir,
                                             const std::filesystem::path& rootfs);

// Builds `destination` (atomically, mode 0444) as an ext4 image holding
// `tree`, sized for `digest`'s content plus headroom for the workload.
Result<void> buildExt4Image(const std::filesystem::path& tree, const TreeDigest& digest,
                            const std::filesystem::path& destination);

// Creates `overlay` as a qcow2 image backed by `base` (raw, read-only), the
// base's size, written directly (no qemu-img process).
Result<void> createOverlay(const std::filesystem::path& base, const std::filesystem::path& overlay);
// Its bytes (exposed for the tests, which check them with qemu-img).
std::string qcow2OverlayHeader(const std::string& base, uint64_t size);

}  // namespace microvm
