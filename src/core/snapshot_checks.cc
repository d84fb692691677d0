// See snapshot_checks.h.
#include "core/snapshot_checks.h"

namespace microvm {

Result<void> checkCanSnapshot(const VmSpec& spec) {
  if (!spec.vsock_ports.empty()) {
    const auto& port = spec.vsock_ports.front();
    return Error(ErrorCode::kUnsupported, "VM " + spec.name + " has vsock port " + std::to_string(port.port) +
                                              " (--vsock), and QEMU cannot save a vhost-user-vsock device");
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
