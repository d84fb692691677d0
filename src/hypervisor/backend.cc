#include "hypervisor/backend.h"

namespace microvm {

const char* toString(Acceleration accel) { return accel == Acceleration::kKvm ? "kvm" : "tcg"; }

}  // namespace microvm
