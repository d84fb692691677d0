// Rootfs hooks' output on its way to the VM's own root disk: the entries a
// RootfsEditor collected become a cpio archive appended to the VM's copy of
// the initramfs (the kernel unpacks concatenated archives), under the
// directory guest init reads before the workload starts (guest/boot.h,
// kInjectDir and its manifest format). The cached base disk is never written.
//
//   RootfsEditor editor;
//   for (auto& hook : options.rootfs_hooks) MICROVM_TRY(hook(editor));
//   MICROVM_TRY(writeInjectionInitramfs(initramfs, editor.entries(), vm_dir / "initramfs.cpio"));
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "microvm/runtime.h"

namespace microvm {

// The manifest init parses: one line per entry, data files numbered in order.
std::string injectionManifest(const std::vector<RootfsEditor::Entry>& entries);

// Whether the entries are few and small enough to travel in the workload
// spec (agent::kMaxSpecInjected*) rather than in an initramfs of the VM's own.
bool fitsInSpec(const std::vector<RootfsEditor::Entry>& entries);

// `base` followed by a newc cpio archive of the entries; written atomically.
Result<void> writeInjectionInitramfs(const std::filesystem::path& base, const std::vector<RootfsEditor::Entry>& entries,
                                     const std::filesystem::path& destination);

}  // namespace microvm
