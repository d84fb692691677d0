// A restored or forked VM's disk is a chain, not a copy: the disk saved
// with the state (a snapshot's disk.qcow2) becomes a frozen qcow2 layer,
// and the VM writes to a thin overlay of its own on top. So N children of a
// fork share one saved disk instead of N copies, and a restore costs the
// same whatever the source had written.
//
//   base (the image's, raw) <- layer 0 <- ... <- layer k-1 <- disk.qcow2
//
// Layers are hard links (a copy where a link cannot be made), named alike
// in every directory that holds them: the VM's `layers/` (VmPaths) and a
// saved state's (SnapshotPaths). Nothing writes a layer once it is one; a
// layer's file goes with the last directory that links it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "microvm/result.h"
#include "state/vm_record.h"

namespace microvm {

// The longest chain: every restore or fork child is one layer deeper than
// its source. QEMU walks the chain for each block the top does not hold.
inline constexpr size_t kMaxDiskLayers = 16;

// Fails with the reason when a VM restored from a state `source` saved
// would be more than kMaxDiskLayers deep.
Result<void> checkDiskLayerRoom(const VmSpec& source);

// Links `source`'s layers into `saved_dir`, beside the disk its runner has
// just saved there, so the saved state outlives the source VM.
Result<void> keepDiskLayers(const VmSpec& source, const std::filesystem::path& saved_dir);

// In `vm_dir`, which must exist: links the layers of `source` and the
// state's disk (saved_dir's disk.qcow2, as a new top layer) under the VM's
// `layers/`, and returns their paths, lowest first (VmSpec::disk_layers).
// The caller checks checkDiskLayerRoom first, and then makes the VM's own
// overlay.
Result<std::vector<std::string>> layDiskLayers(const std::filesystem::path& saved_dir, const VmSpec& source,
                                               const std::filesystem::path& vm_dir);

}  // namespace microvm
