#include "hypervisor/backend.h"

namespace microvm {

namespace {

Error unsupported(const char* operation) {
  return Error(ErrorCode::kUnsupported, std::string(operation) + " is not supported by this VMM backend");
}

}  // namespace

Result<void> Vmm::pause() { return unsupported("pause"); }
Result<void> Vmm::resume() { return unsupported("resume"); }
Result<void> Vmm::saveState(int /*fd*/) { return unsupported("snapshot"); }
Result<void> Vmm::finishRestore(const std::function<Result<void>()>&) { return unsupported("snapshot restore"); }
Result<void> Vmm::connectControl() { return unsupported("a control channel"); }

const char* toString(Acceleration accel) { return accel == Acceleration::kKvm ? "kvm" : "tcg"; }

}  // namespace microvm
