// The client side of an attach stream (runner/control.h AttachRequest): relays
// the caller's stdin to the workload and the workload's output back, until the
// runner reports the exit code.
#pragma once

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// in_fd -1: nothing to send (the stream carries output only). Returns the
// workload's exit code.
Result<int> relayAttached(UniqueFd stream, int in_fd, int out_fd, int err_fd);

}  // namespace microvm
