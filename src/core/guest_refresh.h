// What must be fresh in a guest that resumes saved state (a restored
// snapshot, a resumed VM): its wall clock, set from the host's, and its
// random number generator, reseeded with host entropy, through the agent.
// Runtime::restore and Runtime::resume call it once the VM runs, before they
// return, so that the first `exec` already sees the right time.
#pragma once

#include "microvm/result.h"
#include "state/vm_record.h"

namespace microvm {

// Sets the guest's clock and reseeds its RNG; a VM without the agent
// (--no-vsock) is left alone.
Result<void> refreshGuest(const VmSpec& spec);

}  // namespace microvm
