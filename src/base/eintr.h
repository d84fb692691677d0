// retryOnEintr: repeats a system call that was interrupted by a signal.
//
//   UniqueFd fd(retryOnEintr([&] { return ::openat(dir, name, O_RDONLY | O_CLOEXEC); }));
#pragma once

#include <cerrno>

namespace microvm {

// Calls `call` until it does not fail with EINTR; returns its last result.
template <typename Call>
auto retryOnEintr(Call call) {
  decltype(call()) result;
  do {
    result = call();
  } while (result == -1 && errno == EINTR);
  return result;
}

}  // namespace microvm
