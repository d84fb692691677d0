// See snapshot_checks.h.
#include "core/snapshot_checks.h"

namespace microvm {

Result<void> checkCanSnapshot(const VmSpec& spec) {
  if (spec.vsock) {
    return Error(ErrorCode::kUnsupported,
                 "VM " + spec.name +
                     " has a vsock device, and QEMU cannot save one (its vhost-user-vsock is not migratable); "
                     "run the VM with --no-vsock to take snapshots of it");
  }
  return success();
}

Result<void> writeSeal(const std::filesystem::path&, const VmSpec&, const std::filesystem::path&) {
  return success();
}

Result<void> checkSeal(const std::filesystem::path&, const VmSpec&, const std::filesystem::path&) {
  return success();
}

}  // namespace microvm
