// What a snapshot (or a suspended VM's saved state) must satisfy, checked
// in one place for `snapshot create`, `suspend`, restores and `resume`:
//   - checkCanSnapshot: refusals before anything is saved (what QEMU or a
//     restore cannot hold: user vsock ports, writable 9p volumes, ...);
//   - writeSeal / checkSeal: a small record written next to a saved memory
//     file naming the machine it needs (kernel, initramfs, machine type,
//     QEMU version) and the file's size and checksum, so that a mismatched,
//     truncated or corrupted snapshot is refused with the reason instead of
//     being handed to QEMU.
#pragma once

#include <filesystem>

#include "microvm/result.h"
#include "state/vm_record.h"

namespace microvm {

// Why `spec`'s VM cannot be saved, or success.
Result<void> checkCanSnapshot(const VmSpec& spec);

// Records what `memory_file` (saved from `spec`'s VM) needs, in `seal_file`.
Result<void> writeSeal(const std::filesystem::path& memory_file, const VmSpec& spec,
                       const std::filesystem::path& seal_file);
// Whether `memory_file` is whole and matches its seal and this host's
// kernel, initramfs and QEMU as `spec` names them; the reason if not.
Result<void> checkSeal(const std::filesystem::path& memory_file, const VmSpec& spec,
                       const std::filesystem::path& seal_file);

}  // namespace microvm
