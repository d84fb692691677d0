// What a snapshot (or a suspended VM's saved state) must satisfy, checked
// in one place for `snapshot create`, `suspend`, restores and `resume`:
//   - checkCanSnapshot: refusals before anything is saved (what QEMU or a
//     restore cannot hold: user vsock ports, 9p volumes, ...);
//   - writeSeal / checkSeal: a small record written next to a saved memory
//     file naming the machine it needs (kernel, initramfs, machine type,
//     QEMU version) and the file's size and checksum, so that a mismatched,
//     truncated or corrupted snapshot is refused with the reason instead of
//     being handed to QEMU.
//
// The seal (seal.json) is untrusted input: parseSeal refuses anything
// malformed with a reason, never crashes. Its checksum is XXH64 (base/xxh64.h):
// it guards against truncation and corruption, not against someone who can
// rewrite both files. A full check reads the whole memory file (QEMU skips
// zero pages: 26 MB for an idle 256 MiB guest), hashes the kernel and
// initramfs and runs `qemu --version` (about 0.1 s in all here), so a restore
// that finds every file exactly as the last full check saw it (same inode,
// size, mtime and ctime, recorded with the seal's digest in
// seal.checked.json) skips the hashing; any write to a file, or to the seal,
// changes what it finds and that file is checked in full again. A file
// changed just before a check (as QEMU's memory file is when the seal is
// written) is not recorded, since file times are coarse: so the first
// restore of a new snapshot hashes its memory file, and later ones do not.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

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

// What a seal records.
struct Seal {
  uint64_t memory_size = 0;  // memory.bin: the device state
  uint64_t ram_size = 0;     // memory.ram beside it (sparse guest RAM); 0: none
  std::string memory_xxh64;  // 16 hex digits, over both (snapshot_checks.cc)
  std::string kernel_sha256;
  std::string initramfs_sha256;
  std::string machine;       // the QEMU machine and devices the state was saved from
  std::string qemu_version;  // the first line of `qemu --version`

  bool operator==(const Seal&) const = default;
};
inline constexpr int kSealVersion = 1;

std::string encodeSeal(const Seal& seal);
// A kProtocol error naming what is wrong for anything but a whole seal.
Result<Seal> parseSeal(std::string_view text);

// The part of QEMU's command line that saved state depends on (machine,
// accelerator, CPU, memory, devices), for `spec`: what a restore must
// reproduce exactly.
std::string machineSignature(const VmSpec& spec);

}  // namespace microvm
