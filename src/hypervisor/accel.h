// Choosing between KVM and TCG.
//
// /dev/kvm existing is not enough: a nested KVM may accept the VM and then
// die on the first unusual instruction ("KVM internal error / emulation
// failure"). So `auto` boots a throwaway guest whose init powers off at once
// and uses KVM only if that boot completes. The verdict is cached per host
// boot (boot_id), per QEMU binary and per kernel.
#pragma once

#include <filesystem>
#include <string>

#include "hypervisor/backend.h"

namespace microvm {

enum class AccelRequest { kAuto, kKvm, kTcg };

Result<AccelRequest> parseAccelRequest(const std::string& text);  // auto|kvm|tcg

struct AccelChoice {
  Acceleration accel = Acceleration::kTcg;
  std::string reason;  // one line: why this acceleration
};

struct AccelProbe {
  Backend* backend = nullptr;
  std::string qemu;                      // identifies the VMM in the cache key
  std::filesystem::path kernel;
  std::filesystem::path probe_initramfs;  // an init that powers off at once
  std::filesystem::path cache_file;
};

Result<AccelChoice> chooseAcceleration(AccelRequest request, const AccelProbe& probe);

// The host TSC frequency in kHz (from /proc/cpuinfo), 0 if unknown.
unsigned hostTscKhz();

}  // namespace microvm
