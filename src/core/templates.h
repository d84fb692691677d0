// Boot templates: `run` restores a guest saved where init waits for its
// spec, instead of booting the kernel again.
//
// The first VM of a machine boots cold, and its runner saves the guest when
// init says hello, before the spec arrives: nothing of that VM is in the
// guest yet, and its disk has not been mounted. Later VMs with the same key
// restore that state, get the host's clock and entropy, then their own spec,
// and init goes on exactly as after a cold boot (mount the disk, network,
// workload). The key covers everything the saved guest depends on: the root
// disk's base, the kernel, the initramfs, QEMU, the machine and its devices
// (cpus, memory, network, agent) and the kernel command line.
//
//   <templates dir>/<key>/   memory.bin memory.ram seal.json template.json
//
// The templates dir is <data dir>/templates unless RuntimeOptions::
// template_dir shares one between data dirs (microvm-runtime's containers);
// a staging directory records the directory of the VM saving into it.
//
// What cannot be templated boots cold, and says why in `inspect`: volumes
// (mounted at boot), user vsock ports (the vsock device cannot be saved),
// more files injected at boot than the spec carries (a per-VM initramfs) and
// `--no-template`.
//
//   MICROVM_TRY(chooseBootTemplate(templates_dir, spec, options.boot_template, vm_dir));
//   // spec.template_dir: restore it; spec.template_capture: save one there
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "microvm/result.h"
#include "microvm/runtime.h"
#include "state/vm_record.h"

namespace microvm {

// A templates directory keeps at most this many; putting a new one in place
// removes the least recently used (each restore marks its template used).
inline constexpr size_t kMaxTemplates = 16;

// The template key of `spec`'s machine: 32 hex digits.
std::string templateKey(const VmSpec& spec);

// Why `spec` cannot use or make a template, if it cannot.
std::optional<std::string> templateRefusal(const VmSpec& spec, bool enabled, const std::filesystem::path& vm_dir);

// Sets spec.template_dir (a sealed template to restore), or
// spec.template_capture (a staging directory, created here, that this VM's
// runner saves a template into), and spec.template_note. A staged template
// another runner finished is sealed and put in place here. A template whose
// seal no longer holds is removed and made again.
Result<void> chooseBootTemplate(const std::filesystem::path& templates_dir, VmSpec& spec, bool enabled,
                                const std::filesystem::path& vm_dir);

// The template in place for `spec`'s machine, sealing and putting in place
// one that a runner has finished saving; nullopt if there is none yet.
Result<std::optional<std::filesystem::path>> finishedTemplate(const std::filesystem::path& templates_dir,
                                                              const VmSpec& spec);
// Whether the runner has saved the template it was making in `staging`.
bool templateSaved(const std::filesystem::path& staging);
Result<TemplateInfo> templateInfo(const std::filesystem::path& entry);

Result<std::vector<TemplateInfo>> listTemplates(const std::filesystem::path& templates_dir);
// `key`: a template's key or a unique prefix of one.
Result<void> removeTemplate(const std::filesystem::path& templates_dir, const std::string& key);
// Removes every template and staging directory; returns the keys removed.
Result<std::vector<std::string>> pruneTemplates(const std::filesystem::path& templates_dir);

}  // namespace microvm
