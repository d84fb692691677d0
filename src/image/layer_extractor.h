// Applies one OCI image layer (a tar stream, plain, gzip or zstd; libarchive
// tells which from the bytes) onto a root filesystem directory, with the
// OCI whiteout rules. Layers come from registries, so every entry is hostile
// until proven otherwise:
//
//   - Names are normalized lexically. A leading '/' is dropped (absolute
//     names are made relative, as GNU tar and Docker do); a ".." component
//     is refused, whether or not it would climb out of the root.
//   - Every parent directory is opened with openat2(RESOLVE_BENEATH |
//     RESOLVE_NO_MAGICLINKS) from a descriptor of the root, and the entry is
//     created with *at() calls that never follow a final symlink. A parent
//     path may pass through a relative symlink that stays inside the root
//     (lib -> usr/lib); one that leaves it, or any absolute symlink, is
//     refused with an error. Host symlinks are never resolved with realpath.
//   - A hard link's target must be an existing non-directory inside the root,
//     reached the same way; a link to a symlink links the symlink itself and
//     never what it points at.
//   - An entry that would replace the root directory itself is refused; a
//     directory entry for the root ("./") only sets the root's metadata.
//   - ExtractLimits caps the total file bytes, the entry count and the name
//     length; going over one is an error.
//
// Whiteouts: ".wh.NAME" deletes NAME as the lower layers left it;
// ".wh..wh..opq" makes its directory opaque, deleting what the lower layers
// put in it. Entries this layer itself created are kept, whatever the order of
// the tar. Other ".wh..wh.*" names (AUFS bookkeeping) are skipped. Whiteout
// files are never created.
//
// Privileges. As root, ownership (lchown), device nodes and the xattrs
// security.capability and trusted.* are applied. As any other user:
//   - files belong to the caller, and directories keep u+rwx in their mode so
//     that later layers can still write into and delete from them;
//   - character and block devices are skipped and counted in
//     ExtractStats::skipped (the guest mounts devtmpfs over /dev anyway);
//   - only user.* xattrs are kept.
// xattrs are best effort in both cases (tmpfs refuses user.* xattrs, and
// symlinks, fifos and devices get none). Sockets are skipped and counted.
// Set-uid bits and device nodes are reproduced as the image has them, so the
// rootfs must live in a directory other users cannot enter.
//
// Errors name the entry and the reason, and the caller adds the layer:
//   layer sha256:ab12..: entry "../../etc/passwd": path has a ".." component
// On error the rootfs is left half-applied (never anything outside it): the
// caller extracts into a temporary directory and renames it on success.
//
//   for (const auto& layer : layers) {
//     auto stats = applyLayer(blobPath(layer.digest), temp_rootfs);
//     if (!stats) return stats.error().withContext("layer " + layer.digest);
//   }
//   rename(temp_rootfs, final_rootfs);
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "microvm/result.h"

namespace microvm {

struct ExtractLimits {
  uint64_t max_bytes = 8ull << 30;   // total size of regular files, sparse holes included
  uint64_t max_entries = 1'000'000;  // tar headers, whiteouts included
  uint64_t max_path_length = 4096;   // bytes of an entry's name or link target
  // What the layers below already used, when the two caps above are the
  // whole image's: this layer gets what they left.
  uint64_t bytes_used = 0;
  uint64_t entries_used = 0;
};

struct ExtractStats {
  uint64_t entries = 0;    // tar headers processed
  uint64_t bytes = 0;      // size of the regular files written
  uint64_t whiteouts = 0;  // whiteout and opaque markers applied
  uint64_t skipped = 0;    // device nodes (when not root), sockets, AUFS metadata
};

// Applies the layer stored in `layer_file` onto the existing directory `rootfs`.
Result<ExtractStats> applyLayer(const std::filesystem::path& layer_file, const std::filesystem::path& rootfs,
                                const ExtractLimits& limits = {});

// The same, reading the layer from `fd` (a file or a pipe; not closed).
Result<ExtractStats> applyLayerFromFd(int fd, const std::filesystem::path& rootfs, const ExtractLimits& limits = {});

// The same, for a layer held in memory (tests and the fuzzer).
Result<ExtractStats> applyLayerFromMemory(std::string_view layer, const std::filesystem::path& rootfs,
                                          const ExtractLimits& limits = {});

}  // namespace microvm
